"""PResNet: RT-DETR's ResNet-vd backbone (deep stem, stride on the 3x3, average-pool shortcut)."""
import re
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmcv.cnn import build_activation_layer
from mmdet.registry import MODELS
from torch import nn

from ..layers import (PluginSequence, apply_plugins, check_freeze_norm, freeze_batch_norm,
                      maybe_checkpoint)
from ..layers.conv_module import FoldableConvModule
from .arch_schema import ArchSchema, Int, ListOf, OneOf
from .base import ArchSpec, BaseBackbone, check_layer_cfgs, check_norm_cfg, scratch_init_cfg

#: RT-DETR's ``ResNet_cfg``: BasicBlock below depth 50, Bottleneck (expansion 4) from 50 on.
PRESNET_ARCHS: Dict[str, ArchSpec] = {
    'R18': dict(block='basic', stage_blocks=[2, 2, 2, 2]),
    'R34': dict(block='basic', stage_blocks=[3, 4, 6, 3]),
    'R50': dict(block='bottleneck', stage_blocks=[3, 4, 6, 3]),
    'R101': dict(block='bottleneck', stage_blocks=[3, 4, 23, 3]),
}
BLOCK_TYPES = ('basic', 'bottleneck')
EXPANSION = {'basic': 1, 'bottleneck': 4}


