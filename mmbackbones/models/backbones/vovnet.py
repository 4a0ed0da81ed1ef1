"""VoVNet (V1) and VoVNetV2 (CenterMask) backbones."""
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS
from torch import nn

from ..layers import OSAModule, vovnet_conv3x3
from .arch_schema import ArchSchema, Bool, Int, ListOf
from .base import (ArchSpec, BaseBackbone, check_choice, check_layer_cfgs, check_norm_cfg,
                   scratch_init_cfg)

_V2_WIDE = dict(stage_conv_ch=[128, 160, 192, 224], stage_out_ch=[256, 512, 768, 1024])
_V2_SLIM = dict(stage_conv_ch=[64, 80, 96, 112], stage_out_ch=[112, 256, 384, 512])

#: Named variants. V2 (``*-eSE``) numbers are vovnet-detectron2's ``_STAGE_SPECS``; V1 numbers are
#: the VoVNet paper's (Lee et al. 2019, table 1): no identity shortcut, no eSE.
VOVNET_ARCHS: Dict[str, ArchSpec] = {
    'V-19-slim-dw-eSE': dict(stem=[64, 64, 64], **_V2_SLIM, layer_per_block=3,
                             block_per_stage=[1, 1, 1, 1], eSE=True, dw=True, identity=True),
    'V-19-dw-eSE': dict(stem=[64, 64, 64], **_V2_WIDE, layer_per_block=3,
                        block_per_stage=[1, 1, 1, 1], eSE=True, dw=True, identity=True),
    'V-19-slim-eSE': dict(stem=[64, 64, 128], **_V2_SLIM, layer_per_block=3,
                          block_per_stage=[1, 1, 1, 1], eSE=True, dw=False, identity=True),
    'V-19-eSE': dict(stem=[64, 64, 128], **_V2_WIDE, layer_per_block=3,
                     block_per_stage=[1, 1, 1, 1], eSE=True, dw=False, identity=True),
    'V-39-eSE': dict(stem=[64, 64, 128], **_V2_WIDE, layer_per_block=5,
                     block_per_stage=[1, 1, 2, 2], eSE=True, dw=False, identity=True),
    'V-57-eSE': dict(stem=[64, 64, 128], **_V2_WIDE, layer_per_block=5,
                     block_per_stage=[1, 1, 4, 3], eSE=True, dw=False, identity=True),
    'V-99-eSE': dict(stem=[64, 64, 128], **_V2_WIDE, layer_per_block=5,
                     block_per_stage=[1, 3, 9, 3], eSE=True, dw=False, identity=True),
    'V-27-slim': dict(stem=[64, 64, 128], stage_conv_ch=[64, 80, 96, 112],
                      stage_out_ch=[128, 256, 384, 512], layer_per_block=5,
                      block_per_stage=[1, 1, 1, 1], eSE=False, dw=False, identity=False),
    'V-39': dict(stem=[64, 64, 128], **_V2_WIDE, layer_per_block=5, block_per_stage=[1, 1, 2, 2],
                 eSE=False, dw=False, identity=False),
    'V-57': dict(stem=[64, 64, 128], **_V2_WIDE, layer_per_block=5, block_per_stage=[1, 1, 4, 3],
                 eSE=False, dw=False, identity=False),
}

ESE_LAYOUTS = ('all', 'last')


