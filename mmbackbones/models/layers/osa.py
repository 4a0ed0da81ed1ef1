"""One-Shot Aggregation (OSA), the VoVNet block."""
from typing import Dict, List, Optional

import torch
from torch import nn

from .activation_checkpoint import maybe_checkpoint
from .conv_module import FoldableConvModule, FoldableDepthwiseSeparableConvModule
from .plugin import PluginSequence, apply_plugins
from .squeeze_excite import EffectiveSE


def vovnet_conv3x3(in_channels: int, out_channels: int, *, stride: int = 1, depthwise: bool = False,
                   conv_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                   act_cfg: Optional[dict] = None) -> nn.Module:
    """VoVNet's 3x3 conv-norm-act, or its depthwise-separable form.

    The depthwise form is a 3x3 depthwise conv straight into a 1x1 conv, with norm and
    activation only after the 1x1: the official dw_conv3x3 has nothing between the two.
    """
    if depthwise:
        return FoldableDepthwiseSeparableConvModule(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False, conv_cfg=conv_cfg,
            norm_cfg=norm_cfg, act_cfg=act_cfg, dw_norm_cfg=None, dw_act_cfg=None)
    return FoldableConvModule(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                              conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)


class OSAModule(nn.Module):
    """One-Shot Aggregation module (VoVNet / VoVNetV2).

    ``layer_per_block`` 3x3 convs run in sequence; the block input and every intermediate output
    are concatenated once, then a 1x1 conv aggregates them. V2 adds eSE and an identity shortcut.

    Forward order and plugin positions::

        x -> [reduction 1x1, depthwise variant only] -> 3x3 x L -> concat(x, f1..fL) -> 1x1
          -> [after_concat] -> eSE -> [after_ese] -> (+ x when identity) -> [after_block]

    Args:
        in_channels (int): Input channels.
        stage_channels (int): Channels of each 3x3 conv.
        out_channels (int): Channels after the 1x1 aggregation.
        layer_per_block (int): Number of 3x3 convs.
        identity (bool): Add the input to the output (V2, blocks after the first of a stage).
        ese (bool): Apply eSE after the aggregation.
        depthwise (bool): Use depthwise-separable 3x3 convs. When ``in_channels`` differs from
            ``stage_channels`` a 1x1 reduction feeds the convs; the concat still keeps the
            un-reduced input, as the official code does.
        plugins (dict[str, list[dict]], optional): Plugin configs per position.
        with_cp (bool): Checkpoint the block's activations.
    """

    plugin_positions = ('after_concat', 'after_ese', 'after_block')

    def __init__(self, in_channels: int, stage_channels: int, out_channels: int,
                 layer_per_block: int, *, identity: bool = False, ese: bool = True,
                 depthwise: bool = False, conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None,
                 plugins: Optional[Dict[str, List[dict]]] = None, with_cp: bool = False) -> None:
        super().__init__()
        if identity and in_channels != out_channels:
            raise ValueError(f'OSAModule: identity needs in_channels == out_channels, got '
                             f'{in_channels} and {out_channels}.')
        self.identity = identity
        self.with_cp = with_cp
        conv_kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.reduction = None
        if depthwise and in_channels != stage_channels:
            self.reduction = FoldableConvModule(in_channels, stage_channels, 1, bias=False,
                                                **conv_kw)
        self.layers = nn.ModuleList()
        channels = stage_channels if depthwise else in_channels
        for _ in range(layer_per_block):
            self.layers.append(vovnet_conv3x3(channels, stage_channels, depthwise=depthwise, **conv_kw))
            channels = stage_channels
        self.concat = FoldableConvModule(in_channels + layer_per_block * stage_channels,
                                         out_channels, 1, bias=False, **conv_kw)
        self.ese = EffectiveSE(out_channels) if ese else None
        plugins = plugins or {}
        self.plugins_after_concat = PluginSequence.build(plugins.get('after_concat'), out_channels)
        self.plugins_after_ese = PluginSequence.build(plugins.get('after_ese'), out_channels)
        self.plugins_after_block = PluginSequence.build(plugins.get('after_block'), out_channels)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        out = x if self.reduction is None else self.reduction(x)
        for layer in self.layers:
            out = layer(out)
            feats.append(out)
        out = self.concat(torch.cat(feats, dim=1))
        out = apply_plugins(self.plugins_after_concat, out)
        if self.ese is not None:
            out = self.ese(out)
        out = apply_plugins(self.plugins_after_ese, out)
        if self.identity:
            out = out + x
        return apply_plugins(self.plugins_after_block, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maybe_checkpoint(self._forward, x, self.with_cp)
