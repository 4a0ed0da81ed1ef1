"""MogaNet backbone (Li et al., "MogaNet: Multi-order Gated Aggregation Network", ICLR 2024)."""
import math
import warnings
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmcv.cnn import build_norm_layer
from mmdet.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import MogaBlock, PluginSequence
from ..layers.conv_module import FoldableConvModule
from .arch_schema import ArchSchema, Int, ListOf, Number
from .base import (ArchSpec, BaseBackbone, check_bool, check_layer_cfgs, check_norm_cfg,
                   check_number)

#: The official ``MogaNet.arch_zoo``.
MOGANET_ARCHS: Dict[str, ArchSpec] = {
    'xtiny': dict(embed_dims=[32, 64, 96, 192], depths=[3, 3, 10, 2], ffn_ratios=[8, 8, 4, 4]),
    'tiny': dict(embed_dims=[32, 64, 128, 256], depths=[3, 3, 12, 2], ffn_ratios=[8, 8, 4, 4]),
    'small': dict(embed_dims=[64, 128, 320, 512], depths=[2, 3, 12, 2], ffn_ratios=[8, 8, 4, 4]),
    'base': dict(embed_dims=[64, 160, 320, 512], depths=[4, 6, 22, 3], ffn_ratios=[8, 8, 4, 4]),
    'large': dict(embed_dims=[64, 160, 320, 640], depths=[4, 6, 44, 4], ffn_ratios=[8, 8, 4, 4]),
    'xlarge': dict(embed_dims=[96, 192, 480, 960], depths=[6, 6, 44, 4],
                   ffn_ratios=[8, 8, 4, 4]),
}
#: The official code's short names, so its configs port unchanged.
ARCH_ALIASES = {'xt': 'xtiny', 'x-tiny': 'xtiny', 't': 'tiny', 's': 'small', 'b': 'base',
                'l': 'large', 'xl': 'xlarge', 'x-large': 'xlarge'}


