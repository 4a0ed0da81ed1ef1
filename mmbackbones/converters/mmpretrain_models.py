"""mmpretrain checkpoints -> mmbackbones backbones.

ShuffleNetV2: mmpretrain's ``conv1`` is our stem conv, ``layers.0..2`` our stages 0..2 (the
same ``branch1`` / ``branch2`` ConvModule names inside each unit) and ``layers.3`` (conv5) our
stage 3. mmpretrain splits a stride-1 unit's input with ``c = C // 2 + C % 2``, identical to our
halves for the even widths ShuffleNetV2 has. The classifier head is dropped; a bare backbone
state dict (no ``backbone.`` prefix) is accepted too.
"""
from typing import Mapping

import torch

from .core import ConversionResult, apply_rules

_BACKBONE = r'(?:backbone\.)?'

MMPRETRAIN_SHUFFLENETV2_RULES = [
    (_BACKBONE + r'conv1\.(conv|bn)\.(\w+)', r'stem.0.\1.\2'),
    (_BACKBONE + r'layers\.([0-2])\.(\d+)\.(branch1\.[01]|branch2\.[012])\.(conv|bn)\.(\w+)',
     r'stages.\1.\2.\3.\4.\5'),
    (_BACKBONE + r'layers\.3\.(conv|bn)\.(\w+)', r'stages.3.0.\1.\2'),
]
MMPRETRAIN_DROP = [r'(head|neck|data_preprocessor)\..*']


def convert_mmpretrain_shufflenetv2(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert an mmpretrain ``ShuffleNetV2`` classifier (or backbone) state dict."""
    return apply_rules(state_dict, MMPRETRAIN_SHUFFLENETV2_RULES, drop=MMPRETRAIN_DROP)
