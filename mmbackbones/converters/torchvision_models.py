"""torchvision checkpoints -> mmbackbones backbones.

ShuffleNetV2: torchvision's ``nn.Sequential`` indices (conv, BN, ReLU interleaved) map onto our
ConvModule units; the classifier ``fc`` is dropped.
"""
from typing import Mapping

import torch

from .core import ConversionResult, apply_rules

#: torchvision Sequential index -> our ConvModule path, per branch
_BRANCH1 = {'0': '0.conv', '1': '0.bn', '2': '1.conv', '3': '1.bn'}
_BRANCH2 = {'0': '0.conv', '1': '0.bn', '3': '1.conv', '4': '1.bn', '5': '2.conv', '6': '2.bn'}
_PARTS = {'branch1': _BRANCH1, 'branch2': _BRANCH2}

SHUFFLENETV2_RULES = [
    (r'conv1\.0\.(\w+)', r'stem.0.conv.\1'),
    (r'conv1\.1\.(\w+)', r'stem.0.bn.\1'),
    (r'stage([234])\.(\d+)\.(branch[12])\.(\d)\.(\w+)',
     lambda m: f'stages.{int(m[1]) - 2}.{m[2]}.{m[3]}.{_PARTS[m[3]][m[4]]}.{m[5]}'),
    (r'conv5\.0\.(\w+)', r'stages.3.0.conv.\1'),
    (r'conv5\.1\.(\w+)', r'stages.3.0.bn.\1'),
]


def convert_torchvision_shufflenetv2(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert a torchvision ``shufflenet_v2_x*`` state dict."""
    return apply_rules(state_dict, SHUFFLENETV2_RULES, drop=[r'fc\..*'])
