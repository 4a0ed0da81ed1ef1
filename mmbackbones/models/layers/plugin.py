"""mmdet-style plugins (ContextBlock, GeneralizedAttention, NonLocal2d, ...) inside a block."""
from typing import List, Optional, Sequence

import torch
from mmcv.cnn import build_plugin_layer
from torch import nn


class PluginSequence(nn.Sequential):
    """Plugin layers built from mmcv plugin configs and applied one after another.

    Args:
        cfgs (Sequence[dict]): Plugin layer configs (``dict(type=..., postfix=..., **kwargs)``), as
            found under the ``cfg`` key of mmdet's ``plugins`` entries.
        in_channels (int): Channels of the feature the plugins see; injected into every config.
    """

    def __init__(self, cfgs: Sequence[dict], in_channels: int) -> None:
        super().__init__()
        for cfg in cfgs:
            cfg = dict(cfg)
            postfix = cfg.pop('postfix', '')
            name, layer = build_plugin_layer(cfg, postfix=postfix, in_channels=in_channels)
            if name in self._modules:
                raise ValueError(
                    f'plugins: two plugins at the same position are both named {name!r}; give '
                    f"each config of the same type a distinct 'postfix' (e.g. postfix='1').")
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous():
            return super().forward(x)
        # mmcv's plugins reshape with .view, which needs NCHW-contiguous input; hand back the
        # channels-last layout the backbone runs in.
        return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)

    @classmethod
    def build(cls, cfgs: Optional[Sequence[dict]], in_channels: int) -> Optional['PluginSequence']:
        """Build the sequence, or return None when there is nothing to build (no overhead)."""
        return cls(cfgs, in_channels) if cfgs else None


def apply_plugins(plugins: Optional[PluginSequence], x: torch.Tensor) -> torch.Tensor:
    return x if plugins is None else plugins(x)


__all__: List[str] = ['PluginSequence', 'apply_plugins']
