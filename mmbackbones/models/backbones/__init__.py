from .base import BaseBackbone
from .hgnetv2 import HGNetV2
from .moganet import MogaNet
from .presnet import PResNet
from .shufflenet_v2 import ShuffleNetV2
from .timm_backbone import TimmBackbone
from .vanillanet import VanillaNet
from .vovnet import VoVNet
from .yolov8_csp_darknet import YOLOv8CSPDarknet

__all__ = ['BaseBackbone', 'HGNetV2', 'PResNet',
           'MogaNet', 'ShuffleNetV2', 'TimmBackbone', 'VanillaNet', 'VoVNet', 'YOLOv8CSPDarknet']
