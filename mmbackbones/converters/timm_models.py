"""timm checkpoints -> mmbackbones backbones.

VoVNet: ``ese_vovnet*b`` (V2, eSE on the last block of each stage: build ours with
``ese_layout='last'``) and ``vovnet39a`` / ``vovnet57a`` (V1: ``identity=False``, no eSE).
"""
import re
from typing import Mapping

import torch

from .core import ConversionError, ConversionResult, add_num_batches_tracked, apply_rules

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
