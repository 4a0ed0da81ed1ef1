"""ShuffleNetV2 backbone (torchvision's channels)."""
from typing import List, Optional, Sequence, Union

from ..layers.conv_module import FoldableConvModule
from mmdet.registry import MODELS
from torch import nn

from ..layers import PluginSequence, ShuffleUnit
from .arch_schema import ArchSchema, Int, ListOf
from .base import ArchSpec, BaseBackbone, check_layer_cfgs, check_norm_cfg

#: torchvision's ``stages_out_channels``; x2.0's conv5 is 2048, not 1024 (checkpoint
#: compatibility: a classic pitfall, see PaddleDetection #6138).
SHUFFLENETV2_ARCHS = {
    'x0_5': dict(stem_channels=24, stage_channels=[48, 96, 192], conv5_channels=1024,
                 stage_blocks=[4, 8, 4]),
    'x1_0': dict(stem_channels=24, stage_channels=[116, 232, 464], conv5_channels=1024,
                 stage_blocks=[4, 8, 4]),
    'x1_5': dict(stem_channels=24, stage_channels=[176, 352, 704], conv5_channels=1024,
                 stage_blocks=[4, 8, 4]),
    'x2_0': dict(stem_channels=24, stage_channels=[244, 488, 976], conv5_channels=2048,
                 stage_blocks=[4, 8, 4]),
}
WIDEN_FACTORS = {0.5: 'x0_5', 1.0: 'x1_0', 1.5: 'x1_5', 2.0: 'x2_0'}


@MODELS.register_module()
class ShuffleNetV2(BaseBackbone):
    """ShuffleNetV2 backbone.

    Stem: 3x3/2 conv + BN + ReLU and a 3x3/2 max-pool (stride 4). Stages, as ``out_indices``:
    0 = stage2 (stride 8), 1 = stage3 (16), 2 = stage4 (32), 3 = conv5 (1x1 conv, stride 32).
    The default ``out_indices=(0, 1, 2)`` gives strides 8/16/32 for detection (mmpretrain's code
    default is (3,), conv5 only). Unlike mmpretrain, a frozen stem really goes to eval mode.

    Args:
        widen_factor (float): 0.5, 1.0, 1.5 or 2.0; selects torchvision's channels.
            Default: 1.0.
        arch (str | dict, optional): ``'x0_5'`` ... ``'x2_0'`` or a dict with ``stem_channels``,
            ``stage_channels`` (3 even widths), ``conv5_channels``, ``stage_blocks``. Overrides
            ``widen_factor`` when given.
        conv_cfg, act_cfg: mmcv layer configs. Defaults: Conv2d, ReLU.

    The other arguments are :class:`BaseBackbone`'s, with these defaults: ``in_channels=3``,
    ``num_stages=4`` (4 includes conv5), ``out_indices=(0, 1, 2)``, ``frozen_stages=-1``,
    ``norm_cfg=dict(type='BN')``, ``norm_eval=False``, ``plugins=None`` (at
    ``position='after_block'``: after each unit's channel shuffle; after conv5 for stage 3),
    ``with_cp=False`` (per unit), ``channels_last=True``, ``fuse_bn_eval=True``,
    ``init_cfg=None``.

    Example:
        >>> import torch
        >>> from mmbackbones.models import ShuffleNetV2
        >>> model = ShuffleNetV2(widen_factor=1.0, out_indices=(0, 1, 2, 3)).eval()
        >>> for out in model(torch.rand(1, 3, 64, 64)):
        ...     print(tuple(out.shape))
        (1, 116, 8, 8)
        (1, 232, 4, 4)
        (1, 464, 2, 2)
        (1, 1024, 2, 2)
    """

    arch_settings = SHUFFLENETV2_ARCHS
    arch_schema = ArchSchema(required=dict(
        stem_channels=Int(min=1), stage_channels=ListOf(Int(min=1, even=True), length=3),
        conv5_channels=Int(min=1), stage_blocks=ListOf(Int(min=1), length=3)))
    plugin_positions = ('after_block', )

    def __init__(self, widen_factor: float = 1.0, arch: Union[str, ArchSpec, None] = None,
                 in_channels: int = 3, num_stages: int = 4,
                 out_indices: Sequence[int] = (0, 1, 2), frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None, norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'), norm_eval: bool = False,
                 plugins: Optional[List[dict]] = None, with_cp: bool = False,
                 channels_last: bool = True, fuse_bn_eval: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if isinstance(widen_factor, bool) or not isinstance(widen_factor, (int, float)):
            raise TypeError(f'ShuffleNetV2: widen_factor must be a number, one of 0.5, 1.0, '
                            f'1.5, 2.0; got {widen_factor!r} ({type(widen_factor).__name__}).')
        if widen_factor not in WIDEN_FACTORS:
            raise ValueError(f'ShuffleNetV2: widen_factor {widen_factor!r} is not supported; '
                             f'choose one of 0.5, 1.0, 1.5, 2.0, or pass arch=.')
        if arch is None:
            arch = WIDEN_FACTORS[widen_factor]
        spec = self.resolve_arch(arch)
        check_norm_cfg('ShuffleNetV2', norm_cfg)
        check_layer_cfgs('ShuffleNetV2', conv_cfg=conv_cfg, act_cfg=act_cfg)
        super().__init__(max_stages=4, in_channels=in_channels, num_stages=num_stages,
                         out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         channels_last=channels_last, fuse_bn_eval=fuse_bn_eval, plugins=plugins, pretrained=pretrained,
                         init_cfg=init_cfg)
        self.arch = spec
        kw = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        stem = spec['stem_channels']
        self.stem = nn.Sequential(
            FoldableConvModule(in_channels, stem, 3, stride=2, padding=1, **kw),
            nn.MaxPool2d(3, stride=2, padding=1))
        channels, stride = stem, 4
        for i in range(min(self.num_stages, 3)):
            out, stride = spec['stage_channels'][i], stride * 2
            plugins_i = self.stage_plugins(i).get('after_block')
            units = [ShuffleUnit(channels if b == 0 else out, out, 2 if b == 0 else 1,
                                 plugins=plugins_i, with_cp=with_cp, **kw)
                     for b in range(spec['stage_blocks'][i])]
            self.add_stage(nn.Sequential(*units), out, stride)
            channels = out
        if self.num_stages == 4:
            conv5 = [FoldableConvModule(channels, spec['conv5_channels'], 1, **kw)]
            plugins_5 = PluginSequence.build(self.stage_plugins(3).get('after_block'),
                                             spec['conv5_channels'])
            if plugins_5 is not None:
                conv5.append(plugins_5)
            self.add_stage(nn.Sequential(*conv5), spec['conv5_channels'], stride)
        self.init_conventions()
