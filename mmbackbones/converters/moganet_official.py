"""Official MogaNet (Westlake-AI/MogaNet) checkpoints -> mmbackbones ``MogaNet``.

Official stage ``i`` (1-based) is ``patch_embed{i}``, ``blocks{i}`` and ``norm{i}``; ours is the
stem (``patch_embed1``) and ``stages.{i-1}`` (downsample, blocks, norm). Inside a block only
the multi-order convs (``DW_conv*`` / ``PW_conv``, lower-cased) and the FFN (``mlp`` ->
``ffn``) are renamed. Only the official parameter names are taken: anything else is reported.
ImageNet checkpoints keep the weights under ``state_dict`` (release files) or ``model`` (the
training script); the classifier ``head`` is dropped. A detector checkpoint trained with the
official mmdet configs keeps them under ``backbone.``; everything else in it is dropped.
"""
import re
from typing import Mapping, Tuple

import torch
from torch import nn

from .core import ConversionResult, StateDict, apply_rules, strip_prefixes

#: official stem Sequential index -> our ConvModule part
_STEM = {'0': '0.conv', '1': '0.bn', '3': '1.conv', '4': '1.bn'}
_BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_BLOCK = r'blocks(\d+)\.(\d+)\.'


def _stage(m: 're.Match') -> str:
    return f'stages.{int(m[1]) - 1}'


def _block(m: 're.Match') -> str:
    return f'{_stage(m)}.blocks.{m[2]}'


RULES = [
    (rf'patch_embed1\.projection\.([0134])\.{_BN}', lambda m: f'stem.{_STEM[m[1]]}.{m[2]}'),
    (r'patch_embed(\d+)\.projection\.(weight|bias)',
     lambda m: f'{_stage(m)}.downsample.conv.{m[2]}'),
    (rf'patch_embed(\d+)\.norm\.{_BN}', lambda m: f'{_stage(m)}.downsample.bn.{m[2]}'),
    (rf'{_BLOCK}(layer_scale_[12]|norm[12]\.{_BN}|attn\.(proj_1|gate|proj_2)\.(weight|bias)'
     r'|attn\.sigma\.scale)', lambda m: f'{_block(m)}.{m[3]}'),
    (rf'{_BLOCK}attn\.value\.(DW_conv[012]|PW_conv)\.(weight|bias)',
     lambda m: f'{_block(m)}.attn.value.{m[3].lower()}.{m[4]}'),
    (rf'{_BLOCK}mlp\.((fc1|dwconv|fc2|decompose)\.(weight|bias)|sigma\.scale)',
     lambda m: f'{_block(m)}.ffn.{m[3]}'),
    (rf'norm(\d+)\.{_BN}', lambda m: f'{_stage(m)}.norm.{m[2]}'),
]
#: the ImageNet classifier
HEAD = [r'head\..*']


def convert_moganet_official(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert an official MogaNet state dict (ImageNet model or mmdet detector)."""
    state: StateDict = strip_prefixes(state_dict, ('module.', ))
    dropped = []
    if any(k.startswith('backbone.') for k in state):
        dropped = [k for k in state if not k.startswith('backbone.')]
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    result = apply_rules(state, RULES, drop=HEAD)
    result.dropped = dropped + result.dropped
    return result


def moganet_arch_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Read ``embed_dims``, ``depths`` and ``ffn_ratios`` off a converted MogaNet state dict."""
    stages = sorted({int(m[1]) for k in state_dict for m in [re.match(r'stages\.(\d+)\.', k)] if m})
    if not stages or stages != list(range(len(stages))):
        raise ValueError('MogaNet: the weights have no consecutive stages.N keys; is it a '
                         'MogaNet state dict?')
    dims, depths, ratios = [], [], []
    for i in stages:
        blocks = {int(m[1]) for k in state_dict
                  for m in [re.match(rf'stages\.{i}\.blocks\.(\d+)\.', k)] if m}
        if f'stages.{i}.norm.weight' not in state_dict or not blocks:
            raise ValueError(f'MogaNet: stage {i} of the weights has no norm or no blocks.')
        width = int(state_dict[f'stages.{i}.norm.weight'].shape[0])
        hidden = int(state_dict[f'stages.{i}.blocks.0.ffn.fc1.weight'].shape[0])
        dims.append(width)
        depths.append(max(blocks) + 1)
        ratios.append(hidden // width if hidden % width == 0 else hidden / width)
    return dict(embed_dims=dims, depths=depths, ffn_ratios=ratios)


def moganet_factory(state_dict: StateDict) -> Tuple[nn.Module, dict]:
    """A MogaNet for converted weights (the CLI's model factory): arch read off the weights."""
    from mmbackbones.models import MogaNet
    arch = moganet_arch_from_state_dict(state_dict)
    return MogaNet(arch=arch), dict(type='MogaNet', arch=arch)
