"""mmyolo checkpoints -> mmbackbones backbones.

YOLOv8CSPDarknet: mmyolo names the stem ``backbone.stem`` (a bare ConvModule) and the stages
``backbone.stage1`` ... ``stage4`` (the stem counts as index 0 of its ``out_indices``). Inside a
stage, ``0`` is the stride-2 conv, ``1`` the ``CSPLayerWithTwoConv`` (``main_conv``,
``blocks.i.conv1/conv2``, ``final_conv``: our C2f names) and, in stage 4, ``2`` the
``SPPFBottleneck`` (``conv1``, ``conv2``). The neck, head and data preprocessor are dropped. A
bare backbone state dict (no ``backbone.`` prefix) is accepted too.
"""
from typing import Mapping

import torch

from .core import ConversionResult, apply_rules

_BACKBONE = r'(?:backbone\.)?'

MMYOLO_YOLOV8_RULES = [
    (_BACKBONE + r'stem\.(conv|bn)\.(\w+)', r'stem.0.\1.\2'),
    (_BACKBONE + r'stage([1-4])\.0\.(conv|bn)\.(\w+)',
     lambda m: f'stages.{int(m[1]) - 1}.0.{m[2]}.{m[3]}'),
    (_BACKBONE + r'stage([1-4])\.1\.(main_conv|final_conv|blocks\.\d+\.conv[12])\.(conv|bn)\.(\w+)',
     lambda m: f'stages.{int(m[1]) - 1}.1.{m[2]}.{m[3]}.{m[4]}'),
    (_BACKBONE + r'stage4\.2\.(conv[12])\.(conv|bn)\.(\w+)', r'stages.3.2.\1.\2.\3'),
]
MMYOLO_DROP = [r'(neck|bbox_head|data_preprocessor)\..*']


def convert_mmyolo_yolov8(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert an mmyolo YOLOv8 detector (or ``YOLOv8CSPDarknet``) state dict."""
    return apply_rules(state_dict, MMYOLO_YOLOV8_RULES, drop=MMYOLO_DROP)
