# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""timm checkpoints -> mmbackbones backbones (one module for the one source).

* VoVNet: ``ese_vovnet*b`` (V2, eSE on the last block of each stage: build ours with
  ``ese_layout='last'``) and ``vovnet39a`` / ``vovnet57a`` (V1: ``identity=False``, no eSE).
* PResNet: ``resnet18d`` / ``34d`` / ``50d`` / ``101d`` (deep stem 32-32-64, ``avg_down``).
  timm's basic-block nets have no projection in the first block of stage 1 (64 -> 64), which
  PResNet keeps for RT-DETR checkpoint compatibility. The converter fills that projection with
  an exact identity (1x1 conv = eye, BN weight 1, bias 0, mean 0, var 1 - eps), so the
  converted PResNet computes what timm's net does, and fine-tuning may then train it.
* HGNetV2: ``hgnetv2_b0`` ... ``b6`` (b4/b5/b6 are RT-DETR's L/X/H).

Each accepts a full model's state dict (the classifier is dropped) or a ``features_only`` one
(which flattens ``stem.N`` / ``stages.N`` to ``stem_N`` / ``stages_N``; resnet keys are
unchanged).
"""
import re
from typing import Mapping

import torch

from .core import ConversionError, ConversionResult, add_num_batches_tracked, apply_rules

# ---------------------------------------------------------------- VoVNet
_VOV_UNIT = r'(stem\.\d|stages\.\d+\.blocks\.\d+\.(?:conv_mid\.\d+|conv_concat|conv_reduction))'
_VOV_RENAME = [('.conv_mid.', '.layers.'), ('.conv_concat', '.concat'),
               ('.conv_reduction', '.reduction')]


def _vov_unit(unit: str) -> str:
    for old, new in _VOV_RENAME:
        unit = unit.replace(old, new)
    return unit


def convert_timm_vovnet(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert a timm VovNet state dict (``ese_vovnet*``, ``vovnet*a``), from the full model or a
    ``features_only`` one (which flattens ``stem.N`` / ``stages.N`` to ``stem_N`` / ``stages_N``)."""
    state_dict = {re.sub(r'^(stem|stages)_(\d+)\.', r'\1.\2.', k): v for k, v in state_dict.items()}
    if any(re.search(r'\.attn\.conv\.', k) for k in state_dict):
        raise ConversionError('timm VovNet: this checkpoint uses ECA attention (eca_vovnet*), '
                              'which mmbackbones VoVNet does not implement; use an ese_vovnet* '
                              'or vovnet*a checkpoint.')
    # A unit is depthwise-separable when it has conv_dw; then its 'bn' follows the pointwise conv.
    separable = {m[1] for k in state_dict for m in [re.fullmatch(_VOV_UNIT + r'\.conv_dw\.\w+', k)]
                 if m}

    def unit_rule(m) -> str:
        unit, part, name = m[1], m[2], m[3]
        if unit in separable:
            part = {'conv_dw': 'depthwise_conv.conv', 'conv_pw': 'pointwise_conv.conv',
                    'bn': 'pointwise_conv.bn'}[part]
        elif part in ('conv_dw', 'conv_pw'):
            raise ConversionError(f'timm VovNet: {m[0]} has no matching conv_dw.')
        return f'{_vov_unit(unit)}.{part}.{name}'

    rules = [
        (_VOV_UNIT + r'\.(conv|bn|conv_dw|conv_pw)\.(\w+)', unit_rule),
        (r'stages\.(\d+)\.blocks\.(\d+)\.attn\.fc\.(weight|bias)', r'stages.\1.blocks.\2.ese.fc.\3'),
    ]
    result = apply_rules(state_dict, rules, drop=[r'head\..*'])
    add_num_batches_tracked(result.state_dict)
    return result


# ---------------------------------------------------------------- ResNet-D and HGNetV2
_BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_STEM = {'0': '0.conv', '1': '0.bn', '3': '1.conv', '4': '1.bn', '6': '2.conv'}

RESNETD_RULES = [
    (r'conv1\.([01346])\.(\w+)', lambda m: f'stem.{_STEM[m[1]]}.{m[2]}'),
    (rf'bn1\.{_BN}', r'stem.2.bn.\1'),
    (r'layer(\d)\.(\d+)\.conv([123])\.weight',
     lambda m: f'stages.{int(m[1]) - 1}.{m[2]}.conv{m[3]}.conv.weight'),
    (rf'layer(\d)\.(\d+)\.bn([123])\.{_BN}',
     lambda m: f'stages.{int(m[1]) - 1}.{m[2]}.conv{m[3]}.bn.{m[4]}'),
    (r'layer(\d)\.(\d+)\.downsample\.1\.weight',
     lambda m: f'stages.{int(m[1]) - 1}.{m[2]}.shortcut.conv.weight'),
    (rf'layer(\d)\.(\d+)\.downsample\.2\.{_BN}',
     lambda m: f'stages.{int(m[1]) - 1}.{m[2]}.shortcut.bn.{m[3]}'),
]

_HG_UNIT = r'(conv\.weight|bn\.\w+|lab\.(?:scale|bias))'
_HG_STEM = {'1': '0', '3': '2', '4': '3'}  # stem2a / stem2b are stem.1.conv_a / conv_b
HGNETV2_RULES = [
    (rf'stem\.stem2([ab])\.{_HG_UNIT}', r'stem.1.conv_\1.\2'),
    (rf'stem\.stem([134])\.{_HG_UNIT}', lambda m: f'stem.{_HG_STEM[m[1]]}.{m[2]}'),
    (rf'stages\.(\d+)\.downsample\.{_HG_UNIT}', r'stages.\1.downsample.\2'),
    (rf'(stages\.\d+\.blocks\.\d+\.layers\.\d+\.(?:conv[12]\.)?){_HG_UNIT}', r'\1\2'),
    (rf'(stages\.\d+\.blocks\.\d+)\.aggregation\.([01])\.{_HG_UNIT}',
     lambda m: f'{m[1]}.aggregation_{("squeeze", "excitation")[int(m[2])]}_conv.{m[3]}'),
]


def identity_projection(channels: int, eps: float = 1e-5) -> dict:
    """Weights of a 1x1 conv + BN shortcut that returns its input (to float rounding)."""
    return {
        'conv.weight': torch.eye(channels).reshape(channels, channels, 1, 1),
        'bn.weight': torch.ones(channels), 'bn.bias': torch.zeros(channels),
        'bn.running_mean': torch.zeros(channels),
        'bn.running_var': torch.full((channels, ), 1.0 - eps),
        'bn.num_batches_tracked': torch.tensor(0, dtype=torch.long),
    }


def convert_timm_resnetd(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert a timm ``resnet{18,34,50,101}d`` state dict into a PResNet one."""
    result = apply_rules(state_dict, RESNETD_RULES, drop=[r'fc\..*'])
    state = result.state_dict
    basic = 'stages.0.0.conv1.conv.weight' in state and 'stages.0.0.conv3.conv.weight' not in state
    if basic and 'stages.0.0.shortcut.conv.weight' not in state:
        channels = int(state['stages.0.0.conv2.conv.weight'].shape[0])
        for key, value in identity_projection(channels).items():
            state[f'stages.0.0.shortcut.{key}'] = value
    add_num_batches_tracked(state)
    return result


def convert_timm_hgnetv2(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert a timm ``hgnetv2_b*`` state dict (full model or ``features_only``)."""
    state_dict = {re.sub(r'^stages_(\d+)\.', r'stages.\1.', k): v for k, v in state_dict.items()}
    result = apply_rules(state_dict, HGNETV2_RULES, drop=[r'head\..*'])
    add_num_batches_tracked(result.state_dict)
    return result
