"""ShuffleNetV2 backbone (torchvision's channels)."""
from typing import List, Optional, Sequence, Union

from ..layers.conv_module import FoldableConvModule
from mmdet.registry import MODELS
from torch import nn

from ..layers import PluginSequence, ShuffleUnit
from .base import ArchSpec, BaseBackbone, check_norm_cfg

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
        in_channels (int): Input channels. Default: 3.
        num_stages (int): Stages to build, 1-4 (4 includes conv5). Default: 4.
        out_indices (Sequence[int]): Default: (0, 1, 2).
        frozen_stages (int): -1 none, 0 the stem, k the stem and stages 1..k. Default: -1.
        conv_cfg, norm_cfg, act_cfg: mmcv layer configs. Defaults: Conv2d, BN, ReLU.
        norm_eval (bool): Default: False.
        plugins (list[dict], optional): mmdet plugins at ``position='after_block'`` (after each
            unit's channel shuffle; after conv5 for stage 3).
        with_cp (bool): Checkpoint each unit. Default: False.
        channels_last (bool): Run channels-last inside (outputs stay NCHW): same results,
            faster on CPU (docs/benchmarks.md). Default: True.
        fuse_bn_eval (bool): Fold BN into the convs in eval mode under ``no_grad``, as
            described in :class:`BaseBackbone`. Default: True.
        init_cfg (dict | list[dict], optional): Init config.

    Example:
        >>> import torch
        >>> from mmbackbones.models import ShuffleNetV2
        >>> model = ShuffleNetV2(widen_factor=1.0, out_indices=(0, 1, 2, 3)).eval()
        >>> for out in model(torch.rand(1, 3, 224, 224)):
        ...     print(tuple(out.shape))
        (1, 116, 28, 28)
        (1, 232, 14, 14)
        (1, 464, 7, 7)
        (1, 1024, 7, 7)
    """

    arch_settings = SHUFFLENETV2_ARCHS
    arch_required_keys = ('stem_channels', 'stage_channels', 'conv5_channels', 'stage_blocks')
    plugin_positions = ('after_block', )

    def __init__(self, widen_factor: float = 1.0, arch: Union[str, ArchSpec, None] = None,
                 in_channels: int = 3, num_stages: int = 4,
                 out_indices: Sequence[int] = (0, 1, 2), frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None, norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'), norm_eval: bool = False,
                 plugins: Optional[List[dict]] = None, with_cp: bool = False,
                 channels_last: bool = True, fuse_bn_eval: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if arch is None:
            if widen_factor not in WIDEN_FACTORS:
                raise ValueError(f'ShuffleNetV2: widen_factor {widen_factor!r} is not supported; '
                                 f'choose one of 0.5, 1.0, 1.5, 2.0, or pass arch=.')
            arch = WIDEN_FACTORS[widen_factor]
        spec = self.resolve_arch(arch)
        check_norm_cfg('ShuffleNetV2', norm_cfg)
        super().__init__(max_stages=4, num_stages=num_stages, out_indices=out_indices,
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

    @classmethod
    def check_arch(cls, spec: ArchSpec) -> ArchSpec:
        widths = spec['stage_channels']
        if (not isinstance(widths, (list, tuple)) or len(widths) != 3
                or not all(isinstance(w, int) and w > 0 and w % 2 == 0 for w in widths)):
            raise ValueError(f"ShuffleNetV2: arch 'stage_channels' must be 3 positive even ints, "
                             f'got {widths!r}.')
        blocks = spec['stage_blocks']
        if (not isinstance(blocks, (list, tuple)) or len(blocks) != 3
                or not all(isinstance(b, int) and b > 0 for b in blocks)):
            raise ValueError(f"ShuffleNetV2: arch 'stage_blocks' must be 3 positive ints, got "
                             f'{blocks!r}.')
        for key in ('stem_channels', 'conv5_channels'):
            if not isinstance(spec[key], int) or spec[key] <= 0:
                raise ValueError(f'ShuffleNetV2: arch {key!r} must be a positive int, got '
                                 f'{spec[key]!r}.')
        return spec