class ResNetVdBlock(nn.Module):
    """ResNet-vd residual block, basic (two 3x3) or bottleneck (1x1, 3x3, 1x1).

    The stride sits on the 3x3 conv. The projection shortcut is a 1x1 conv + norm, preceded by a
    2x2 average pool (ceil mode) when the block downsamples, so no input pixel is skipped.

    Forward order and plugin positions::

        x -> conv1 -> [after_conv1] -> conv2 -> [after_conv2] (-> conv3 -> [after_conv3])
          -> + shortcut(x) -> act

    Args:
        in_channels (int): Input channels.
        width (int): Channels of the 3x3 conv(s); the block outputs ``width * expansion``.
        stride (int): 1 or 2.
        bottleneck (bool): Bottleneck (expansion 4) instead of basic (expansion 1).
        projection (bool): Use a projection shortcut instead of the identity.
        conv_cfg, norm_cfg, act_cfg: mmcv layer configs.
        plugins (dict[str, list[dict]], optional): Plugin configs per position.
        with_cp (bool): Checkpoint the block's activations.
    """

    def __init__(self, in_channels: int, width: int, stride: int, *, bottleneck: bool,
                 projection: bool, conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None,
                 plugins: Optional[Dict[str, List[dict]]] = None, with_cp: bool = False) -> None:
        super().__init__()
        out_channels = width * EXPANSION['bottleneck' if bottleneck else 'basic']
        if not projection and (stride != 1 or in_channels != out_channels):
            raise ValueError(f'ResNetVdBlock: an identity shortcut needs stride 1 and '
                             f'in_channels == out_channels, got stride {stride}, {in_channels} -> '
                             f'{out_channels}.')
        self.with_cp = with_cp
        kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        if bottleneck:
            convs = [FoldableConvModule(in_channels, width, 1, act_cfg=act_cfg, **kw),
                     FoldableConvModule(width, width, 3, stride=stride, padding=1,
                                        act_cfg=act_cfg, **kw),
                     FoldableConvModule(width, out_channels, 1, act_cfg=None, **kw)]
        else:
            convs = [FoldableConvModule(in_channels, width, 3, stride=stride, padding=1,
                                        act_cfg=act_cfg, **kw),
                     FoldableConvModule(width, out_channels, 3, padding=1, act_cfg=None, **kw)]
        plugins = plugins or {}
        if not bottleneck and plugins.get('after_conv3'):
            raise ValueError("ResNetVdBlock: plugin position 'after_conv3' needs a bottleneck "
                             "block; basic blocks (depth 18/34) offer after_conv1, after_conv2.")
        self.num_convs = len(convs)
        for i, conv in enumerate(convs, start=1):
            self.add_module(f'conv{i}', conv)
            self.add_module(f'plugins_after_conv{i}', PluginSequence.build(
                plugins.get(f'after_conv{i}'), conv.conv.out_channels))
        self.shortcut_pool = (nn.AvgPool2d(2, stride, ceil_mode=True)
                              if projection and stride > 1 else None)
        self.shortcut = (FoldableConvModule(in_channels, out_channels, 1, act_cfg=None, **kw)
                         if projection else None)
        self.act = build_activation_layer(act_cfg) if act_cfg else nn.Identity()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(1, self.num_convs + 1):
            out = getattr(self, f'conv{i}')(out)
            out = apply_plugins(getattr(self, f'plugins_after_conv{i}'), out)
        shortcut = x
        if self.shortcut_pool is not None:
            shortcut = self.shortcut_pool(shortcut)
        if self.shortcut is not None:
            shortcut = self.shortcut(shortcut)
        return self.act(out + shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maybe_checkpoint(self._forward, x, self.with_cp)


@MODELS.register_module()
class PResNet(BaseBackbone):
    """PResNet, the ResNet-vd backbone of RT-DETR (depths 18, 34, 50, 101).

    Differences from mmdet's ResNet (``style='pytorch'``):

    * deep stem: three 3x3 conv-norm-act layers of widths 32-32-64 (the first with stride 2),
      then a 3x3/2 max-pool;
    * the stride of a downsampling block sits on its 3x3 conv (as ``style='pytorch'``);
    * a downsampling shortcut is a 2x2/2 average pool (ceil mode) followed by a 1x1 conv + norm
      (``avg_down``), so the projection sees every pixel;
    * the first block of **every** stage has a projection shortcut, including stage 1 of
      R18/R34 where 64 -> 64 at stride 1 would allow the identity. This is kept for checkpoint
      compatibility with RT-DETR's weights (inherited from PaddleDetection, see its issue #8487);
      it is why timm's ``resnet18d`` / ``resnet34d`` have 4,224 fewer parameters.

    Stages, as ``out_indices``: 0..3 with strides 4, 8, 16, 32 and ``base_channels * expansion``
    channels (R18/R34: 64, 128, 256, 512; R50/R101: 256, 512, 1024, 2048). RT-DETR uses
    ``out_indices=(1, 2, 3)``.

    Frozen BatchNorm: ``freeze_norm=True`` turns every BatchNorm into a
    :class:`~mmbackbones.models.layers.FrozenBatchNorm2d` whose statistics *and* affine
    parameters are buffers, exactly RT-DETR's default; the state dict keys do not change, so
    weights load either way. Our default is ``False``: mmdet's way to the same forward pass,
    ``norm_cfg=dict(type='BN', requires_grad=False)`` with ``norm_eval=True``, keeps every
    mmdet knob (SyncBN, GN, ``norm_eval``) meaningful, and the configs may opt in. The only
    differences are the parameter count (R50: 23,527,264 vs 23,474,016 with frozen norms) and
    that frozen norms stay frozen whatever ``norm_eval`` says.

    Args:
        depth (int, optional): 18, 34, 50 or 101. Default: None (use ``arch``).
        arch (str | dict, optional): ``'R18'``, ``'R34'``, ``'R50'``, ``'R101'`` or a dict with
            ``block`` (``'basic'`` / ``'bottleneck'``), ``stage_blocks`` and optionally
            ``stem_channels`` (default [32, 32, 64]) and ``base_channels`` (default
            [64, 128, 256, 512], one per stage). Default: None (use ``depth``).
        freeze_norm (bool): Replace every BatchNorm by a frozen one (see above). Needs a
            BatchNorm ``norm_cfg`` (BN or SyncBN). Default: False.
        conv_cfg (dict, optional): Conv layer config. Default: None (Conv2d).
        act_cfg (dict): Activation config. Default: ``dict(type='ReLU', inplace=True)``.

    The other arguments are :class:`BaseBackbone`'s, with these defaults: ``in_channels=3``,
    ``num_stages=4``, ``out_indices=(0, 1, 2, 3)``, ``frozen_stages=-1`` (RT-DETR's
    ``freeze_at=0`` is ``frozen_stages=0``), ``norm_cfg=dict(type='BN', requires_grad=True)``,
    ``norm_eval=True``, ``plugins=None`` (at ``position`` ``'after_conv1'``, ``'after_conv2'``
    or, bottleneck only, ``'after_conv3'``, in every block of the chosen stages),
    ``with_cp=False`` (per block), ``channels_last=True``, ``fuse_bn_eval=True``,
    ``init_cfg=None`` (Kaiming for convs, constant 1 for norms).

    Example:
        >>> import torch
        >>> from mmbackbones.models import PResNet
        >>> model = PResNet(depth=50, out_indices=(1, 2, 3)).eval()
        >>> for out in model(torch.rand(1, 3, 64, 64)):
        ...     print(tuple(out.shape))
        (1, 512, 8, 8)
        (1, 1024, 4, 4)
        (1, 2048, 2, 2)
        >>> model.out_channels, model.out_strides
        ((512, 1024, 2048), (8, 16, 32))
    """

    arch_settings = PRESNET_ARCHS
    depth_settings = {18: 'R18', 34: 'R34', 50: 'R50', 101: 'R101'}
    arch_schema = ArchSchema(
        required=dict(block=OneOf(BLOCK_TYPES), stage_blocks=ListOf(Int(min=1))),
        optional=dict(stem_channels=([32, 32, 64], ListOf(Int(min=1), per='stem conv')),
                      base_channels=([64, 128, 256, 512],
                                     ListOf(Int(min=1), length='stage_blocks'))))
    plugin_positions = ('after_conv1', 'after_conv2', 'after_conv3')

    def __init__(self, depth: Optional[int] = None, arch: Union[str, ArchSpec, None] = None,
                 in_channels: int = 3, num_stages: int = 4,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 freeze_norm: bool = False, conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU', inplace=True), norm_eval: bool = True,
                 plugins: Optional[List[dict]] = None, with_cp: bool = False,
                 channels_last: bool = True, fuse_bn_eval: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        spec = self.resolve_arch(arch, depth)
        check_norm_cfg('PResNet', norm_cfg)
        check_layer_cfgs('PResNet', conv_cfg=conv_cfg, act_cfg=act_cfg)
        check_freeze_norm('PResNet', freeze_norm, norm_cfg)
        init_cfg = scratch_init_cfg(init_cfg, pretrained)
        super().__init__(max_stages=len(spec['stage_blocks']), in_channels=in_channels,
                         num_stages=num_stages,
                         out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp, channels_last=channels_last, fuse_bn_eval=fuse_bn_eval, plugins=plugins,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.arch = spec
        self.freeze_norm = freeze_norm
        kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)

        stem, channels = [], in_channels
        for i, width in enumerate(spec['stem_channels']):
            stem.append(FoldableConvModule(channels, width, 3, stride=2 if i == 0 else 1,
                                           padding=1, **kw))
            channels = width
        self.stem = nn.Sequential(*stem, nn.MaxPool2d(3, stride=2, padding=1))

        bottleneck = spec['block'] == 'bottleneck'
        expansion = EXPANSION[spec['block']]
        stride = 4
        for i in range(self.num_stages):
            width = spec['base_channels'][i]
            stage_stride = 1 if i == 0 else 2
            blocks = []
            for b in range(spec['stage_blocks'][i]):
                blocks.append(ResNetVdBlock(
                    channels, width, stage_stride if b == 0 else 1, bottleneck=bottleneck,
                    projection=b == 0,  # every stage, stage 1 included: see the class docstring
                    plugins=self.stage_plugins(i), with_cp=with_cp, **kw))
                channels = width * expansion
            stride *= stage_stride
            self.add_stage(nn.Sequential(*blocks), channels, stride)
        if freeze_norm:
            freeze_batch_norm(self)
        self.init_conventions()

    @classmethod
    def arch_depth(cls, spec: ArchSpec) -> int:
        """Weighted layers on the main path: the stem (counted as 1, as ResNet does), the convs
        of every block, and the classifier."""
        return (3 if spec['block'] == 'bottleneck' else 2) * sum(spec['stage_blocks']) + 2

    @classmethod
    def arch_from_state_dict(cls, state_dict: Dict[str, torch.Tensor]) -> Union[str, ArchSpec]:
        """The named arch (or a custom dict) of a PResNet state dict in our key names."""
        def count(pattern: str) -> int:
            found = {int(m[1]) for k in state_dict for m in [re.match(pattern, k)] if m}
            return max(found) + 1 if found else 0

        num_stages = count(r'stages\.(\d+)\.')
        if num_stages == 0 or 'stem.0.conv.weight' not in state_dict:
            raise ValueError('PResNet: state dict has no stem.0 / stages.N keys; is it a PResNet '
                             'state dict in mmbackbones key names?')
        spec = dict(
            block='bottleneck' if 'stages.0.0.conv3.conv.weight' in state_dict else 'basic',
            stage_blocks=[count(rf'stages\.{i}\.(\d+)\.') for i in range(num_stages)],
            stem_channels=[int(state_dict[f'stem.{i}.conv.weight'].shape[0])
                           for i in range(count(r'stem\.(\d+)\.conv\.weight'))],
            base_channels=[int(state_dict[f'stages.{i}.0.conv1.conv.weight'].shape[0])
                           for i in range(num_stages)])
        for name, named in cls.arch_settings.items():
            if cls.check_arch(named) == spec:
                return name
        return cls.check_arch(spec)