@MODELS.register_module()
class VoVNet(BaseBackbone):
    """VoVNet / VoVNetV2 backbone.

    A 3-conv stem (stride 4) and four stages of One-Shot Aggregation modules. Stages 2-4 open
    with a 3x3 stride-2 max-pool in ceil mode; stage outputs have strides 4/8/16/32 and
    ``stage_out_ch`` channels.

    ``depth=`` picks the family default (19: V-19-eSE, 27: V-27-slim, 39: V-39-eSE, 57: V-57-eSE,
    99: V-99-eSE); ``arch=`` any named variant or a custom dict. Variants:

    ============================  ======  =================================
    arch                          depth   notes
    ============================  ======  =================================
    V-19-slim-dw-eSE              19      depthwise 3x3s, slim widths
    V-19-dw-eSE                   19      depthwise 3x3s
    V-19-slim-eSE / V-19-eSE      19
    V-39-eSE / V-57-eSE           39/57
    V-99-eSE                      99
    V-27-slim / V-39 / V-57       27/39/57  VoVNetV1: no identity, no eSE
    ============================  ======  =================================

    Custom dict keys: ``stem`` (3 widths), ``stage_conv_ch``, ``stage_out_ch``,
    ``layer_per_block``, ``block_per_stage``, and optionally ``eSE`` (True), ``dw`` (False),
    ``identity`` (True; V2's shortcut on every block after the first of a stage).

    eSE placement (``ese_layout``): ``'all'`` puts eSE on every OSA module, as the official
    vovnet-detectron2 / CenterMask checkpoints do (its ``SE`` flag is computed but never used);
    ``'last'`` only on the last block of each stage, as timm's ``ese_vovnet*b`` weights do. The two
    differ only for archs with several blocks in a stage (V-39/57/99).

    Plugins sit in every OSA module of the chosen stages, at ``position`` ``'after_concat'``
    (after the 1x1 aggregation), ``'after_ese'`` or ``'after_block'`` (after the shortcut).

    Args:
        arch (str | dict, optional): Named variant or custom dict. Default: None (use ``depth``).
        depth (int, optional): 19, 27, 39, 57 or 99.
        ese_layout (str): ``'all'`` or ``'last'``. Default: ``'all'``.
        conv_cfg (dict, optional): Conv layer config. Default: None (Conv2d).
        act_cfg (dict): Activation config. Default: ``dict(type='ReLU', inplace=True)``.

    The other arguments are :class:`BaseBackbone`'s, with these defaults: ``in_channels=3``,
    ``num_stages=4``, ``out_indices=(0, 1, 2, 3)`` (0 is the stride-4 stage),
    ``frozen_stages=-1``, ``norm_cfg=dict(type='BN', requires_grad=True)``, ``norm_eval=True``,
    ``plugins=None``, ``with_cp=False`` (per OSA module), ``channels_last=True``,
    ``fuse_bn_eval=True``, ``init_cfg=None`` (Kaiming for convs, constant 1 for norms).

    Example:
        >>> import torch
        >>> from mmbackbones.models import VoVNet
        >>> model = VoVNet(arch='V-19-slim-dw-eSE').eval()
        >>> outs = model(torch.rand(1, 3, 64, 64))
        >>> for out in outs:
        ...     print(tuple(out.shape))
        (1, 112, 16, 16)
        (1, 256, 8, 8)
        (1, 384, 4, 4)
        (1, 512, 2, 2)
        >>> model.out_channels, model.out_strides
        ((112, 256, 384, 512), (4, 8, 16, 32))
    """

    arch_settings = VOVNET_ARCHS
    depth_settings = {19: 'V-19-eSE', 27: 'V-27-slim', 39: 'V-39-eSE', 57: 'V-57-eSE', 99: 'V-99-eSE'}
    arch_schema = ArchSchema(
        required=dict(stem=ListOf(Int(min=1), length=3), stage_conv_ch=ListOf(Int(min=1)),
                      stage_out_ch=ListOf(Int(min=1), length='stage_conv_ch'),
                      layer_per_block=Int(min=1),
                      block_per_stage=ListOf(Int(min=1), length='stage_conv_ch')),
        optional=dict(eSE=(True, Bool()), dw=(False, Bool()), identity=(True, Bool())))
    plugin_positions = OSAModule.plugin_positions

    def __init__(self, arch: Union[str, ArchSpec, None] = None, depth: Optional[int] = None,
                 in_channels: int = 3, num_stages: int = 4,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 ese_layout: str = 'all', conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU', inplace=True), norm_eval: bool = True,
                 plugins: Optional[List[dict]] = None, with_cp: bool = False,
                 channels_last: bool = True, fuse_bn_eval: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        spec = self.resolve_arch(arch, depth)
        check_choice('VoVNet', 'ese_layout', ese_layout, ESE_LAYOUTS)
        check_norm_cfg('VoVNet', norm_cfg)
        check_layer_cfgs('VoVNet', conv_cfg=conv_cfg, act_cfg=act_cfg)
        init_cfg = scratch_init_cfg(init_cfg, pretrained)
        super().__init__(max_stages=len(spec['stage_out_ch']), in_channels=in_channels,
                         num_stages=num_stages,
                         out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp, channels_last=channels_last, fuse_bn_eval=fuse_bn_eval, plugins=plugins,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.arch = spec
        self.ese_layout = ese_layout
        conv_kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)

        stem = spec['stem']
        self.stem = nn.Sequential(
            vovnet_conv3x3(in_channels, stem[0], stride=2, **conv_kw),
            vovnet_conv3x3(stem[0], stem[1], depthwise=spec['dw'], **conv_kw),
            vovnet_conv3x3(stem[1], stem[2], stride=2, depthwise=spec['dw'], **conv_kw))

        channels, stride = stem[2], 4
        for i in range(self.num_stages):
            blocks = []
            num_blocks = spec['block_per_stage'][i]
            for b in range(num_blocks):
                last = b == num_blocks - 1
                blocks.append(OSAModule(
                    channels, spec['stage_conv_ch'][i], spec['stage_out_ch'][i],
                    spec['layer_per_block'], identity=spec['identity'] and b > 0,
                    ese=spec['eSE'] and (ese_layout == 'all' or last), depthwise=spec['dw'],
                    plugins=self.stage_plugins(i), with_cp=with_cp, **conv_kw))
                channels = spec['stage_out_ch'][i]
            stride = stride if i == 0 else stride * 2
            self.add_stage(OSAStage(blocks, downsample=i > 0), channels, stride)
        self.init_conventions()

    @classmethod
    def arch_from_state_dict(cls, state_dict: Dict[str, torch.Tensor],
                             identity: bool = True) -> Tuple[ArchSpec, str]:
        """Read the arch dict and ``ese_layout`` off a VoVNet state dict in our key names.

        Everything but the identity shortcut (which has no weights) is visible in the weights;
        pass ``identity=False`` for VoVNetV1 checkpoints.
        """
        def out_ch(prefix: str) -> int:
            for part in ('conv', 'pointwise_conv.conv'):
                if f'{prefix}.{part}.weight' in state_dict:
                    return int(state_dict[f'{prefix}.{part}.weight'].shape[0])
            raise ValueError(f'VoVNet: state dict has no conv weight under {prefix!r}; is it a '
                             f'VoVNet state dict in mmbackbones key names?')

        def count(pattern: str) -> int:
            found = {int(m[1]) for k in state_dict for m in [re.match(pattern, k)] if m}
            return max(found) + 1 if found else 0

        num_stages = count(r'stages\.(\d+)\.')
        if num_stages == 0:
            raise ValueError('VoVNet: state dict has no stages.N keys; is it a VoVNet state dict '
                             'in mmbackbones key names?')
        blocks = [count(rf'stages\.{i}\.blocks\.(\d+)\.') for i in range(num_stages)]
        spec = dict(
            stem=[out_ch(f'stem.{i}') for i in range(3)],
            stage_conv_ch=[out_ch(f'stages.{i}.blocks.0.layers.0') for i in range(num_stages)],
            stage_out_ch=[out_ch(f'stages.{i}.blocks.0.concat') for i in range(num_stages)],
            layer_per_block=count(r'stages\.0\.blocks\.0\.layers\.(\d+)\.'),
            block_per_stage=blocks,
            dw='stem.1.depthwise_conv.conv.weight' in state_dict,
            identity=identity)
        has_ese = [[f'stages.{i}.blocks.{b}.ese.fc.weight' in state_dict for b in range(n)]
                   for i, n in enumerate(blocks)]
        spec['eSE'] = any(any(s) for s in has_ese)
        layout = 'all'
        if spec['eSE'] and not all(all(s) for s in has_ese):
            if not all(s[-1] and not any(s[:-1]) for s in has_ese):
                raise ValueError('VoVNet: eSE weights sit neither on every block nor on the last '
                                 'block of each stage; no ese_layout reproduces this checkpoint.')
            layout = 'last'
        return cls.check_arch(spec), layout

    @classmethod
    def arch_depth(cls, spec: ArchSpec) -> int:
        """Conv layers on the main path: 3 in the stem, then L 3x3s + one 1x1 per OSA module."""
        return 3 + sum(spec['block_per_stage']) * (spec['layer_per_block'] + 1)


class OSAStage(nn.Module):
    """A VoVNet stage: optional ceil-mode 3x3/2 max-pool, then OSA modules."""

    def __init__(self, blocks: List[OSAModule], downsample: bool) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True) if downsample else None
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        if self.pool is not None:
            x = self.pool(x)
        return self.blocks(x)
