"""MogaNet's bricks: multi-order gated aggregation, the channel-aggregation FFN and the block.

Li et al., "MogaNet: Multi-order Gated Aggregation Network" (ICLR 2024). Module and parameter
names follow the official code where they say what a thing is, so converted checkpoints read
alike (``attn.proj_1``, ``attn.gate``, ``attn.value``, ``layer_scale_1``, ``sigma.scale``).
"""
from typing import Dict, List, Optional, Sequence

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from torch import nn

from .activation_checkpoint import maybe_checkpoint
from .plugin import PluginSequence, apply_plugins


class ElementScale(nn.Module):
    """A learnable per-channel scale, ``x * scale`` with ``scale`` of shape (1, C, 1, 1).

    Args:
        channels (int): Channels of the input.
        init_value (float): Initial value of every scale. Default: 0.
    """

    def __init__(self, channels: int, init_value: float = 0.) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _split_channels(owner: str, channels: int, channel_split: Sequence[int]) -> List[int]:
    if (len(channel_split) != 3 or not all(isinstance(s, int) and s > 0 for s in channel_split)):
        raise ValueError(f'{owner}: channel_split must be 3 positive ints (the relative widths of '
                         f'the dilation-1/2/3 branches), got {tuple(channel_split)!r}.')
    total = sum(channel_split)
    if channels % total:
        raise ValueError(f'{owner}: channels={channels} must be a multiple of '
                         f'sum(channel_split)={total} (channel_split={tuple(channel_split)}); '
                         f'for the default split [1, 3, 4] use a multiple of 8.')
    second = int(channel_split[1] / total * channels)
    third = int(channel_split[2] / total * channels)
    return [channels - second - third, second, third]


