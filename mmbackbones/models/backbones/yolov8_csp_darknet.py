"""YOLOv8 CSPDarknet backbone (C2f stages, SPPF), ultralytics' layers 0-9."""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..layers.conv_module import FoldableConvModule
from mmdet.registry import MODELS
from torch import nn

from ..layers import SPPF, C2f, Focus, yolo_conv
from .arch_schema import ArchSchema, Int, ListOf, Number
from .base import (ArchSpec, BaseBackbone, check_bool, check_choice, check_int, check_layer_cfgs,
                   check_norm_cfg)

#: The unscaled network (yolov8.yaml, rows 0-9): stem width, the four stage widths and the C2f
#: repeats. ``last_stage_channels`` replaces the 1024 (ultralytics' ``max_channels``).
BASE_STEM_CHANNELS = 64
BASE_STAGE_CHANNELS = (128, 256, 512)
#: yolov8.yaml ``scales``: depth multiple, width multiple, max_channels.
YOLOV8_ARCHS = {
    'n': dict(deepen_factor=0.33, widen_factor=0.25, last_stage_channels=1024),
    's': dict(deepen_factor=0.33, widen_factor=0.50, last_stage_channels=1024),
    'm': dict(deepen_factor=0.67, widen_factor=0.75, last_stage_channels=768),
    'l': dict(deepen_factor=1.00, widen_factor=1.00, last_stage_channels=512),
    'x': dict(deepen_factor=1.00, widen_factor=1.25, last_stage_channels=512),
}
STEM_TYPES = ('conv', 'focus')


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round a scaled width up to a multiple of ``divisor`` (ultralytics' rule)."""
    return int(math.ceil(channels / divisor) * divisor)


def make_round(repeats: int, deepen_factor: float) -> int:
    """Scale a repeat count (ultralytics' rule: Python ``round``, at least 1; 1 stays 1)."""
    return max(round(repeats * deepen_factor), 1) if repeats > 1 else repeats


def resolve_widths_and_blocks(spec: ArchSpec) -> Tuple[int, List[int], List[int]]:
    """Stem width, the four stage widths and the four C2f repeats of a resolved arch spec."""
    widen, deepen = spec['widen_factor'], spec['deepen_factor']
    base = list(BASE_STAGE_CHANNELS) + [spec['last_stage_channels']]
    stem = make_divisible(min(BASE_STEM_CHANNELS, spec['last_stage_channels']) * widen)
    widths = [make_divisible(min(c, spec['last_stage_channels']) * widen) for c in base]
    blocks = [make_round(n, deepen) for n in spec['stage_blocks']]
    return stem, widths, blocks


@MODELS.register_module()
class YOLOv8CSPDarknet(BaseBackbone):
    """YOLOv8 CSPDarknet backbone: ultralytics' ``yolov8.yaml`` layers 0-9.

    Stem: a 3x3 stride-2 conv (``stem_type='conv'``, YOLOv8) or a Focus space-to-depth stem
    (``'focus'``, YOLOv5's slice order), both stride 2. Then four stages, each a 3x3 stride-2
    conv followed by a C2f block (with shortcuts); SPPF(k=5) closes stage 4. Every conv is
    conv + BN + SiLU.

    ``out_indices`` count stages with the stem excluded, like every mmbackbones backbone:
    0 = stage 1 (P2, stride 4), 1 = P3 (8), 2 = P4 (16), 3 = P5 (32, after SPPF). The default
    ``(1, 2, 3)`` gives P3/P4/P5, the maps YOLOv8's neck reads (layers 4, 6, 9). mmyolo's
    ``YOLOv8CSPDarknet`` counts the stem as index 0, so its default ``(2, 3, 4)`` is our
    ``(1, 2, 3)``; ``frozen_stages`` means the same in both (0 the stem, k stem + stages 1..k).

    Scales follow ultralytics' rules: width ``make_divisible(min(c, last_stage_channels) *
    widen_factor, 8)``, C2f repeats ``max(round(n * deepen_factor), 1)`` of the base
    (3, 6, 6, 3). Named scales and a custom dict take the same path.

    =====  =======  =======  ====================  =====================  ==========
    arch   deepen   widen    last_stage_channels   widths (stem, P2..P5)   repeats
    =====  =======  =======  ====================  =====================  ==========
    n      0.33     0.25     1024                  16, 32, 64, 128, 256    1, 2, 2, 1
    s      0.33     0.50     1024                  32, 64, 128, 256, 512   1, 2, 2, 1
    m      0.67     0.75     768                   48, 96, 192, 384, 576   2, 4, 4, 2
    l      1.00     1.00     512                   64, 128, 256, 512, 512  3, 6, 6, 3
    x      1.00     1.25     512                   80, 160, 320, 640, 640  3, 6, 6, 3
    =====  =======  =======  ====================  =====================  ==========

    Args:
        arch (str | dict): ``'n'``, ``'s'``, ``'m'``, ``'l'``, ``'x'``, or a dict with
            ``deepen_factor``, ``widen_factor``, ``last_stage_channels`` (pre-widen width of
            stage 4, ultralytics' ``max_channels``) and optionally ``stage_blocks`` (pre-deepen
            C2f repeats, default (3, 6, 6, 3)). Default: ``'s'``.
        stem_type (str): ``'conv'`` (3x3 stride-2 conv) or ``'focus'`` (space-to-depth, then
            a 3x3 conv). Default: ``'conv'``.
        use_depthwise (bool): Depthwise-separable 3x3 convs in the stages (the stride-2
            downsampling convs and the bottlenecks; the stem stays dense). Default: False.
        sppf_kernel_size (int): Max-pool kernel of SPPF, odd. Default: 5.
        conv_cfg (dict, optional): Conv layer config. Default: None (Conv2d).
        norm_cfg (dict): Default: ``dict(type='BN', momentum=0.03, eps=0.001)``. YOLOv8
            detection checkpoints were trained with these BN settings (ultralytics'
            ``initialize_weights``), so they are kept for checkpoint compatibility.
        act_cfg (dict): Default: ``dict(type='SiLU', inplace=False)``. Not in place: autograd
            would save a copy of each in-place SiLU's input, which makes a train step slower.

    The other arguments are :class:`BaseBackbone`'s, with these defaults: ``in_channels=3``,
    ``num_stages=4`` (SPPF only with stage 4), ``out_indices=(1, 2, 3)``, ``frozen_stages=-1``,
    ``norm_eval=False``, ``plugins=None`` (at ``position='after_bottleneck'``, after each
    bottleneck's shortcut, or ``'after_c2f'``, after the C2f's final conv), ``with_cp=False``
    (per C2f block), ``channels_last=True`` (5-10% faster on CPU for this family, see
    docs/benchmarks.md), ``fuse_bn_eval=True``, ``init_cfg=None``.

    Example:
        >>> import torch
        >>> from mmbackbones.models import YOLOv8CSPDarknet
        >>> model = YOLOv8CSPDarknet(arch='s').eval()
        >>> for out in model(torch.rand(1, 3, 128, 128)):
        ...     print(tuple(out.shape))
        (1, 128, 16, 16)
        (1, 256, 8, 8)
        (1, 512, 4, 4)
    """

    arch_settings = YOLOV8_ARCHS
    arch_schema = ArchSchema(
        required=dict(deepen_factor=Number(above=0), widen_factor=Number(above=0),
                      last_stage_channels=Int(min=1)),
        optional=dict(stage_blocks=([3, 6, 6, 3], ListOf(
            Int(min=1), length=4, note='C2f repeats before deepen_factor'))))
    plugin_positions = C2f.plugin_positions

    def __init__(self, arch: Union[str, ArchSpec] = 's', in_channels: int = 3,
                 stem_type: str = 'conv', use_depthwise: bool = False,
                 sppf_kernel_size: int = 5, num_stages: int = 4,
                 out_indices: Sequence[int] = (1, 2, 3), frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', momentum=0.03, eps=0.001),
                 act_cfg: dict = dict(type='SiLU', inplace=False), norm_eval: bool = False,
                 plugins: Optional[List[dict]] = None, with_cp: bool = False,
                 channels_last: bool = True, fuse_bn_eval: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        name = 'YOLOv8CSPDarknet'
        spec = self.resolve_arch(arch)
        check_choice(name, 'stem_type', stem_type, STEM_TYPES)
        use_depthwise = check_bool(name, 'use_depthwise', use_depthwise)
        if check_int(name, 'sppf_kernel_size', sppf_kernel_size, low=1) % 2 == 0:
            raise ValueError(f'{name}: sppf_kernel_size={sppf_kernel_size} must be odd (its '
                             f'"same" padding k // 2 keeps the map size only for odd k); YOLOv8 '
                             f'uses 5.')
        check_norm_cfg(name, norm_cfg)
        check_layer_cfgs(name, conv_cfg=conv_cfg, act_cfg=act_cfg)
        super().__init__(max_stages=4, in_channels=in_channels, num_stages=num_stages,
                         out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         channels_last=channels_last, fuse_bn_eval=fuse_bn_eval, plugins=plugins, pretrained=pretrained,
                         init_cfg=init_cfg)
        self.arch = spec
        self.stem_type = stem_type
        stem_channels, widths, blocks = resolve_widths_and_blocks(spec)
        self.stem_channels, self.stage_blocks = stem_channels, blocks[:self.num_stages]
        cfgs: Dict[str, Optional[dict]] = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                               act_cfg=act_cfg)
        if stem_type == 'conv':
            stem = FoldableConvModule(in_channels, stem_channels, 3, stride=2, padding=1, **cfgs)
        else:
            stem = Focus(in_channels, stem_channels, 3, **cfgs)
        self.stem = nn.Sequential(stem)
        channels, stride = stem_channels, 2
        for i in range(self.num_stages):
            out, stride = widths[i], stride * 2
            layers = [
                yolo_conv(channels, out, 3, 2, use_depthwise=use_depthwise, **cfgs),
                C2f(out, out, blocks[i], add_identity=True, use_depthwise=use_depthwise,
                    plugins=self.stage_plugins(i), with_cp=with_cp, **cfgs),
            ]
            if i == 3:
                layers.append(SPPF(out, out, sppf_kernel_size, **cfgs))
            self.add_stage(nn.Sequential(*layers), out, stride)
            channels = out
        self.init_conventions()

    @classmethod
    def arch_from_widths(cls, stem_channels: int, widths: Sequence[int],
                         blocks: Sequence[int]) -> str:
        """The named scale with these resolved widths and repeats (read off a checkpoint)."""
        found = (int(stem_channels), [int(w) for w in widths], [int(b) for b in blocks])
        for name, spec in cls.arch_settings.items():
            if resolve_widths_and_blocks(cls.resolve_arch(name)) == found:
                return name
        raise ValueError(f'YOLOv8CSPDarknet: widths {found[:2]} and C2f repeats {found[2]} '
                         f'match none of the scales {", ".join(cls.arch_settings)}; build it '
                         f'with a custom arch dict.')
