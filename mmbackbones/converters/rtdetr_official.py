"""Official RT-DETR backbone checkpoints -> mmbackbones ``PResNet`` / ``HGNetV2``.

The sources are lyuwenyu/RT-DETR's PaddleClas-converted ImageNet weights
(``ResNet{18,34}_vd``, ``ResNet50_vd_ssld_v2``, ``ResNet101_vd_ssld``,
``PPHGNetV2_{L,X,H}_ssld`` ``*_pretrained_from_paddle.pth``) and RT-DETR detector checkpoints,
whose backbone sits under ``backbone.`` (the decoder and encoder keys are dropped). RT-DETR's
frozen BatchNorm has no ``num_batches_tracked``; the converter adds it.

The factories at the end build the backbone that converted weights (official or timm) fill.
"""
from typing import Mapping, Tuple

import torch
from torch import nn

from .core import ConversionResult, StateDict, add_num_batches_tracked, apply_rules

_BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_PRESNET_CONV = {'branch2a': 'conv1', 'branch2b': 'conv2', 'branch2c': 'conv3'}

#: PResNet: ``conv1.conv1_{1,2,3}`` is our stem, ``res_layers.i.blocks.j`` our ``stages.i.j``;
#: a downsampling shortcut nests its ConvNormLayer under ``short.conv`` (after the pool).
PRESNET_RULES = [
    (r'conv1\.conv1_([123])\.conv\.weight', lambda m: f'stem.{int(m[1]) - 1}.conv.weight'),
    (rf'conv1\.conv1_([123])\.norm\.{_BN}', lambda m: f'stem.{int(m[1]) - 1}.bn.{m[2]}'),
    (r'res_layers\.(\d+)\.blocks\.(\d+)\.(branch2[abc])\.conv\.weight',
     lambda m: f'stages.{m[1]}.{m[2]}.{_PRESNET_CONV[m[3]]}.conv.weight'),
    (rf'res_layers\.(\d+)\.blocks\.(\d+)\.(branch2[abc])\.norm\.{_BN}',
     lambda m: f'stages.{m[1]}.{m[2]}.{_PRESNET_CONV[m[3]]}.bn.{m[4]}'),
    (r'res_layers\.(\d+)\.blocks\.(\d+)\.short\.(?:conv\.)?conv\.weight',
     r'stages.\1.\2.shortcut.conv.weight'),
    (rf'res_layers\.(\d+)\.blocks\.(\d+)\.short\.(?:conv\.)?norm\.{_BN}',
     r'stages.\1.\2.shortcut.bn.\3'),
]

#: HGNetv2: the stages have our names; the stem's ``stem1``..``stem4`` are our ``stem.0``..``3``,
#: with ``stem2a`` / ``stem2b`` (padding inside a Sequential, hence ``conv.1``) in ``stem.1``.
_HG_UNIT = r'(conv\.weight|bn\.\w+|lab\.(?:scale|bias))'
_HG_STEM = {'1': '0', '3': '2', '4': '3'}  # stem2a / stem2b are stem.1.conv_a / conv_b
HGNETV2_RULES = [
    (r'stem\.stem2([ab])\.conv\.1\.weight', r'stem.1.conv_\1.conv.weight'),
    (r'stem\.stem2([ab])\.(bn\.\w+|lab\.(?:scale|bias))', r'stem.1.conv_\1.\2'),
    (rf'stem\.stem([134])\.{_HG_UNIT}', lambda m: f'stem.{_HG_STEM[m[1]]}.{m[2]}'),
    (rf'stages\.(\d+)\.downsample\.{_HG_UNIT}', r'stages.\1.downsample.\2'),
    (rf'(stages\.\d+\.blocks\.\d+\.layers\.\d+\.(?:conv[12]\.)?){_HG_UNIT}', r'\1\2'),
    (rf'(stages\.\d+\.blocks\.\d+\.aggregation_(?:squeeze|excitation)_conv)\.{_HG_UNIT}',
     r'\1.\2'),
]

#: where RT-DETR detector checkpoints keep the backbone
BACKBONE_PREFIXES = ('backbone.', 'module.backbone.')


def _backbone_only(state_dict: Mapping[str, torch.Tensor]) -> Tuple[StateDict, list]:
    """Select the backbone of a detector checkpoint; a backbone checkpoint passes unchanged."""
    for prefix in BACKBONE_PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            dropped = [k for k in state_dict if not k.startswith(prefix)]
            return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}, \
                dropped
    return dict(state_dict), []


def _convert(state_dict: Mapping[str, torch.Tensor], rules) -> ConversionResult:
    state, dropped = _backbone_only(state_dict)
    result = apply_rules(state, rules)
    result.dropped += dropped
    add_num_batches_tracked(result.state_dict)
    return result


def convert_rtdetr_presnet(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert an official RT-DETR PResNet state dict (backbone or whole detector)."""
    return _convert(state_dict, PRESNET_RULES)


def convert_rtdetr_hgnetv2(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert an official RT-DETR HGNetv2 state dict (backbone or whole detector)."""
    return _convert(state_dict, HGNETV2_RULES)


def presnet_factory(state_dict: StateDict) -> Tuple[nn.Module, dict]:
    """A PResNet for converted weights: depth (or custom arch) read off the weights."""
    from mmbackbones.models import PResNet
    arch = PResNet.arch_from_state_dict(state_dict)
    return PResNet(arch=arch), dict(type='PResNet', arch=arch)


def hgnetv2_factory(state_dict: StateDict) -> Tuple[nn.Module, dict]:
    """An HGNetV2 for converted weights: arch (and ``use_lab``) read off the weights."""
    from mmbackbones.models import HGNetV2
    arch = HGNetV2.arch_from_state_dict(state_dict)
    return HGNetV2(arch=arch), dict(type='HGNetV2', arch=arch)
