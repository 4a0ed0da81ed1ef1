# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The checkpoint formats mmbackbones converts, and how each is recognised from its keys.

One row per converter: the key patterns that identify its source (every pattern must match some
key of the state dict), the backbone it produces and where the weights sit inside the file.
:func:`detect_format` runs over all of them, so a downloaded official, timm, torchvision or
ultralytics file can be given to ``init_cfg`` as it is.
"""
from typing import List, Mapping, Optional

from .core import SourceFormat, describe_formats, recognise
from .mmpretrain_models import convert_mmpretrain_shufflenetv2
from .mmyolo_models import convert_mmyolo_yolov8
from .moganet_official import convert_moganet_official
from .rtdetr_official import convert_rtdetr_hgnetv2, convert_rtdetr_presnet
from .timm_models import convert_timm_hgnetv2, convert_timm_resnetd, convert_timm_vovnet
from .torchvision_models import convert_torchvision_shufflenetv2
from .ultralytics_yolov8 import convert_ultralytics_yolov8
from .vanillanet_official import convert_vanillanet_official
from .vovnet_official import convert_vovnet_official

_MODULE = r'(?:module\.)?'
_DETECTOR = r'(?:module\.)?(?:backbone\.)?'

SOURCE_FORMATS = (
    SourceFormat(
        'vovnet-detectron2', 'official VoVNet, vovnet-detectron2 / CenterMask', 'VoVNet',
        convert_vovnet_official,
        (r'(?:.*\.)?stem\.stem_1/conv\.weight', r'(?:.*\.)?stage2\.OSA2_1\.\S+')),
    SourceFormat(
        'timm-vovnet', 'timm VovNet (ese_vovnet*b, vovnet*a)', 'VoVNet', convert_timm_vovnet,
        (r'stem[._]0\.conv\.weight', r'stages[._]0\.blocks\.0\.conv_concat\.conv\.weight'),
        hint="timm's ese_vovnet*b weights put eSE on the last block of each stage only: build "
             "the VoVNet with ese_layout='last'"),
    SourceFormat(
        'torchvision-shufflenetv2', 'torchvision ShuffleNetV2', 'ShuffleNetV2',
        convert_torchvision_shufflenetv2,
        (r'conv1\.0\.weight', r'stage2\.0\.branch2\.0\.weight')),
    SourceFormat(
        'mmpretrain-shufflenetv2', 'mmpretrain ShuffleNetV2', 'ShuffleNetV2',
        convert_mmpretrain_shufflenetv2,
        (r'(?:backbone\.)?conv1\.conv\.weight',
         r'(?:backbone\.)?layers\.0\.0\.branch2\.0\.conv\.weight')),
    SourceFormat(
        'ultralytics-yolov8', 'ultralytics YOLOv8 DetectionModel', 'YOLOv8CSPDarknet',
        convert_ultralytics_yolov8,
        (_MODULE + r'model\.0\.conv\.weight', _MODULE + r'model\.2\.cv1\.conv\.weight',
         _MODULE + r'model\.2\.m\.0\.cv1\.conv\.weight')),
    SourceFormat(
        'mmyolo-yolov8', 'mmyolo YOLOv8', 'YOLOv8CSPDarknet', convert_mmyolo_yolov8,
        (r'(?:backbone\.)?stem\.conv\.weight',
         r'(?:backbone\.)?stage1\.1\.main_conv\.conv\.weight')),
    SourceFormat(
        'vanillanet-official', 'official VanillaNet (train or deploy form)', 'VanillaNet',
        convert_vanillanet_official,
        (_MODULE + r'(?:stem1\.0|stem\.0)\.weight', _MODULE + r'stages\.0\.act\.weight'),
        # what the official detection code loads: the EMA weights when the file has them
        entries=('model_ema', 'model', 'state_dict'),
        hint='official VanillaNet detection weights (act_num_4) need act_num=4'),
    SourceFormat(
        'moganet-official', 'official MogaNet (Westlake-AI/MogaNet)', 'MogaNet',
        convert_moganet_official,
        (_DETECTOR + r'patch_embed1\.projection\.0\.weight',
         _DETECTOR + r'blocks1\.0\.attn\.proj_1\.weight')),
    SourceFormat(
        'rtdetr-presnet', 'official RT-DETR PResNet', 'PResNet', convert_rtdetr_presnet,
        (_DETECTOR + r'conv1\.conv1_1\.conv\.weight',
         _DETECTOR + r'res_layers\.0\.blocks\.0\.branch2a\.conv\.weight')),
    SourceFormat(
        'rtdetr-hgnetv2', 'official RT-DETR HGNetv2', 'HGNetV2', convert_rtdetr_hgnetv2,
        (_DETECTOR + r'stem\.stem1\.conv\.weight',
         _DETECTOR + r'stages\.0\.blocks\.0\.aggregation_squeeze_conv\.conv\.weight')),
    SourceFormat(
        'timm-hgnetv2', 'timm HGNetV2 (hgnetv2_b*)', 'HGNetV2', convert_timm_hgnetv2,
        (r'stem\.stem1\.conv\.weight',
         r'stages[._]0\.blocks\.0\.aggregation\.0\.conv\.weight')),
    SourceFormat(
        'timm-resnetd', 'timm ResNet-D (resnet*d)', 'PResNet', convert_timm_resnetd,
        (r'conv1\.0\.weight', r'conv1\.3\.weight', r'layer1\.0\.conv1\.weight')),
)
FORMATS_BY_NAME = {fmt.name: fmt for fmt in SOURCE_FORMATS}


def get_format(name: str) -> SourceFormat:
    """The format called ``name``; a clear error with the valid names otherwise."""
    if name not in FORMATS_BY_NAME:
        raise ValueError(f'unknown checkpoint format {name!r}; choose one of '
                         f'{", ".join(FORMATS_BY_NAME)}.')
    return FORMATS_BY_NAME[name]


def detect_format(ckpt: Mapping, backbone: Optional[str] = None) -> List[SourceFormat]:
    """The formats a checkpoint (a file's content or a state dict) is recognised as.

    With ``backbone`` given, formats that convert to that backbone come first, so a caller can
    take the first one and tell a wrong-family file (only other backbones) apart.
    """
    found = recognise(ckpt, SOURCE_FORMATS)
    if backbone is not None:
        found.sort(key=lambda fmt: fmt.backbone != backbone)
    return found


def formats_tried() -> str:
    """Every format :func:`detect_format` looks for, for error messages."""
    return describe_formats(SOURCE_FORMATS)


__all__ = ['SOURCE_FORMATS', 'FORMATS_BY_NAME', 'get_format', 'detect_format', 'formats_tried']