def moga_conv3x3(in_channels: int, out_channels: int, norm_cfg: dict,
                 act_cfg: Optional[dict] = None) -> FoldableConvModule:
    """3x3 stride-2 conv + norm (+ act). The conv keeps its bias before the norm, as the
    official checkpoints have one."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Unnecessary conv bias')
        return FoldableConvModule(in_channels, out_channels, 3, stride=2, padding=1, bias=True,
                                  norm_cfg=norm_cfg, act_cfg=act_cfg)


@torch.no_grad()
def init_like_official(module: nn.Module) -> None:
    """The official from-scratch init: conv weights N(0, 2 / fan_out) with fan_out divided by
    the groups (so depthwise convs are not shrunk), zero conv biases, norms at (1, 0).
    Plugins keep their own init (a ContextBlock starts as the identity)."""
    if isinstance(module, PluginSequence):
        return
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        module.weight.normal_(0, math.sqrt(2.0 / (fan_out // module.groups)))
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, (_BatchNorm, nn.GroupNorm)) and module.weight is not None:
        module.weight.fill_(1.0)
        module.bias.zero_()
    for child in module.children():
        init_like_official(child)


class MogaStage(nn.Module):
    """A MogaNet stage: optional 3x3/2 conv downsample, MogaBlocks, then the stage norm."""

    def __init__(self, downsample: Optional[nn.Module], blocks: List[MogaBlock],
                 norm: nn.Module) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.norm(self.blocks(x))


@MODELS.register_module()
class MogaNet(BaseBackbone):
    """MogaNet backbone.

    Stem: two 3x3 stride-2 convs (C/2 then C channels, norm, GELU between) -> stride 4. Stage
    ``i`` (0-based): a 3x3 stride-2 conv + norm (stages 1-3), ``depths[i]`` MogaBlocks, and a
    stage norm; its output (after that norm) has ``embed_dims[i]`` channels and stride
    ``4 * 2**i``. ``frozen_stages=0`` freezes the stem (the official ``patch_embed1``), k the
    stem and stages 1..k.

    ============  =====================  ===============  ===========  ============
    arch          embed_dims             depths           ffn_ratios   params (M)
    ============  =====================  ===============  ===========  ============
    xtiny         32, 64, 96, 192        3, 3, 10, 2      8, 8, 4, 4   2.76
    tiny          32, 64, 128, 256       3, 3, 12, 2      8, 8, 4, 4   4.94
    small         64, 128, 320, 512      2, 3, 12, 2      8, 8, 4, 4   24.82
    base          64, 160, 320, 512      4, 6, 22, 3      8, 8, 4, 4   43.21
    large         64, 160, 320, 640      4, 6, 44, 4      8, 8, 4, 4   81.84
    xlarge        96, 192, 480, 960      6, 6, 44, 4      8, 8, 4, 4   180.03
    ============  =====================  ===============  ===========  ============

    (params: backbone only, no classifier.) The official short names (``'xt'``, ``'x-tiny'``,
    ``'t'``, ``'s'``, ``'b'``, ``'l'``, ``'xl'``, ``'x-large'``) are accepted too.

    Unlike the official ``MogaNet_feat``, which swallowed them through ``**kwargs``, every
    mmdet argument here is honoured: ``out_indices``, ``frozen_stages``, ``norm_eval``,
    ``norm_cfg`` / ``out_norm_cfg``.

    Args:
        arch (str | dict): Named variant or a dict with ``embed_dims``, ``depths`` and
            ``ffn_ratios`` (one entry per stage; each width a multiple of
            ``sum(attn_channel_split)``, 8 by default). Default: ``'tiny'``.
        drop_rate (float): Dropout inside the FFNs, in [0, 1). Default: 0.
        drop_path_rate (float): Stochastic depth, in [0, 1), rising linearly from 0 at the first
            block to this value at the last block of the full architecture. Default: 0.
        init_value (float): Initial layer scale of every residual branch. Default: 1e-5.
        attn_dilations (Sequence[int]): Dilations of the three depthwise convs of the
            multi-order value branch. Default: (1, 2, 3).
        attn_channel_split (Sequence[int]): Relative channel split among them. Default: (1, 3, 4).
        attn_act_cfg (dict): Activation of the spatial aggregation and its gating.
            Default: ``dict(type='SiLU')``.
        attn_force_fp32 (bool): Compute the gating product and its output projection in float32
            with autocast disabled (mixed-precision safety); same function otherwise.
            Default: False.
        act_cfg (dict): Activation of the stem and the FFNs. Default: ``dict(type='GELU')``.
        norm_cfg (dict): Norm of the convs (stem, downsamples) and of the blocks' pre-norms (the
            official ``conv_norm_type``). Default: ``dict(type='BN', requires_grad=True)``.
        out_norm_cfg (dict, optional): Norm after each stage, whose output is returned (the
            official ``stem_norm_type``). Default: None, the same as ``norm_cfg``.

    The other arguments are :class:`BaseBackbone`'s, with these defaults: ``in_channels=3``,
    ``num_stages=4`` (1..len(depths)), ``out_indices=(0, 1, 2, 3)``, ``frozen_stages=-1``,
    ``norm_eval=False``, ``plugins=None`` (in every block of the chosen stages, at
    ``position`` ``'after_attn'``, after the spatial residual, or ``'after_ffn'``, after the
    channel residual), ``with_cp=False`` (per block), ``channels_last=True`` (as fast in eval
    and faster in training on CPU than NCHW), ``fuse_bn_eval=True``, ``init_cfg=None`` (the
    official from-scratch init, :func:`init_like_official`).

    Example:
        >>> import torch
        >>> from mmbackbones.models import MogaNet
        >>> model = MogaNet(arch='xtiny').eval()
        >>> for out in model(torch.rand(1, 3, 64, 64)):
        ...     print(tuple(out.shape))
        (1, 32, 16, 16)
        (1, 64, 8, 8)
        (1, 96, 4, 4)
        (1, 192, 2, 2)
        >>> model.out_channels, model.out_strides
        ((32, 64, 96, 192), (4, 8, 16, 32))
    """

    arch_settings = MOGANET_ARCHS
    arch_schema = ArchSchema(required=dict(
        depths=ListOf(Int(min=1)), embed_dims=ListOf(Int(min=1, even=True), length='depths'),
        ffn_ratios=ListOf(Number(above=0), length='depths')))
    plugin_positions = MogaBlock.plugin_positions

    def __init__(self, arch: Union[str, ArchSpec] = 'tiny', in_channels: int = 3,
                 num_stages: int = 4, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, drop_rate: float = 0., drop_path_rate: float = 0.,
                 init_value: float = 1e-5, attn_dilations: Sequence[int] = (1, 2, 3),
                 attn_channel_split: Sequence[int] = (1, 3, 4),
                 attn_act_cfg: dict = dict(type='SiLU'), attn_force_fp32: bool = False,
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 out_norm_cfg: Optional[dict] = None, norm_eval: bool = False,
                 plugins: Optional[List[dict]] = None, with_cp: bool = False,
                 channels_last: bool = True, fuse_bn_eval: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if isinstance(arch, str):
            arch = ARCH_ALIASES.get(arch.lower(), arch.lower())
        spec = self.resolve_arch(arch)
        check_norm_cfg('MogaNet', norm_cfg)
        check_norm_cfg('MogaNet', out_norm_cfg, name='out_norm_cfg')
        out_norm_cfg = norm_cfg if out_norm_cfg is None else out_norm_cfg
        check_layer_cfgs('MogaNet', act_cfg=act_cfg, attn_act_cfg=attn_act_cfg)
        check_number('MogaNet', 'drop_path_rate', drop_path_rate, 0, 1, high_open=True)
        check_number('MogaNet', 'drop_rate', drop_rate, 0, 1, high_open=True)
        check_number('MogaNet', 'init_value', init_value, 0, float('inf'),
                     valid='a number >= 0 (the initial layer scale, e.g. 1e-5)')
        attn_force_fp32 = check_bool('MogaNet', 'attn_force_fp32', attn_force_fp32)
        divisor = sum(attn_channel_split)
        bad = [c for c in spec['embed_dims'] if c % divisor]
        if bad:
            raise ValueError(f'MogaNet: embed_dims {bad} are not multiples of '
                             f'sum(attn_channel_split)={divisor} (attn_channel_split='
                             f'{tuple(attn_channel_split)}).')
        super().__init__(max_stages=len(spec['depths']), in_channels=in_channels,
                         num_stages=num_stages,
                         out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp, channels_last=channels_last, fuse_bn_eval=fuse_bn_eval, plugins=plugins,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.arch = spec
        self.attn_force_fp32 = attn_force_fp32
        dims = spec['embed_dims']

        self.stem = nn.Sequential(
            moga_conv3x3(in_channels, dims[0] // 2, norm_cfg, act_cfg),
            moga_conv3x3(dims[0] // 2, dims[0], norm_cfg))

        total = sum(spec['depths'])
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0. for i in range(total)]
        first = 0
        for i in range(self.num_stages):
            depth = spec['depths'][i]
            blocks = [MogaBlock(dims[i], spec['ffn_ratios'][i], norm_cfg=norm_cfg, act_cfg=act_cfg,
                                attn_act_cfg=attn_act_cfg, attn_dilations=attn_dilations,
                                attn_channel_split=attn_channel_split,
                                attn_force_fp32=attn_force_fp32, init_value=init_value,
                                drop_rate=drop_rate, drop_path_rate=rates[first + j],
                                plugins=self.stage_plugins(i), with_cp=with_cp)
                      for j in range(depth)]
            first += depth
            downsample = moga_conv3x3(dims[i - 1], dims[i], norm_cfg) if i > 0 else None
            norm = build_norm_layer(out_norm_cfg, dims[i])[1]
            self.add_stage(MogaStage(downsample, blocks, norm), dims[i], 4 * 2**i)
        init_like_official(self)
        self.init_conventions()
