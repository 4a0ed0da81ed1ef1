from .base import BaseBackbone
from .vovnet import VoVNet

__all__ = ['BaseBackbone', 'VoVNet']
