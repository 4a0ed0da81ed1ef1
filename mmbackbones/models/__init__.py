from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones
from .feature_info import FeatureInfo, get_feature_info
from . import rtdetr  # noqa: F401  (registers RTDETR, HybridEncoder, RTDETRHead)
from .registry import registered_backbones

__all__ = list(_backbones) + ['FeatureInfo', 'get_feature_info', 'registered_backbones']
