"""Checkpoint converters: pure functions from a source state dict to an mmbackbones one."""
from .core import (ConversionError, ConversionResult, apply_rules, check_against_model,
                   load_source_checkpoint)
from .timm_models import convert_timm_vovnet
from .torchvision_models import convert_torchvision_shufflenetv2
from .vovnet_official import convert_vovnet_official

__all__ = ['ConversionError', 'ConversionResult', 'apply_rules', 'check_against_model',
           'load_source_checkpoint', 'convert_timm_vovnet', 'convert_torchvision_shufflenetv2',
           'convert_vovnet_official']
