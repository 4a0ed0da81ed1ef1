"""YOLO-family CSP bricks: the Focus stem, the C2f block and SPPF.

Every conv is a ``FoldableConvModule`` (mmcv's conv + norm + act, BN folded at inference), so
``conv_cfg`` / ``norm_cfg`` / ``act_cfg`` work the mmdet way; with YOLOv8's settings (BN, SiLU)
it computes exactly ultralytics' ``Conv``.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .activation_checkpoint import maybe_checkpoint
from .conv_module import FoldableConvModule, FoldableDepthwiseSeparableConvModule
from .plugin import PluginSequence, apply_plugins


def yolo_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *,
              use_depthwise: bool = False, **cfgs) -> nn.Module:
    """A ``kernel_size`` conv + norm + act with 'same' padding; depthwise-separable
    (depthwise kxk + norm + act, then pointwise 1x1 + norm + act) when ``use_depthwise``."""
    conv = (FoldableDepthwiseSeparableConvModule if use_depthwise and kernel_size > 1
            else FoldableConvModule)
    return conv(in_channels, out_channels, kernel_size, stride=stride,
                padding=kernel_size // 2, **cfgs)


class Focus(nn.Module):
    """Space-to-depth stem (YOLOv5): 2x2 pixel blocks become 4x channels, then a conv.

    The four slices are concatenated in YOLOv5's order, ``x[..., ::2, ::2]``,
    ``x[..., 1::2, ::2]``, ``x[..., ::2, 1::2]``, ``x[..., 1::2, 1::2]``, so YOLOv5 Focus weights
    load unchanged. Output stride 2, like a 3x3 stride-2 conv stem; an odd height or width is
    zero-padded at the bottom / right (YOLOv5 would fail), giving the conv stem's ``ceil(H / 2)``.

    Args:
        in_channels (int): Image channels.
        out_channels (int): Channels after the conv.
        kernel_size (int): Kernel of the conv after slicing. Default: 3.
        **cfgs: ``conv_cfg`` / ``norm_cfg`` / ``act_cfg`` of the FoldableConvModule.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, **cfgs) -> None:
        super().__init__()
        self.conv = FoldableConvModule(4 * in_channels, out_channels, kernel_size,
                                       padding=kernel_size // 2, **cfgs)

    @staticmethod
    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 2 or x.shape[-1] % 2:  # odd sizes: zero row/column at the far edge
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                          x[..., 1::2, 1::2]), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.space_to_depth(x))


class C2fBottleneck(nn.Module):
    """Two 3x3 conv + norm + act layers with an identity shortcut (YOLOv8's ``Bottleneck`` with
    expansion 1). Plugins (position ``'after_bottleneck'``) run after the shortcut."""

    def __init__(self, channels: int, add_identity: bool = True, use_depthwise: bool = False,
                 plugins: Optional[List[dict]] = None, **cfgs) -> None:
        super().__init__()
        self.conv1 = yolo_conv(channels, channels, 3, use_depthwise=use_depthwise, **cfgs)
        self.conv2 = yolo_conv(channels, channels, 3, use_depthwise=use_depthwise, **cfgs)
        self.add_identity = add_identity
        self.plugins_after_bottleneck = PluginSequence.build(plugins, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        if self.add_identity:
            out = out + x
        return apply_plugins(self.plugins_after_bottleneck, out)


class C2f(nn.Module):
    """CSP block with two convs (YOLOv8's C2f; mmyolo's ``CSPLayerWithTwoConv``).

    A 1x1 ``main_conv`` makes ``2 * hidden`` channels (``hidden = int(out_channels *
    expand_ratio)``) and splits them in two halves; ``num_blocks`` bottlenecks run in series on
    the second half, and the two halves plus every bottleneck output are concatenated and fused
    by a 1x1 ``final_conv``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        num_blocks (int): Bottlenecks. Default: 1.
        add_identity (bool): Shortcut in each bottleneck (YOLOv8's backbone: True, its neck:
            False). Default: True.
        expand_ratio (float): Hidden width relative to ``out_channels``. Default: 0.5.
        use_depthwise (bool): Depthwise-separable 3x3 convs in the bottlenecks. Default: False.
        plugins (dict[str, list[dict]], optional): Plugin configs by position,
            ``'after_bottleneck'`` and/or ``'after_c2f'`` (after ``final_conv``).
        with_cp (bool): Recompute the block's activations in backward. Default: False.
        **cfgs: ``conv_cfg`` / ``norm_cfg`` / ``act_cfg`` of every FoldableConvModule.
    """

    plugin_positions = ('after_bottleneck', 'after_c2f')

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 1,
                 add_identity: bool = True, expand_ratio: float = 0.5,
                 use_depthwise: bool = False, plugins: Optional[dict] = None,
                 with_cp: bool = False, **cfgs) -> None:
        super().__init__()
        plugins = plugins or {}
        self.hidden_channels = int(out_channels * expand_ratio)
        self.with_cp = with_cp
        self.main_conv = FoldableConvModule(in_channels, 2 * self.hidden_channels, 1, **cfgs)
        self.blocks = nn.ModuleList(
            C2fBottleneck(self.hidden_channels, add_identity, use_depthwise,
                          plugins.get('after_bottleneck'), **cfgs) for _ in range(num_blocks))
        self.final_conv = FoldableConvModule((2 + num_blocks) * self.hidden_channels,
                                             out_channels, 1, **cfgs)
        self.plugins_after_c2f = PluginSequence.build(plugins.get('after_c2f'), out_channels)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.main_conv(x).chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return apply_plugins(self.plugins_after_c2f, self.final_conv(torch.cat(parts, dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maybe_checkpoint(self._forward, x, self.with_cp)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast (YOLOv5/v8): a 1x1 conv to half the input channels, three
    ``kernel_size`` max-pools in series (receptive fields 5, 9, 13 for k=5), the four maps
    concatenated and fused by a 1x1 conv. Both convs have the activation (YOLOv8; the
    activation-free first conv of YOLO26 is a different block).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Max-pool kernel, stride 1, 'same' padding. Default: 5.
        **cfgs: ``conv_cfg`` / ``norm_cfg`` / ``act_cfg`` of both ConvModules.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, **cfgs) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = FoldableConvModule(in_channels, hidden, 1, **cfgs)
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.conv2 = FoldableConvModule(4 * hidden, out_channels, 1, **cfgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.conv1(x)
        y2 = self.pool(y1)
        y3 = self.pool(y2)
        return self.conv2(torch.cat((y1, y2, y3, self.pool(y3)), dim=1))
