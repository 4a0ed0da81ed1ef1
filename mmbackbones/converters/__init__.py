"""Checkpoint converters: pure functions from a source state dict to an mmbackbones one."""
from .core import (ConversionError, ConversionResult, apply_rules, check_against_model,
                   load_source_checkpoint)
from .mmpretrain_models import convert_mmpretrain_shufflenetv2
from .mmyolo_models import convert_mmyolo_yolov8
from .moganet_official import convert_moganet_official
from .rtdetr_official import convert_rtdetr_hgnetv2, convert_rtdetr_presnet
from .timm_models import convert_timm_hgnetv2, convert_timm_resnetd, convert_timm_vovnet
from .torchvision_models import convert_torchvision_shufflenetv2
from .ultralytics_yolov8 import convert_ultralytics_yolov8, load_ultralytics_checkpoint
from .vanillanet_official import convert_vanillanet_official
from .vovnet_official import convert_vovnet_official

__all__ = ['ConversionError', 'ConversionResult', 'apply_rules', 'check_against_model',
           'load_source_checkpoint', 'convert_timm_vovnet', 'convert_torchvision_shufflenetv2',
           'convert_vovnet_official', 'convert_moganet_official',
           'convert_mmpretrain_shufflenetv2', 'convert_mmyolo_yolov8',
           'convert_ultralytics_yolov8', 'load_ultralytics_checkpoint', 'convert_vanillanet_official',
           'convert_rtdetr_presnet', 'convert_rtdetr_hgnetv2', 'convert_timm_resnetd',
           'convert_timm_hgnetv2']
