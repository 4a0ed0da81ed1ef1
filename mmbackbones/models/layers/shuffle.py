"""ShuffleNetV2 bricks: channel shuffle and the inverted residual unit."""
from typing import List, Optional

import torch
from .conv_module import FoldableConvModule
from torch import nn

from .activation_checkpoint import maybe_checkpoint
from .plugin import PluginSequence, apply_plugins


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups (ShuffleNet)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit.

    Stride 2: both branches see the input; ``branch1`` is dw3x3/2 + BN then 1x1 + BN + act,
    ``branch2`` is 1x1 + BN + act, dw3x3/2 + BN, 1x1 + BN + act; outputs are concatenated.
    Stride 1: the input is split in half, the first half passes, the second goes through
    ``branch2``. Either way the result is channel-shuffled with 2 groups. Plugins (position
    ``'after_block'``) run after the shuffle.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, *,
                 conv_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None, plugins: Optional[List[dict]] = None,
                 with_cp: bool = False) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f'ShuffleUnit: stride must be 1 or 2, got {stride}.')
        branch = out_channels // 2
        if stride == 1 and in_channels != 2 * branch:
            raise ValueError(f'ShuffleUnit: a stride-1 unit needs in_channels == out_channels '
                             f'(even), got {in_channels} -> {out_channels}.')
        self.stride = stride
        self.with_cp = with_cp
        kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        self.branch1 = None
        if stride == 2:
            self.branch1 = nn.Sequential(
                FoldableConvModule(in_channels, in_channels, 3, stride=2, padding=1,
                                   groups=in_channels, act_cfg=None, **kw),
                FoldableConvModule(in_channels, branch, 1, act_cfg=act_cfg, **kw))
        branch2_in = in_channels if stride == 2 else branch
        self.branch2 = nn.Sequential(
            FoldableConvModule(branch2_in, branch, 1, act_cfg=act_cfg, **kw),
            FoldableConvModule(branch, branch, 3, stride=stride, padding=1, groups=branch,
                               act_cfg=None, **kw),
            FoldableConvModule(branch, branch, 1, act_cfg=act_cfg, **kw))
        self.plugins_after_block = PluginSequence.build(plugins, out_channels)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return apply_plugins(self.plugins_after_block, channel_shuffle(out, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maybe_checkpoint(self._forward, x, self.with_cp)
