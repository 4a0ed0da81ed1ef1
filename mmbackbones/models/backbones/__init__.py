from .base import BaseBackbone
from .shufflenet_v2 import ShuffleNetV2
from .vovnet import VoVNet

__all__ = ['BaseBackbone', 'ShuffleNetV2', 'VoVNet']