class MultiOrderDWConv(nn.Module):
    """Multi-order depthwise convolution: the value branch of MogaNet's spatial aggregation.

    A 5x5 depthwise conv (dilation ``dilations[0]``) runs over all channels. Its output is split
    along channels by ``channel_split``: the first part is kept, the second goes through a 5x5
    depthwise conv with dilation ``dilations[1]``, the third through a 7x7 one with dilation
    ``dilations[2]``. The three parts are concatenated and mixed by a 1x1 conv.

    Args:
        channels (int): Input and output channels; a multiple of ``sum(channel_split)``.
        dilations (Sequence[int]): Dilations of the three depthwise convs, each 1..3.
            Default: (1, 2, 3).
        channel_split (Sequence[int]): Relative widths of the three parts. Default: (1, 3, 4).
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 3),
                 channel_split: Sequence[int] = (1, 3, 4)) -> None:
        super().__init__()
        if len(dilations) != 3 or not all(isinstance(d, int) and 1 <= d <= 3 for d in dilations):
            raise ValueError(f'MultiOrderDWConv: dilations must be 3 ints in 1..3, got '
                             f'{tuple(dilations)!r}.')
        self.split_channels = _split_channels('MultiOrderDWConv', channels, channel_split)
        _, second, third = self.split_channels
        self.dw_conv0 = self._depthwise(channels, 5, dilations[0])
        self.dw_conv1 = self._depthwise(second, 5, dilations[1])
        self.dw_conv2 = self._depthwise(third, 7, dilations[2])
        self.pw_conv = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def _depthwise(channels: int, kernel_size: int, dilation: int) -> nn.Conv2d:
        return nn.Conv2d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2 * dilation,
                         dilation=dilation, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_conv0(x)
        kept, second, third = torch.split(x, self.split_channels, dim=1)
        x = torch.cat([kept, self.dw_conv1(second), self.dw_conv2(third)], dim=1)
        return self.pw_conv(x)


class MultiOrderGatedAggregation(nn.Module):
    """MogaNet's spatial aggregation (the block's token mixer).

    ``proj_1`` (1x1), feature decomposition ``x + sigma * (x - GAP(x))``, activation; then a
    gate ``g = gate(x)`` (1x1) and a value ``v = MultiOrderDWConv(x)``, combined as
    ``proj_2(act(g) * act(v))``, plus the module input.

    Args:
        channels (int): Input and output channels.
        dilations (Sequence[int]): Dilations of the value branch. Default: (1, 2, 3).
        channel_split (Sequence[int]): Channel split of the value branch. Default: (1, 3, 4).
        act_cfg (dict): Activation of the decomposition, gate and value.
            Default: ``dict(type='SiLU')``.
        force_fp32 (bool): Compute the gating product and ``proj_2`` in float32 with autocast
            disabled, so mixed-precision training cannot overflow there. The function is the
            same as without it. (The official code applies the activation twice on this path;
            its released weights were trained without the option, so that is not reproduced.)
            Default: False.
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 3),
                 channel_split: Sequence[int] = (1, 3, 4), act_cfg: dict = dict(type='SiLU'),
                 force_fp32: bool = False) -> None:
        super().__init__()
        self.force_fp32 = force_fp32
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.value = MultiOrderDWConv(channels, dilations, channel_split)
        self.proj_2 = nn.Conv2d(channels, channels, 1)
        self.act_value = build_activation_layer(act_cfg)
        self.act_gate = build_activation_layer(act_cfg)
        self.sigma = ElementScale(channels, init_value=1e-5)

    def _aggregate(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.act_gate(g) * self.act_gate(v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.proj_1(x)
        # x + sigma * (x - GAP(x)), as one pass over x: x * (1 + sigma) - sigma * GAP(x)
        sigma = self.sigma.scale
        x = torch.addcmul(-sigma * x.mean(dim=(2, 3), keepdim=True), x, 1 + sigma)
        x = self.act_value(x)
        g, v = self.gate(x), self.value(x)
        if self.force_fp32:
            with torch.autocast(device_type=x.device.type, enabled=False):
                out = self._aggregate(g.float(), v.float())
        else:
            out = self._aggregate(g, v)
        return out + shortcut


class ChannelAggregationFFN(nn.Module):
    """MogaNet's channel-aggregation FFN.

    ``fc1`` (1x1, C -> hidden), 3x3 depthwise conv, activation, dropout; channel aggregation
    ``x + sigma * (x - act(decompose(x)))`` with ``decompose`` a 1x1 conv to one channel; then
    ``fc2`` (1x1, hidden -> C) and dropout.

    Args:
        channels (int): Input and output channels.
        hidden_channels (int): Hidden channels.
        act_cfg (dict): Activation. Default: ``dict(type='GELU')``.
        drop_rate (float): Dropout probability after the activation and after ``fc2``.
            Default: 0.
    """

    def __init__(self, channels: int, hidden_channels: int, act_cfg: dict = dict(type='GELU'),
                 drop_rate: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden_channels, 1)
        self.dwconv = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1,
                                groups=hidden_channels)
        self.act = build_activation_layer(act_cfg)
        self.decompose = nn.Conv2d(hidden_channels, 1, 1)
        self.decompose_act = build_activation_layer(act_cfg)
        self.sigma = ElementScale(hidden_channels, init_value=1e-5)
        self.fc2 = nn.Conv2d(hidden_channels, channels, 1)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        # x + sigma * (x - act(decompose(x))) in two passes: x * (1 + sigma) - sigma * act(..)
        sigma = self.sigma.scale
        x = torch.addcmul(x * (1 + sigma), sigma, self.decompose_act(self.decompose(x)), value=-1)
        return self.drop(self.fc2(x))


class MogaBlock(nn.Module):
    """A MogaNet block: two pre-norm residual branches with layer scale and stochastic depth.

    Forward order and plugin positions::

        x = x + drop_path(layer_scale_1 * attn(norm1(x)))   -> [after_attn]
        x = x + drop_path(layer_scale_2 * ffn(norm2(x)))    -> [after_ffn]

    Args:
        channels (int): Input and output channels.
        ffn_ratio (float): FFN hidden channels = ``int(channels * ffn_ratio)``.
        norm_cfg (dict): Config of ``norm1`` / ``norm2``. Default: ``dict(type='BN')``.
        act_cfg (dict): FFN activation. Default: ``dict(type='GELU')``.
        attn_act_cfg (dict): Activation of the spatial aggregation. Default: SiLU.
        attn_dilations (Sequence[int]): Default: (1, 2, 3).
        attn_channel_split (Sequence[int]): Default: (1, 3, 4).
        attn_force_fp32 (bool): See :class:`MultiOrderGatedAggregation`. Default: False.
        init_value (float): Initial layer scale. Default: 1e-5.
        drop_rate (float): FFN dropout. Default: 0.
        drop_path_rate (float): Stochastic depth probability of both branches. Default: 0.
        plugins (dict[str, list[dict]], optional): Plugin configs per position.
        with_cp (bool): Checkpoint the block's activations. Default: False.
    """

    plugin_positions = ('after_attn', 'after_ffn')

    def __init__(self, channels: int, ffn_ratio: float = 4., *,
                 norm_cfg: dict = dict(type='BN'), act_cfg: dict = dict(type='GELU'),
                 attn_act_cfg: dict = dict(type='SiLU'),
                 attn_dilations: Sequence[int] = (1, 2, 3),
                 attn_channel_split: Sequence[int] = (1, 3, 4), attn_force_fp32: bool = False,
                 init_value: float = 1e-5, drop_rate: float = 0., drop_path_rate: float = 0.,
                 plugins: Optional[Dict[str, List[dict]]] = None, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = build_norm_layer(norm_cfg, channels)[1]
        self.attn = MultiOrderGatedAggregation(channels, attn_dilations, attn_channel_split,
                                               attn_act_cfg, attn_force_fp32)
        self.norm2 = build_norm_layer(norm_cfg, channels)[1]
        self.ffn = ChannelAggregationFFN(channels, int(channels * ffn_ratio), act_cfg, drop_rate)
        self.layer_scale_1 = nn.Parameter(torch.full((1, channels, 1, 1), float(init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((1, channels, 1, 1), float(init_value)))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        plugins = plugins or {}
        self.plugins_after_attn = PluginSequence.build(plugins.get('after_attn'), channels)
        self.plugins_after_ffn = PluginSequence.build(plugins.get('after_ffn'), channels)

    def _residual(self, x: torch.Tensor, layer_scale: torch.Tensor,
                  branch: torch.Tensor) -> torch.Tensor:
        if self.training and isinstance(self.drop_path, DropPath):
            return x + self.drop_path(layer_scale * branch)
        return torch.addcmul(x, layer_scale, branch)  # x + layer_scale * branch, one pass

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._residual(x, self.layer_scale_1, self.attn(self.norm1(x)))
        x = apply_plugins(self.plugins_after_attn, x)
        x = self._residual(x, self.layer_scale_2, self.ffn(self.norm2(x)))
        return apply_plugins(self.plugins_after_ffn, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maybe_checkpoint(self._forward, x, self.with_cp)
