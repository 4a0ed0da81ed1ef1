"""HGNetV2 bricks: the learnable affine block, conv units and the HG block."""
from typing import Dict, List, Optional

import torch
from .conv_module import FoldableConvModule
from torch import nn

from .activation_checkpoint import maybe_checkpoint
from .plugin import PluginSequence, apply_plugins


class LearnableAffine(nn.Module):
    """``scale * x + bias`` with one learnable scalar each (PP-HGNetV2's LearnableAffineBlock)."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias


class HGConvModule(FoldableConvModule):
    """:class:`FoldableConvModule` (conv, norm, act) with a :class:`LearnableAffine` after the
    activation.

    The affine block exists only when ``use_lab`` is set and the unit has an activation, as in
    PP-HGNetV2. Padding defaults to ``(kernel_size - 1) // 2``.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: As for ``nn.Conv2d``.
        use_lab (bool): Add the learnable affine block. Default: False.
        conv_cfg, norm_cfg, act_cfg: mmcv layer configs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, *, use_lab: bool = False, conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=(kernel_size - 1) // 2, groups=groups, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.lab = LearnableAffine() if use_lab and self.with_activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = super().forward(x)
        return x if self.lab is None else self.lab(x)


class LightConvModule(nn.Module):
    """1x1 conv + norm (no activation), then a depthwise kxk conv + norm + act."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 use_lab: bool = False, conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None) -> None:
        super().__init__()
        kw = dict(use_lab=use_lab, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        self.conv1 = HGConvModule(in_channels, out_channels, 1, act_cfg=None, **kw)
        self.conv2 = HGConvModule(out_channels, out_channels, kernel_size, groups=out_channels,
                                  act_cfg=act_cfg, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class HGBlock(nn.Module):
    """PP-HGNetV2 block: a chain of convs whose outputs are all aggregated at once.

    ``layer_num`` kxk conv units (plain, or light: 1x1 then depthwise kxk) run in sequence; the
    block input and every intermediate output are concatenated, squeezed by a 1x1 conv to
    ``out_channels // 2`` and expanded by another 1x1 to ``out_channels``.

    Forward order and plugin positions::

        x -> layers -> concat(x, f1..fL) -> squeeze 1x1 -> excitation 1x1 -> [after_aggregation]
          -> (+ x when identity) -> [after_block]

    Args:
        in_channels (int): Input channels.
        mid_channels (int): Channels of each conv unit.
        out_channels (int): Output channels.
        layer_num (int): Conv units in the chain.
        kernel_size (int): Kernel of the conv units.
        light (bool): Light units (1x1 + depthwise) instead of plain kxk convs.
        identity (bool): Add the input to the output (every block of a stage but the first).
        use_lab (bool): Learnable affine blocks after the activations.
        conv_cfg, norm_cfg, act_cfg: mmcv layer configs.
        plugins (dict[str, list[dict]], optional): Plugin configs per position.
        with_cp (bool): Checkpoint the block's activations.
    """

    plugin_positions = ('after_aggregation', 'after_block')

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, layer_num: int,
                 kernel_size: int, *, light: bool, identity: bool, use_lab: bool = False,
                 conv_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 plugins: Optional[Dict[str, List[dict]]] = None, with_cp: bool = False) -> None:
        super().__init__()
        if identity and in_channels != out_channels:
            raise ValueError(f'HGBlock: identity needs in_channels == out_channels, got '
                             f'{in_channels} and {out_channels}.')
        self.identity = identity
        self.with_cp = with_cp
        kw = dict(use_lab=use_lab, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        unit = LightConvModule if light else HGConvModule
        self.layers = nn.ModuleList(
            unit(in_channels if i == 0 else mid_channels, mid_channels, kernel_size, **kw)
            for i in range(layer_num))
        total = in_channels + layer_num * mid_channels
        self.aggregation_squeeze_conv = HGConvModule(total, out_channels // 2, 1, **kw)
        self.aggregation_excitation_conv = HGConvModule(out_channels // 2, out_channels, 1, **kw)
        plugins = plugins or {}
        self.plugins_after_aggregation = PluginSequence.build(plugins.get('after_aggregation'),
                                                              out_channels)
        self.plugins_after_block = PluginSequence.build(plugins.get('after_block'), out_channels)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        out = x
        for layer in self.layers:
            out = layer(out)
            feats.append(out)
        out = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(torch.cat(feats, 1)))
        out = apply_plugins(self.plugins_after_aggregation, out)
        if self.identity:
            out = out + x
        return apply_plugins(self.plugins_after_block, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maybe_checkpoint(self._forward, x, self.with_cp)
