"""VanillaNet backbone (Chen et al., 2023), with its deploy re-parameterisation."""
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from ..layers.conv_module import FoldableConvModule
from mmdet.registry import MODELS
from torch import nn

from ..layers import (PluginSequence, SeriesActivation, apply_plugins, conv_from_weights,
                      fuse_conv_bn, maybe_checkpoint, merge_conv_then_pointwise)
from .arch_schema import ArchSchema, Int, ListOf, OneOf
from .base import ArchSpec, BaseBackbone, check_bool, check_int, check_norm_cfg

_W13 = [512, 512, 1024] + [2048] * 7 + [4096, 4096]
_S13 = [1, 2, 2, 1, 1, 1, 1, 1, 1, 2, 1]

#: Named variants (the official ``models/vanillanet.py``): ``dims`` are the stem width then each
#: block's output width; ``strides`` one per block. ``ada_pool`` (the 1.5x ImageNet model at 224
#: px) pools strided blocks to a fixed size, 0 meaning a plain max-pool, and makes the stem
#: stride 3 with padding 1.
VANILLANET_ARCHS: Dict[str, ArchSpec] = {
    'vanillanet_5': dict(dims=[512, 1024, 2048, 4096], strides=[2, 2, 2]),
    'vanillanet_6': dict(dims=[512, 1024, 2048, 4096, 4096], strides=[2, 2, 2, 1]),
    'vanillanet_7': dict(dims=[512, 512, 1024, 2048, 4096, 4096], strides=[1, 2, 2, 2, 1]),
    'vanillanet_8': dict(dims=[512, 512, 1024, 2048, 2048, 4096, 4096],
                         strides=[1, 2, 2, 1, 2, 1]),
    'vanillanet_9': dict(dims=[512, 512, 1024] + [2048] * 3 + [4096, 4096],
                         strides=[1, 2, 2, 1, 1, 2, 1]),
    'vanillanet_10': dict(dims=[512, 512, 1024] + [2048] * 4 + [4096, 4096],
                          strides=[1, 2, 2, 1, 1, 1, 2, 1]),
    'vanillanet_11': dict(dims=[512, 512, 1024] + [2048] * 5 + [4096, 4096],
                          strides=[1, 2, 2, 1, 1, 1, 1, 2, 1]),
    'vanillanet_12': dict(dims=[512, 512, 1024] + [2048] * 6 + [4096, 4096],
                          strides=[1, 2, 2, 1, 1, 1, 1, 1, 2, 1]),
    'vanillanet_13': dict(dims=_W13, strides=_S13),
    'vanillanet_13_x1_5': dict(dims=[w * 3 // 2 for w in _W13], strides=_S13),
    'vanillanet_13_x1_5_ada_pool': dict(dims=[w * 3 // 2 for w in _W13], strides=_S13,
                                        ada_pool=[0, 38, 19, 0, 0, 0, 0, 0, 0, 10, 0]),
}

DETECTION_STRIDES = (4, 8, 16, 32)


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm_cfg: Optional[dict],
              stride: int = 1, padding: int = 0) -> FoldableConvModule:
    """Conv (with bias) + norm, no activation.

    The bias before the norm is redundant but kept: official checkpoints carry it.
    """
    with warnings.catch_warnings():  # mmcv warns about exactly that bias
        warnings.filterwarnings('ignore', message='Unnecessary conv bias')
        return FoldableConvModule(in_channels, out_channels, kernel_size, stride=stride,
                                  padding=padding, bias=True, norm_cfg=norm_cfg, act_cfg=None)


class DeepTrainingReLU(nn.LeakyReLU):
    """``leaky_relu(x, act_learn)``: VanillaNet's deep-training non-linearity.

    A ReLU at ``act_learn=0``, the identity at 1, where the convs on both sides merge into one.
    The slope is set through the backbone's ``act_learn`` attribute.
    """


class VanillaBlock(nn.Module):
    """One VanillaNet block (a stage of :class:`VanillaNet`).

    Train form: ``1x1 conv + norm -> leaky_relu(act_learn) -> 1x1 conv + norm -> pool ->
    SeriesActivation -> [after_block plugins]``. Deploy form: the two convs are one biased
    1x1 conv and the activation's norm is folded into its depthwise conv.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Max-pool stride after the convs (1: no pooling).
        act_num (int): SeriesActivation radius.
        ada_pool (int): When > 0 and ``stride > 1``, an adaptive max-pool to this size replaces
            the max-pool. Default: 0.
        norm_cfg (dict, optional): Norm layer config.
        act_learn (float): The leaky-relu slope. Default: 1.0.
        deploy (bool): Build the deploy form. Default: False.
        plugins (list[dict], optional): Plugin configs at ``'after_block'``.
        with_cp (bool): Checkpoint the block's activations. Default: False.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, act_num: int, *,
                 ada_pool: int = 0, norm_cfg: Optional[dict] = None, act_learn: float = 1.0,
                 deploy: bool = False, plugins: Optional[List[dict]] = None,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        if deploy:
            self.conv = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.conv1 = conv_norm(in_channels, in_channels, 1, norm_cfg)
            self.leaky_relu = DeepTrainingReLU(act_learn)
            self.conv2 = conv_norm(in_channels, out_channels, 1, norm_cfg)
        if stride == 1:
            self.pool = nn.Identity()
        elif ada_pool:
            self.pool = nn.AdaptiveMaxPool2d((ada_pool, ada_pool))
        else:
            self.pool = nn.MaxPool2d(stride)
        self.act = SeriesActivation(out_channels, act_num, norm_cfg=norm_cfg, deploy=deploy)
        self.plugins_after_block = PluginSequence.build(plugins, out_channels)

    @property
    def deploy(self) -> bool:
        return not hasattr(self, 'conv1')

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            x = self.conv(x)
        else:
            x = self.conv2(self.leaky_relu(self.conv1(x)))
        x = self.act(self.pool(x))
        return apply_plugins(self.plugins_after_block, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maybe_checkpoint(self._forward, x, self.with_cp)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Merge conv1 + norm1 + conv2 + norm2 into one conv and fold the activation's norm."""
        if self.deploy:
            return
        first = fuse_conv_bn(self.conv1.conv.weight, self.conv1.conv.bias, self.conv1.norm)
        second = fuse_conv_bn(self.conv2.conv.weight, self.conv2.conv.bias, self.conv2.norm)
        weight, bias = merge_conv_then_pointwise(first, second)
        self.conv = conv_from_weights(weight, bias, like=self.conv1.conv)
        del self.conv1, self.leaky_relu, self.conv2
        self.act.switch_to_deploy()


@MODELS.register_module()
class VanillaNet(BaseBackbone):
    """VanillaNet backbone: a stem and a plain stack of blocks, no shortcut, no attention.

    Stem: 4x4/4 conv + norm, ``leaky_relu(act_learn)``, 1x1 conv + norm, SeriesActivation
    (stride 4; 3 with ``ada_pool``). Each block is 1x1 conv + norm, ``leaky_relu(act_learn)``,
    1x1 conv + norm, a max-pool when its stride is 2, and a SeriesActivation
    (:class:`VanillaBlock`). **Every block is a stage** for ``out_indices``; the stem is not.

    Stage indices of the strides 4 / 8 / 16 / 32 (the last block at each stride, as the official
    detection configs choose; '-' where no block has that stride):

    ============================  =====  =====  ======  ======  ====================
    arch                          s4     s8     s16     s32     default out_indices
    ============================  =====  =====  ======  ======  ====================
    vanillanet_5                  \\-     0      1       2       (0, 1, 2)
    vanillanet_6                  \\-     0      1       3       (0, 1, 3)
    vanillanet_7                  0      1      2       4       (0, 1, 2, 4)
    vanillanet_8                  0      1      3       5       (0, 1, 3, 5)
    vanillanet_9                  0      1      4       6       (0, 1, 4, 6)
    vanillanet_10                 0      1      5       7       (0, 1, 5, 7)
    vanillanet_11                 0      1      6       8       (0, 1, 6, 8)
    vanillanet_12                 0      1      7       9       (0, 1, 7, 9)
    vanillanet_13, 13_x1_5        0      1      8       10      (0, 1, 8, 10)
    vanillanet_13_x1_5_ada_pool   strides 3 / 6 / 12 / 24 at 0 / 1 / 8 / 10 (see below)
    ============================  =====  =====  ======  ======  ====================

    :meth:`out_indices_for_strides` computes these for any arch. The official Mask R-CNN uses
    ``(0, 1, 8, 10)`` of vanillanet_13 with ``act_num=4``, its RetinaNet ``(1, 8, 10)``. The
    ``ada_pool`` variant is an ImageNet model: its adaptive pools give fixed 38/19/10 sizes, so
    its nominal strides hold only at 224 px and it does not suit detection.

    **act_learn and deploy.** ``act_learn`` (settable attribute) is the slope of the leaky ReLUs
    between the two convs of the stem and of every block. Official training ramps it from 0
    (ReLU) to 1 (identity), see ``VanillaNetActLearnHook``. At 1, :meth:`switch_to_deploy` folds
    every norm and merges each pair of convs into one, which gives the same outputs (to float
    rounding) with about half the parameters; ``deploy=True`` builds that form directly (official
    deploy-form checkpoints load into it: same key names).

    Args:
        arch (str | dict): A named variant above or a dict with ``dims`` (stem width then one
            width per block), ``strides`` (one per block, each 1 or 2) and optionally ``act_num``
            (3) and ``ada_pool`` (None, or one size per block). Default: ``'vanillanet_5'``.
        act_num (int, optional): Overrides the arch's SeriesActivation radius; the official
            detection models use 4. Default: None (the arch's, 3 for named variants).
        act_learn (float): Initial leaky-relu slope, in [0, 1]. Default: 1.0.
        deploy (bool): Build the deploy form (no norms; one conv per block). Default: False.

    The other arguments are :class:`BaseBackbone`'s, with these defaults: ``in_channels=3``,
    ``num_stages=None`` (every block), ``out_indices=None`` (the stride 4/8/16/32 stages of the
    table above), ``frozen_stages=-1`` (k: the stem and blocks 1..k),
    ``norm_cfg=dict(type='BN', eps=1e-6, requires_grad=True)`` (VanillaNet's eps; deploy needs
    a BatchNorm type), ``norm_eval=False``, ``plugins=None`` (at ``position='after_block'``,
    after a block's SeriesActivation), ``with_cp=False`` (per block), ``channels_last=True``,
    ``fuse_bn_eval=True``, ``init_cfg=None`` (truncated normal, std 0.02 and bias 0, for convs
    as the official code; constant 1 for norms).

    Example:
        >>> import torch
        >>> from mmbackbones.models import VanillaNet
        >>> model = VanillaNet(arch='vanillanet_7').eval()
        >>> outs = model(torch.rand(1, 3, 64, 64))
        >>> for out in outs:
        ...     print(tuple(out.shape))
        (1, 512, 16, 16)
        (1, 1024, 8, 8)
        (1, 2048, 4, 4)
        (1, 4096, 2, 2)
        >>> model.out_indices, model.out_strides
        ((0, 1, 2, 4), (4, 8, 16, 32))
        >>> model.switch_to_deploy()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 64))][-1]
        (1, 4096, 2, 2)
    """

    arch_settings = VANILLANET_ARCHS
    arch_schema = ArchSchema(
        required=dict(dims=ListOf(Int(min=1), min_length=2, note='the stem width, then one per '
                                                                 'block'),
                      strides=ListOf(OneOf((1, 2)), length='dims', offset=-1, per='block')),
        optional=dict(act_num=(3, Int(min=1)),
                      ada_pool=(None, ListOf(Int(min=0), length='strides', per='block',
                                             note='0 = plain max-pool', nullable=True))))
    plugin_positions = ('after_block', )

    def __init__(self, arch: Union[str, ArchSpec] = 'vanillanet_5', act_num: Optional[int] = None,
                 act_learn: float = 1.0, deploy: bool = False, in_channels: int = 3,
                 num_stages: Optional[int] = None, out_indices: Optional[Sequence[int]] = None,
                 frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN', eps=1e-6, requires_grad=True),
                 norm_eval: bool = False, plugins: Optional[List[dict]] = None,
                 with_cp: bool = False, channels_last: bool = True, fuse_bn_eval: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        spec = self.resolve_arch(arch)
        if act_num is not None:
            check_int('VanillaNet', 'act_num', act_num, low=1,
                      valid='a positive int: 3, or 4 as in the official detection models')
            spec = self.check_arch(dict(spec, act_num=act_num))
        deploy = check_bool('VanillaNet', 'deploy', deploy)
        check_norm_cfg('VanillaNet', norm_cfg)
        max_stages = len(spec['strides'])
        num_stages = max_stages if num_stages is None else num_stages
        if out_indices is None:
            out_indices = self._default_out_indices(spec, num_stages)
        if init_cfg is None and pretrained is None:
            init_cfg = [dict(type='TruncNormal', layer='Conv2d', std=.02, bias=0.),
                        dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]
        super().__init__(max_stages=max_stages, in_channels=in_channels, num_stages=num_stages,
                         out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         channels_last=channels_last, fuse_bn_eval=fuse_bn_eval, plugins=plugins, pretrained=pretrained,
                         init_cfg=init_cfg)
        self.arch = spec
        self._deploy = bool(deploy)
        self._act_learn = self._check_act_learn(act_learn)
        dims, act_num = spec['dims'], spec['act_num']
        ada_pool = spec['ada_pool'] or [0] * max_stages
        stem_stride, stem_padding = (3, 1) if spec['ada_pool'] else (4, 0)
        if deploy:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, dims[0], 4, stride=stem_stride, padding=stem_padding),
                SeriesActivation(dims[0], act_num, deploy=True))
        else:
            self.stem = nn.Sequential(
                conv_norm(in_channels, dims[0], 4, norm_cfg, stride=stem_stride,
                          padding=stem_padding),
                DeepTrainingReLU(act_learn),
                conv_norm(dims[0], dims[0], 1, norm_cfg),
                SeriesActivation(dims[0], act_num, norm_cfg=norm_cfg))
        stride = stem_stride
        for i in range(self.num_stages):
            stride *= spec['strides'][i]
            block = VanillaBlock(dims[i], dims[i + 1], spec['strides'][i], act_num,
                                 ada_pool=ada_pool[i], norm_cfg=norm_cfg, act_learn=act_learn,
                                 deploy=deploy, with_cp=with_cp,
                                 plugins=self.stage_plugins(i).get('after_block'))
            self.add_stage(block, dims[i + 1], stride)
        self.init_conventions()

    # ------------------------------------------------------------------ architecture
    @staticmethod
    def _stage_strides(spec: ArchSpec) -> List[int]:
        stride, out = (3 if spec['ada_pool'] else 4), []
        for s in spec['strides']:
            stride *= s
            out.append(stride)
        return out

    @classmethod
    def _default_out_indices(cls, spec: ArchSpec, num_stages: int) -> Tuple[int, ...]:
        strides = cls._stage_strides(spec)[:num_stages]
        last = {s: i for i, s in enumerate(strides)}
        wanted = [s for s in DETECTION_STRIDES if s in last] or sorted(last)
        return tuple(sorted(last[s] for s in wanted))

    @classmethod
    def out_indices_for_strides(cls, arch: Union[str, ArchSpec],
                                strides: Sequence[int] = DETECTION_STRIDES) -> Tuple[int, ...]:
        """The stage index of the last block at each wanted stride, for ``out_indices``.

        Example:
            >>> VanillaNet.out_indices_for_strides('vanillanet_13')
            (0, 1, 8, 10)
            >>> VanillaNet.out_indices_for_strides('vanillanet_13', (8, 16, 32))  # RetinaNet
            (1, 8, 10)
        """
        spec = cls.resolve_arch(arch)
        available = cls._stage_strides(spec)
        last = {s: i for i, s in enumerate(available)}
        missing = [s for s in strides if s not in last]
        if missing:
            raise ValueError(f'VanillaNet: arch {arch!r} has no block at stride(s) {missing}; its '
                             f'blocks have strides {sorted(last)} (the stem, stride '
                             f'{available[0] // spec["strides"][0]}, is not a stage).')
        return tuple(last[s] for s in strides)

    # ------------------------------------------------------------------ act_learn and deploy
    @staticmethod
    def _check_act_learn(value: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            raise (ValueError if number else TypeError)(
                f'VanillaNet: act_learn={value!r} must be a number in [0, 1] (0: ReLU at the '
                f'start of training, 1: identity, deployable).')
        return float(value)

    @property
    def deploy(self) -> bool:
        """True once the model is in deploy form (built with ``deploy=True`` or switched)."""
        return self._deploy

    @property
    def act_learn(self) -> float:
        """The leaky-relu slope between each pair of convs (0: ReLU, 1: identity)."""
        return self._act_learn

    @act_learn.setter
    def act_learn(self, value: float) -> None:
        value = self._check_act_learn(value)
        if self._deploy and value != 1.0:
            raise ValueError(f'VanillaNet: act_learn={value} cannot be set on a deploy-form model, '
                             f'whose merged convs assume act_learn=1.')
        self._act_learn = value
        for module in self.modules():
            if isinstance(module, DeepTrainingReLU):
                module.negative_slope = value

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Re-parameterise in place into the deploy form (a no-op if already deployed).

        Folds every norm into its conv, merges the stem's and each block's two convs into one
        and folds each SeriesActivation's norm. Exact (to float rounding) only at
        ``act_learn == 1``, where the leaky ReLU between the merged convs is the identity, so any
        other value is refused.
        """
        if self._deploy:
            return
        if self._act_learn != 1.0:
            raise RuntimeError(
                f'VanillaNet.switch_to_deploy: act_learn is {self._act_learn:g}, not 1. The '
                f'leaky ReLU between the convs to be merged is then non-linear, and the deploy '
                f'form would compute something else. Finish the act_learn ramp (train with '
                f'VanillaNetActLearnHook until it reaches 1), or set model.act_learn = 1.0 only '
                f'if the weights were trained that way.')
        conv1, conv2, act = self.stem[0], self.stem[2], self.stem[3]
        weight, bias = merge_conv_then_pointwise(
            fuse_conv_bn(conv1.conv.weight, conv1.conv.bias, conv1.norm),
            fuse_conv_bn(conv2.conv.weight, conv2.conv.bias, conv2.norm))
        act.switch_to_deploy()
        self.stem = nn.Sequential(conv_from_weights(weight, bias, like=conv1.conv), act)
        for block in self.stages:
            block.switch_to_deploy()
        self._deploy = True
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self.train(self.training)  # re-apply frozen stages to the new modules
