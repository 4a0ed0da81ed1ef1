"""HGNetV2 (PP-HGNetV2): RT-DETR's L/X/H backbones and timm's b0-b6."""
import re
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import nn

from ..layers import HGBlock, HGConvModule, check_freeze_norm, freeze_batch_norm
from .arch_schema import ArchSchema, Bool, Int, ListOf
from .base import ArchSpec, BaseBackbone, check_layer_cfgs, check_norm_cfg, scratch_init_cfg

#: Named variants. L/X/H are RT-DETR's ``HGNetv2.arch_configs``, identical to timm's
#: ``hgnetv2_b4`` / ``b5`` / ``b6``; b0-b3 are timm's smaller ones, which use the learnable
#: affine blocks (``use_lab``). Every variant has RT-DETR's stage layout: no downsample in
#: stage 0, light blocks and 5x5 kernels in stages 2-3.
HGNETV2_ARCHS: Dict[str, ArchSpec] = {
    'L': dict(stem_channels=[32, 48], stage_mid_channels=[48, 96, 192, 384],
              stage_out_channels=[128, 512, 1024, 2048], stage_blocks=[1, 1, 3, 1], layer_num=6),
    'X': dict(stem_channels=[32, 64], stage_mid_channels=[64, 128, 256, 512],
              stage_out_channels=[128, 512, 1024, 2048], stage_blocks=[1, 2, 5, 2], layer_num=6),
    'H': dict(stem_channels=[48, 96], stage_mid_channels=[96, 192, 384, 768],
              stage_out_channels=[192, 512, 1024, 2048], stage_blocks=[2, 3, 6, 3], layer_num=6),
    'b0': dict(stem_channels=[16, 16], stage_mid_channels=[16, 32, 64, 128],
               stage_out_channels=[64, 256, 512, 1024], stage_blocks=[1, 1, 2, 1], layer_num=3,
               use_lab=True),
    'b1': dict(stem_channels=[24, 32], stage_mid_channels=[32, 48, 96, 192],
               stage_out_channels=[64, 256, 512, 1024], stage_blocks=[1, 1, 2, 1], layer_num=3,
               use_lab=True),
    'b2': dict(stem_channels=[24, 32], stage_mid_channels=[32, 64, 128, 256],
               stage_out_channels=[96, 384, 768, 1536], stage_blocks=[1, 1, 3, 1], layer_num=4,
               use_lab=True),
    'b3': dict(stem_channels=[24, 32], stage_mid_channels=[32, 64, 128, 256],
               stage_out_channels=[128, 512, 1024, 2048], stage_blocks=[1, 1, 3, 1],
               layer_num=5, use_lab=True),
}
HGNETV2_ARCHS['b4'] = dict(HGNETV2_ARCHS['L'])
HGNETV2_ARCHS['b5'] = dict(HGNETV2_ARCHS['X'])
HGNETV2_ARCHS['b6'] = dict(HGNETV2_ARCHS['H'])


