"""Output channels and strides of a backbone config, without allocating the model."""
import copy
from typing import NamedTuple, Tuple, Union

import torch
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope


class FeatureInfo(NamedTuple):
    channels: Tuple[int, ...]
    strides: Tuple[int, ...]


def get_feature_info(cfg: Union[dict, ConfigDict], probe_size: int = 512) -> FeatureInfo:
    """Channels and strides of the feature maps a backbone config returns.

    The backbone is built on the ``meta`` device, so no weights are allocated or initialised.
    mmbackbones backbones report ``out_channels`` / ``out_strides`` directly; any other
    registered backbone (mmdet's ResNet, ...) is run on a meta tensor of ``probe_size`` squared
    and the shapes are read off.

    Args:
        cfg (dict): A backbone config, e.g. ``cfg.model.backbone``.
        probe_size (int): Side of the meta probe input for backbones without ``out_channels``.

    Example:
        >>> get_feature_info(dict(type='VoVNet', arch='V-39-eSE', out_indices=(1, 2, 3)))
        FeatureInfo(channels=(512, 768, 1024), strides=(8, 16, 32))
    """
    cfg = copy.deepcopy(dict(cfg))
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    init_default_scope('mmdet')
    with torch.device('meta'):
        model = MODELS.build(cfg)
        if hasattr(model, 'out_channels') and hasattr(model, 'out_strides'):
            return FeatureInfo(tuple(model.out_channels), tuple(model.out_strides))
        model.eval()
        in_channels = getattr(model, 'in_channels', 3)
        outs = model(torch.empty(1, in_channels, probe_size, probe_size))
    return FeatureInfo(tuple(o.shape[1] for o in outs),
                       tuple(probe_size // o.shape[-1] for o in outs))
