"""VanillaNet's series-informed activation: ReLU, then a learnable depthwise conv and a norm."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from .conv_fusion import fuse_conv_bn


class SeriesActivation(nn.Module):
    """Series-informed activation (VanillaNet): ``norm(dwconv(relu(x)))``.

    The depthwise ``(2 * act_num + 1)``-square conv sums ``act_num``-neighbourhood-shifted,
    scaled and biased ReLUs, a series of activations at the cost of one depthwise conv.
    In deploy form the norm is folded into the conv, which gains a bias.

    Parameter names are the official ones (``weight``, ``bn.*``; ``weight``, ``bias`` after
    deploy), so official deploy-form weights load without renaming.

    Args:
        channels (int): Channels in and out.
        act_num (int): Neighbourhood radius; the kernel is ``2 * act_num + 1`` square
            (VanillaNet uses 3, its detection models 4). Default: 3.
        norm_cfg (dict): Norm layer config. Default: ``dict(type='BN', eps=1e-6)`` (VanillaNet's).
        deploy (bool): Build the deploy form (conv with bias, no norm). Default: False.
    """

    def __init__(self, channels: int, act_num: int = 3,
                 norm_cfg: Optional[dict] = None, deploy: bool = False) -> None:
        super().__init__()
        if not isinstance(act_num, int) or isinstance(act_num, bool) or act_num < 1:
            raise ValueError(f'SeriesActivation: act_num={act_num!r} must be a positive int '
                             f'(VanillaNet uses 3, or 4 for detection).')
        self.channels = channels
        self.act_num = act_num
        size = 2 * act_num + 1
        self.weight = nn.Parameter(torch.empty(channels, 1, size, size))
        trunc_normal_(self.weight, std=.02)
        self.norm_name: Optional[str] = None
        if deploy:
            self.bias = nn.Parameter(torch.zeros(channels))
        else:
            self.register_parameter('bias', None)
            self.norm_name, norm = build_norm_layer(norm_cfg or dict(type='BN', eps=1e-6),
                                                    channels)
            self.add_module(self.norm_name, norm)

    @property
    def deploy(self) -> bool:
        return self.norm_name is None

    @property
    def norm(self) -> Optional[nn.Module]:
        return None if self.norm_name is None else getattr(self, self.norm_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(F.relu(x), self.weight, self.bias, padding=self.act_num,
                       groups=self.channels)
        return out if self.norm_name is None else self.norm(out)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold the norm into the depthwise conv (in place); a no-op in deploy form."""
        if self.deploy:
            return
        weight, bias = fuse_conv_bn(self.weight, None, self.norm)
        self.weight.data = weight
        self.bias = nn.Parameter(bias)
        delattr(self, self.norm_name)
        self.norm_name = None

    def extra_repr(self) -> str:
        return f'{self.channels}, act_num={self.act_num}, deploy={self.deploy}'


__all__ = ['SeriesActivation']