class HGStemBranches(nn.Module):
    """The two-branch middle of the HGNetV2 stem, at stride 2.

    The input is zero-padded by one pixel right and bottom; one branch is a 2x2 conv, another
    pad and a 2x2 conv (``conv_a``, ``conv_b``), the other a 2x2/1 max-pool (ceil mode). The
    outputs (pool first) are concatenated: ``2 * channels`` at the input's size.
    """

    def __init__(self, channels: int, *, use_lab: bool, conv_cfg: Optional[dict],
                 norm_cfg: Optional[dict], act_cfg: Optional[dict]) -> None:
        super().__init__()
        kw = dict(use_lab=use_lab, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv_a = HGConvModule(channels, channels // 2, 2, **kw)
        self.conv_b = HGConvModule(channels // 2, channels, 2, **kw)
        self.pool = nn.MaxPool2d(2, stride=1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 1, 0, 1))
        branch = self.conv_b(F.pad(self.conv_a(x), (0, 1, 0, 1)))
        return torch.cat([self.pool(x), branch], dim=1)


class HGStage(nn.Module):
    """An HGNetV2 stage: an optional depthwise 3x3/2 conv + norm (no activation), then HG blocks."""

    def __init__(self, blocks: List[HGBlock], downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


@MODELS.register_module()
class HGNetV2(BaseBackbone):
    """HGNetV2 (PP-HGNetV2) backbone, as RT-DETR and timm build it.

    Stem (stride 4): a 3x3/2 conv, :class:`HGStemBranches` (2x2 convs beside a 2x2 max-pool,
    concatenated), a 3x3/2 conv and a 1x1 conv. Four stages of :class:`HGBlock` follow; a stage
    may open with a depthwise 3x3/2 conv + norm, and every block but the first of a stage adds
    its input (identity). Stages 2-3 use light blocks (1x1 + depthwise 5x5). All convs are
    followed by norm and ReLU (and, with ``use_lab``, a learnable affine block).

    Variants (``arch``), with the stage outputs at strides 4, 8, 16, 32:

    ========  =========================  ========================================
    arch      channels                   notes
    ========  =========================  ========================================
    L (b4)    128, 512, 1024, 2048       RT-DETR HGNetv2-L = timm ``hgnetv2_b4``
    X (b5)    128, 512, 1024, 2048       RT-DETR HGNetv2-X = timm ``hgnetv2_b5``
    H (b6)    192, 512, 1024, 2048       RT-DETR HGNetv2-H = timm ``hgnetv2_b6``
    b0, b1    64, 256, 512, 1024         timm, ``use_lab=True``
    b2        96, 384, 768, 1536         timm, ``use_lab=True``
    b3        128, 512, 1024, 2048       timm, ``use_lab=True``
    ========  =========================  ========================================

    Custom dict keys: ``stem_channels`` ([mid, out]), ``stage_mid_channels``,
    ``stage_out_channels``, ``stage_blocks`` (one per stage), ``layer_num`` (conv units per
    block), and optionally ``downsample`` ([False, True, True, True]), ``light_block``
    ([False, False, True, True]), ``kernel_size`` ([3, 3, 5, 5]) and ``use_lab`` (False).

    RT-DETR uses ``out_indices=(1, 2, 3)`` and, for L/X/H, ``freeze_norm=True`` with
    ``frozen_stages=0`` (its ``freeze_at=0``).

    Args:
        arch (str | dict): Named variant or custom dict. Default: ``'L'``.
        freeze_norm (bool): Replace every BatchNorm by a
            :class:`~mmbackbones.models.layers.FrozenBatchNorm2d` (statistics and affine as
            buffers; state dict keys unchanged), as RT-DETR does. Needs a BatchNorm
            ``norm_cfg``. Default: False (mmdet's ``norm_cfg=dict(type='BN',
            requires_grad=False)`` + ``norm_eval=True`` is the same forward pass).
        conv_cfg (dict, optional): Conv layer config. Default: None (Conv2d).
        act_cfg (dict): Activation config. Default: ``dict(type='ReLU', inplace=True)``.

    The other arguments are :class:`BaseBackbone`'s, with these defaults: ``in_channels=3``,
    ``num_stages=4``, ``out_indices=(0, 1, 2, 3)``, ``frozen_stages=-1``,
    ``norm_cfg=dict(type='BN', requires_grad=True)``, ``norm_eval=True``, ``plugins=None`` (at
    ``position`` ``'after_aggregation'`` or ``'after_block'``, see :class:`HGBlock`, in every
    block of the chosen stages), ``with_cp=False`` (per HG block), ``channels_last=True``,
    ``fuse_bn_eval=True``, ``init_cfg=None`` (Kaiming for convs, constant 1 for norms).

    Example:
        >>> import torch
        >>> from mmbackbones.models import HGNetV2
        >>> model = HGNetV2(arch='L', out_indices=(1, 2, 3)).eval()
        >>> for out in model(torch.rand(1, 3, 64, 64)):
        ...     print(tuple(out.shape))
        (1, 512, 8, 8)
        (1, 1024, 4, 4)
        (1, 2048, 2, 2)
        >>> model.out_channels, model.out_strides
        ((512, 1024, 2048), (8, 16, 32))
    """

    arch_settings = HGNETV2_ARCHS
    arch_schema = ArchSchema(
        required=dict(stem_channels=ListOf(Int(min=2), length=2, note='[mid, out]'),
                      stage_out_channels=ListOf(Int(min=1)),
                      stage_mid_channels=ListOf(Int(min=1), length='stage_out_channels'),
                      stage_blocks=ListOf(Int(min=1), length='stage_out_channels'),
                      layer_num=Int(min=1)),
        optional=dict(kernel_size=([3, 3, 5, 5], ListOf(Int(min=1), length='stage_out_channels')),
                      downsample=([False, True, True, True],
                                  ListOf(Bool(), length='stage_out_channels')),
                      light_block=([False, False, True, True],
                                   ListOf(Bool(), length='stage_out_channels')),
                      use_lab=(False, Bool())))
    plugin_positions = HGBlock.plugin_positions

    def __init__(self, arch: Union[str, ArchSpec] = 'L', in_channels: int = 3,
                 num_stages: int = 4, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, freeze_norm: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU', inplace=True), norm_eval: bool = True,
                 plugins: Optional[List[dict]] = None, with_cp: bool = False,
                 channels_last: bool = True, fuse_bn_eval: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        spec = self.resolve_arch(arch)
        check_norm_cfg('HGNetV2', norm_cfg)
        check_layer_cfgs('HGNetV2', conv_cfg=conv_cfg, act_cfg=act_cfg)
        check_freeze_norm('HGNetV2', freeze_norm, norm_cfg)
        init_cfg = scratch_init_cfg(init_cfg, pretrained)
        super().__init__(max_stages=len(spec['stage_out_channels']), in_channels=in_channels,
                         num_stages=num_stages,
                         out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp, channels_last=channels_last, fuse_bn_eval=fuse_bn_eval, plugins=plugins,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.arch = spec
        self.freeze_norm = freeze_norm
        kw = dict(use_lab=spec['use_lab'], conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)

        mid, channels = spec['stem_channels']
        self.stem = nn.Sequential(  # RT-DETR / timm: stem1, (stem2a, stem2b, pool), stem3, stem4
            HGConvModule(in_channels, mid, 3, stride=2, **kw),
            HGStemBranches(mid, **kw),
            HGConvModule(2 * mid, mid, 3, stride=2, **kw),
            HGConvModule(mid, channels, 1, **kw))

        stride = 4
        for i in range(self.num_stages):
            downsample = None
            if spec['downsample'][i]:  # depthwise, norm only (no activation, hence no lab)
                downsample = HGConvModule(channels, channels, 3, stride=2, groups=channels,
                                          **dict(kw, act_cfg=None))
                stride *= 2
            out = spec['stage_out_channels'][i]
            blocks = [HGBlock(channels if b == 0 else out, spec['stage_mid_channels'][i], out,
                              spec['layer_num'], spec['kernel_size'][i],
                              light=spec['light_block'][i], identity=b > 0,
                              plugins=self.stage_plugins(i), with_cp=with_cp, **kw)
                      for b in range(spec['stage_blocks'][i])]
            self.add_stage(HGStage(blocks, downsample), out, stride)
            channels = out
        if freeze_norm:
            freeze_batch_norm(self)
        self.init_conventions()

    @classmethod
    def arch_from_state_dict(cls, state_dict: Dict[str, torch.Tensor]) -> Union[str, ArchSpec]:
        """The named arch (or a custom dict) of an HGNetV2 state dict in our key names."""
        def count(pattern: str) -> int:
            found = {int(m[1]) for k in state_dict for m in [re.match(pattern, k)] if m}
            return max(found) + 1 if found else 0

        def out_ch(key: str) -> int:
            return int(state_dict[key].shape[0])

        num_stages = count(r'stages\.(\d+)\.')
        if num_stages == 0 or 'stem.0.conv.weight' not in state_dict:
            raise ValueError('HGNetV2: state dict has no stem.0 / stages.N keys; is it an '
                             'HGNetV2 state dict in mmbackbones key names?')
        light = [f'stages.{i}.blocks.0.layers.0.conv1.conv.weight' in state_dict
                 for i in range(num_stages)]
        first = [f'stages.{i}.blocks.0.layers.0.' + ('conv2.' if light[i] else '') + 'conv.weight'
                 for i in range(num_stages)]
        spec = dict(
            stem_channels=[out_ch('stem.0.conv.weight'), out_ch('stem.3.conv.weight')],
            stage_mid_channels=[out_ch(k) for k in first],
            stage_out_channels=[
                out_ch(f'stages.{i}.blocks.0.aggregation_excitation_conv.conv.weight')
                for i in range(num_stages)],
            stage_blocks=[count(rf'stages\.{i}\.blocks\.(\d+)\.') for i in range(num_stages)],
            layer_num=count(r'stages\.0\.blocks\.0\.layers\.(\d+)\.'),
            downsample=[f'stages.{i}.downsample.conv.weight' in state_dict
                        for i in range(num_stages)],
            light_block=light,
            kernel_size=[int(state_dict[k].shape[-1]) for k in first],
            use_lab=any('.lab.' in k for k in state_dict))
        for name, named in cls.arch_settings.items():
            if cls.check_arch(named) == spec:
                return name
        return cls.check_arch(spec)
