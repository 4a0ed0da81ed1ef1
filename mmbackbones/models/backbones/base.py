"""The mmdet backbone conventions, owned in one place.

Every mmbackbones backbone subclasses :class:`BaseBackbone`. A backbone file then holds only its
architecture table, its blocks and how its stages are assembled; this module owns what mmdet's
ResNet users expect everywhere:

* ``arch`` / ``depth`` resolution with clear errors (custom dicts are checked against the
  family's :class:`~mmbackbones.models.backbones.arch_schema.ArchSchema`),
* ``num_stages``, ``out_indices`` validation (the stem is never a stage),
* ``frozen_stages`` (-1 nothing, 0 the stem, k the stem and stages 1..k) and ``norm_eval``,
  re-applied on every ``train()`` call,
* frozen stages run without recording an autograd graph (no stored activations),
* ``plugins`` in mmdet's format, validated against the positions a backbone offers,
* ``init_cfg=dict(type='Pretrained', ...)`` loading that reports missing / unexpected keys and
  refuses a checkpoint that covers too little of the backbone,
* ``out_channels`` / ``out_strides`` for the selected outputs,
* the argument checks every family shares (:func:`check_bool`, :func:`check_int`,
  :func:`check_norm_cfg`, ...) and the check of the input of ``forward``.
"""
import copy
import logging
import numbers
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS as MMENGINE_MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.models import pretrained as pretrained_loading
from mmbackbones.models.layers.conv_fusion import BATCH_NORM_TYPES
from mmbackbones.models.layers.conv_module import FoldableConvModule, bn_folding

from .arch_schema import ArchSchema, ArchSpec, close_matches

# Norm layers that build with an int channel count but cannot normalise (N, C, H, W) maps:
# LayerNorm normalises the last dimension (W), the 1d / 3d variants refuse 4-d input.
_NOT_FOR_FEATURE_MAPS = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm3d, nn.InstanceNorm1d,
                         nn.InstanceNorm3d)


#: ``BaseBackbone(in_channels=...)`` left out: ``forward`` does not check the channel count.
_NO_CHANNEL_CHECK = object()


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a float or bool ``frozen_stages``, say). A TypeError, and
    also a ValueError for code written when these checks raised ValueError."""


# ------------------------------------------------------------------ argument checks
def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` as a bool; a bool-like string, an int or None is a TypeError naming ``name``
    (``'False'`` would otherwise be taken as True). numpy bools are accepted."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    hint = ' (a string is not read as a bool)' if isinstance(value, str) else ''
    raise TypeError(f'{owner}: {name} must be True or False, got {value!r} '
                    f'({type(value).__name__}){hint}.')


def check_int(owner: str, name: str, value: Any, low: Optional[int] = None,
              high: Optional[int] = None, valid: Optional[str] = None) -> int:
    """``value`` as an int in ``low..high``: a TypeError for a non-int (bools, floats and
    strings included), a ValueError out of range; ``valid`` describes the range in words."""
    if low is not None and high is not None:
        valid = valid or f'{low}..{high}'
    elif low is not None:
        valid = valid or f'>= {low}'
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f'{owner}: {name}={value!r} must be an int'
                                f'{f"; use {valid}" if valid else ""} (got a '
                                f'{type(value).__name__}).')
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f'{owner}: {name}={value!r} is out of range; use {valid}.')
    return value


def check_number(owner: str, name: str, value: Any, low: float, high: float,
                 high_open: bool = False, valid: Optional[str] = None) -> float:
    """``value`` as a float in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    valid = valid or f'[{low:g}, {high:g}{")" if high_open else "]"}'
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f'{owner}: {name} must be a number in {valid}, got {value!r} '
                        f'({type(value).__name__}).')
    if not (low <= value < high if high_open else low <= value <= high):
        raise ValueError(f'{owner}: {name}={value!r} must be in {valid}.')
    return float(value)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError with the choices and the close
    matches of a misspelt one."""
    if isinstance(value, str) and value in choices:
        return value
    raise ValueError(f'{owner}: {name} {value!r} is unknown; choose one of {", ".join(choices)}'
                     f'{close_matches(value, choices)}.')


def check_in_channels(owner: str, in_channels: Any) -> int:
    """The number of input image channels: a positive int."""
    return check_int(owner, 'in_channels', in_channels, low=1,
                     valid='a positive int: 3 for RGB images, 1 for grey ones')


def known_norm_types() -> List[str]:
    """Names of the normalisation layers registered with mmengine/mmcv (``BN``, ``GN``, ...)."""
    norm_bases = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
    names = []
    for name, cls in MMENGINE_MODELS.module_dict.items():
        if isinstance(cls, type) and issubclass(cls, norm_bases + BATCH_NORM_TYPES):
            names.append(name)
    return sorted(names)


def feature_map_norm_types() -> List[str]:
    """The registered norm types a backbone can use on its (N, C, H, W) feature maps."""
    return [name for name in known_norm_types()
            if not issubclass(MMENGINE_MODELS.module_dict[name], _NOT_FOR_FEATURE_MAPS)]


def _registered(layer_type: str) -> Optional[type]:
    """The class registered as ``layer_type`` in the current scope (mmdet's when none is set)."""
    from mmdet.registry import MODELS as MMDET_MODELS
    with MMENGINE_MODELS.switch_scope_and_registry(None) as registry:
        found = registry.get(layer_type)
    return found if found is not None else MMDET_MODELS.get(layer_type)


def check_norm_cfg(owner: str, norm_cfg: Optional[dict], name: str = 'norm_cfg') -> None:
    """Fail early, with the valid choices, on a ``norm_cfg`` whose type does not exist or
    cannot normalise feature maps (LayerNorm, BN1d, GN without ``num_groups``)."""
    if norm_cfg is None:
        return
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise TypeError(f"{owner}: {name} must be a dict with a 'type' key, e.g. "
                        f"dict(type='BN', requires_grad=True); got {norm_cfg!r}.")
    norm_type = norm_cfg['type']
    if isinstance(norm_type, type):
        return
    found = _registered(norm_type) if isinstance(norm_type, str) else None
    if found is None:
        raise ValueError(f'{owner}: {name} type {norm_type!r} is not a registered norm layer; '
                         f'choose one of {", ".join(feature_map_norm_types())}'
                         f'{close_matches(norm_type, known_norm_types())}.')
    if isinstance(found, type) and issubclass(found, _NOT_FOR_FEATURE_MAPS):
        raise ValueError(f'{owner}: {name} type {norm_type!r} ({found.__name__}) cannot '
                         f'normalise the (N, C, H, W) feature maps of a backbone; choose one of '
                         f'{", ".join(feature_map_norm_types())}.')
    if isinstance(found, type) and issubclass(found, nn.GroupNorm):
        groups = norm_cfg.get('num_groups')
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f'{owner}: {name} type {norm_type!r} needs num_groups, a positive '
                             f'int that divides every width, e.g. dict(type={norm_type!r}, '
                             f'num_groups=8); got {norm_cfg!r}.')


def check_layer_cfg(owner: str, name: str, cfg: Optional[dict], example: str) -> None:
    """A ``conv_cfg`` / ``act_cfg``: None or a dict whose ``type`` is a registered layer."""
    if cfg is None:
        return
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"{owner}: {name} must be None or a dict with a 'type' key, e.g. "
                        f'{example}; got {cfg!r}.')
    layer_type = cfg['type']
    if isinstance(layer_type, str) and _registered(layer_type) is None:
        raise ValueError(f'{owner}: {name} type {layer_type!r} is not a registered layer'
                         f'{close_matches(layer_type, list(MMENGINE_MODELS.module_dict))}; e.g. '
                         f'{example}.')


def check_layer_cfgs(owner: str, conv_cfg: Optional[dict] = None,
                     act_cfg: Optional[dict] = None, **others: Optional[dict]) -> None:
    """:func:`check_layer_cfg` for a family's ``conv_cfg`` and ``act_cfg`` (and other activation
    configs, given by name, e.g. ``attn_act_cfg=...``)."""
    check_layer_cfg(owner, 'conv_cfg', conv_cfg, "dict(type='Conv2d')")
    for name, cfg in dict(act_cfg=act_cfg, **others).items():
        check_layer_cfg(owner, name, cfg, "dict(type='ReLU')")


def check_init_cfg(owner: str, init_cfg: Any) -> None:
    """``init_cfg``: None, a dict with a ``type`` or a list of them (mmengine ignores others)."""
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else init_cfg
    if init_cfg is None or (isinstance(cfgs, (list, tuple))
                            and all(isinstance(c, dict) and 'type' in c for c in cfgs)):
        return
    raise TypeError(f"{owner}: init_cfg must be None, a dict with a 'type' key or a list of "
                    f"them, e.g. dict(type='Pretrained', checkpoint='backbone.pth'); got "
                    f'{init_cfg!r}.')


def scratch_init_cfg(init_cfg: Optional[Union[dict, List[dict]]], pretrained: Optional[str]
                     ) -> Optional[Union[dict, List[dict]]]:
    """``init_cfg``, or mmdet ResNet's from-scratch init (Kaiming convs, unit norm weights) when
    neither ``init_cfg`` nor ``pretrained`` is given."""
    if init_cfg is None and pretrained is None:
        return [dict(type='Kaiming', layer='Conv2d'),
                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]
    return init_cfg


class _ToNCHW(torch.autograd.Function):
    """``x.contiguous()`` for a channels-last output, whose gradient goes back channels-last.

    Plain ``.contiguous()`` would send the NCHW gradient a neck or loss produces straight into
    the last stage's backward, where every BN / activation backward then mixes an NCHW
    gradient with channels-last saved tensors (slow strided loops) and each conv copies it
    back. Converting once here keeps the whole backward pass in one layout.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


class BaseBackbone(BaseModule):
    """Base class that implements mmdet's ResNet conventions for every backbone.

    The arguments below are shared by every family and documented here once; a family's own
    docstring lists its other arguments and its defaults of these.

    Subclasses set the class attributes below, then in ``__init__``:

    1. resolve the architecture: ``spec = self.resolve_arch(arch, depth)``;
    2. call ``super().__init__(max_stages=..., **conventions)``;
    3. build ``self.stem`` (or leave it ``None``) and append every stage with
       :meth:`add_stage` (only ``self.num_stages`` of them);
    4. call :meth:`init_conventions` last, which checks the build and applies freezing.

    Class attributes:
        arch_settings: named variants, each a dict of numbers.
        depth_settings: depth -> the named variant ``depth=`` selects.
        arch_schema: the keys of an ``arch`` dict, their types, lengths and defaults
            (:class:`~mmbackbones.models.backbones.arch_schema.ArchSchema`). Named variants and
            custom dicts take the same path.
        plugin_positions: where a plugin may sit inside a block.

    Args:
        max_stages (int): Stages the architecture has (set by the family, not a user argument).
        in_channels (int): Input image channels, a positive int (3 for RGB). ``forward``
            refuses an input with another channel count. A subclass that does not pass it
            gets no channel check.
        num_stages (int): Stages to build, ``1 <= num_stages <= max_stages``; later stages are
            not built.
        out_indices (Sequence[int]): Stages whose outputs are returned, 0-based, sorted, unique,
            each ``< num_stages``. The stem is not a stage.
        frozen_stages (int): -1 freezes nothing, 0 the stem, k the stem and stages 1..k.
            Frozen modules get ``requires_grad=False``, stay in eval mode through every
            ``train()`` call, and run without recording an autograd graph.
        norm_cfg (dict): The family's norm layers (mmcv config), checked at construction by
            :func:`check_norm_cfg`: a registered type that normalises (N, C, H, W) maps (BN,
            SyncBN, GN with ``num_groups``, IN, ...). ``requires_grad=False`` freezes the
            affine parameters only.
        norm_eval (bool): Keep every BatchNorm-like layer in eval mode during training.
        with_cp (bool): Activation checkpointing per block.
        channels_last (bool): Keep weights and activations in channels-last memory layout. Same
            results (to float rounding); on CPU (oneDNN) it is 5-30% faster, see
            docs/benchmarks.md. The input is converted in ``forward``; the returned feature maps
            are plain NCHW-contiguous tensors, so necks, heads and mmcv ops see nothing new.
        fuse_bn_eval (bool): Fold BatchNorm into the preceding conv (and run ReLU / SiLU inside
            oneDNN's convolution on the CPU) in eval mode with gradients off; see
            :class:`mmbackbones.models.layers.FoldableConvModule`. Same results to float rounding.
        plugins (list[dict], optional): mmdet plugins,
            ``dict(cfg=dict(type=...), stages=(bool,) * num_stages, position=...)``, at the
            family's ``plugin_positions``.
        pretrained (str, optional): Deprecated, use ``init_cfg``.
        init_cfg (dict | list[dict], optional): mmengine init config. A ``Pretrained`` entry may
            carry ``min_loaded_ratio`` (default 0.9): loading fails when a smaller share of the
            backbone's parameter elements is found in the checkpoint.

    Bool arguments refuse anything but ``True`` / ``False`` (numpy bools too): ``'False'`` is
    an error, not True.

    ``forward(x)`` takes one (N, C, H, W) floating-point tensor (float32, bfloat16, float16 on a
    GPU, or any type under autocast) whose C is ``in_channels`` and whose H and W are at least
    :attr:`min_input_size`; anything else is a TypeError / ValueError that says what was given.
    The check reads a few tensor attributes and is skipped while tracing or compiling.

    Example:
        >>> import torch
        >>> from mmbackbones.models import VoVNet
        >>> model = VoVNet(arch='V-19-slim-dw-eSE', out_indices=(0, 1)).eval()
        >>> model.out_strides, model.min_input_size
        ((4, 8), 8)
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 8, 8))]
        [(1, 112, 2, 2), (1, 256, 1, 1)]
        >>> model(torch.rand(1, 3, 7, 8))
        Traceback (most recent call last):
        ...
        ValueError: VoVNet.forward: input 7x8 is too small; ... at least 8x8, ...
        >>> VoVNet(arch='V-19-slim-dw-eSE', norm_eval='False')
        Traceback (most recent call last):
        ...
        TypeError: VoVNet: norm_eval must be True or False, got 'False' (str) ...
    """

    arch_settings: ClassVar[Dict[str, ArchSpec]] = {}
    depth_settings: ClassVar[Dict[int, str]] = {}
    arch_schema: ClassVar[ArchSchema] = ArchSchema()
    plugin_positions: ClassVar[Tuple[str, ...]] = ()
    default_min_loaded_ratio: ClassVar[float] = 0.9

    def __init__(self, *, max_stages: int, num_stages: int, out_indices: Sequence[int],
                 in_channels: Any = _NO_CHANNEL_CHECK,
                 frozen_stages: int = -1, norm_eval: bool = True, with_cp: bool = False,
                 channels_last: bool = False, fuse_bn_eval: bool = True,
                 plugins: Optional[List[dict]] = None,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        name = type(self).__name__
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError(f'{name}: pass either pretrained= or init_cfg=, not both.')
            if not isinstance(pretrained, str):
                raise TypeError(f'{name}: pretrained must be a checkpoint path (str), got '
                                f'{type(pretrained).__name__}.')
            print_log(f'{name}: pretrained= is deprecated; use '
                      f"init_cfg=dict(type='Pretrained', checkpoint=...)", logger='current',
                      level=logging.WARNING)
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        check_init_cfg(name, init_cfg)
        super().__init__(init_cfg=init_cfg)
        self.in_channels: Optional[int] = (None if in_channels is _NO_CHANNEL_CHECK else
                                           check_in_channels(name, in_channels))
        self.num_stages = self._check_num_stages(num_stages, max_stages)
        self.out_indices = self._check_out_indices(out_indices, self.num_stages)
        self.frozen_stages = self._check_frozen_stages(frozen_stages, self.num_stages)
        self.norm_eval = check_bool(name, 'norm_eval', norm_eval)
        self.with_cp = check_bool(name, 'with_cp', with_cp)
        self.channels_last = check_bool(name, 'channels_last', channels_last)
        self.fuse_bn_eval = check_bool(name, 'fuse_bn_eval', fuse_bn_eval)
        self.plugins = self._check_plugins(plugins, self.num_stages)
        self.stem: Optional[nn.Module] = None
        self.stages = nn.ModuleList()
        self.stage_channels: List[int] = []
        self.stage_strides: List[int] = []

    # ------------------------------------------------------------------ architecture
    @classmethod
    def arch_depth(cls, spec: ArchSpec) -> Optional[int]:
        """The depth a spec corresponds to (for ``depth=`` consistency), if the family has one."""
        return None

    @classmethod
    def check_arch(cls, spec: ArchSpec) -> ArchSpec:
        """``spec`` checked against :attr:`arch_schema`, with its defaults filled in."""
        return cls.arch_schema.check(spec, cls.__name__)

    @classmethod
    def resolve_arch(cls, arch: Union[str, ArchSpec, None], depth: Optional[int] = None) -> ArchSpec:
        """Turn ``arch`` (a named variant or a custom dict) and/or ``depth`` into a spec dict."""
        name = cls.__name__
        names = ', '.join(cls.arch_settings)
        keys = ', '.join(cls.arch_schema.keys)
        depths = ', '.join(map(str, cls.depth_settings))
        if depth is not None and (isinstance(depth, bool) or depth not in cls.depth_settings):
            raise ValueError(f'{name}: depth {depth!r} is not supported; choose one of {depths}.')
        if arch is None:
            if depth is None:
                raise ValueError(f'{name}: pass arch= (one of {names}, or a dict with keys '
                                 f'{keys}) or depth= (one of {depths}).')
            arch = cls.depth_settings[depth]
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise ValueError(f'{name}: arch {arch!r} is unknown; choose one of {names}, or '
                                 f'pass a dict with keys {keys}'
                                 f'{close_matches(arch, list(cls.arch_settings))}.')
            spec = copy.deepcopy(cls.arch_settings[arch])
        elif isinstance(arch, dict):
            spec = dict(arch)
        else:
            raise TypeError(f'{name}: arch must be a str (one of {names}) or a dict with keys '
                            f'{keys}; got {arch!r} ({type(arch).__name__}).')
        spec = cls.check_arch(spec)
        if depth is not None and cls.arch_depth(spec) != depth:
            raise ValueError(f'{name}: depth={depth} disagrees with arch {arch!r}, which has depth '
                             f'{cls.arch_depth(spec)}; pass only one of them, or matching ones.')
        return spec

    # ------------------------------------------------------------------ validation
    def _check_num_stages(self, num_stages: int, max_stages: int) -> int:
        return check_int(type(self).__name__, 'num_stages', num_stages, low=1, high=max_stages,
                         valid=f'1..{max_stages} (this architecture has {max_stages} stages)')

    def _check_out_indices(self, out_indices: Sequence[int], num_stages: int) -> Tuple[int, ...]:
        name = type(self).__name__
        valid = f'0..{num_stages - 1} (num_stages={num_stages}; the stem is not a stage)'
        if isinstance(out_indices, numbers.Integral) and not isinstance(out_indices,
                                                                        (bool, np.bool_)):
            out_indices = (out_indices, )
        if not isinstance(out_indices, (list, tuple, range, np.ndarray)) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, (bool, np.bool_))
                for i in out_indices):
            raise ArgumentTypeError(f'{name}: out_indices={out_indices!r} must be a sequence of '
                                    f'ints in {valid} (got a {type(out_indices).__name__}).')
        indices = tuple(int(i) for i in out_indices)
        if not indices:
            raise ValueError(f'{name}: out_indices={out_indices!r} must be a non-empty sequence of '
                             f'ints in {valid}.')
        bad = [i for i in indices if not 0 <= i < num_stages]
        if bad:
            raise ValueError(f'{name}: out_indices={indices} has {bad} outside the valid range '
                             f'{valid}.')
        if len(set(indices)) != len(indices) or list(indices) != sorted(indices):
            raise ValueError(f'{name}: out_indices={indices} must be unique and sorted, e.g. '
                             f'{tuple(sorted(set(indices)))}.')
        return indices

    def _check_frozen_stages(self, frozen_stages: int, num_stages: int) -> int:
        return check_int(type(self).__name__, 'frozen_stages', frozen_stages, low=-1,
                         high=num_stages, valid=f'-1 (nothing), 0 (the stem) or k in '
                                                f'1..{num_stages} (the stem and stages 1..k)')

    def _check_plugins(self, plugins: Optional[List[dict]], num_stages: int) -> List[dict]:
        name = type(self).__name__
        if plugins is None or (isinstance(plugins, (list, tuple)) and not plugins):
            return []
        if not self.plugin_positions:
            raise ValueError(f'{name} does not support plugins; got plugins={plugins!r}.')
        if not isinstance(plugins, (list, tuple)):
            raise TypeError(f'{name}: plugins must be a list of dict(cfg=dict(type=...), '
                            f'position=..., stages=...), got a {type(plugins).__name__}: '
                            f'{plugins!r}.')
        checked = []
        for plugin in plugins:
            if not isinstance(plugin, dict) or 'cfg' not in plugin:
                raise ValueError(f"{name}: each plugin must be dict(cfg=dict(type=...), "
                                 f"position=..., stages=...); got {plugin!r}.")
            unknown = set(plugin) - {'cfg', 'position', 'stages'}
            if unknown:
                raise ValueError(f'{name}: plugin has unknown keys {sorted(unknown)}; valid keys '
                                 f'are cfg, position, stages.')
            cfg = plugin['cfg']
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise ValueError(f"{name}: plugin cfg must be a dict with a 'type' key, e.g. "
                                 f"dict(type='ContextBlock', ratio=0.25); got {cfg!r}.")
            if isinstance(cfg['type'], str) and _registered(cfg['type']) is None:
                examples = ', '.join(t for t in ('ContextBlock', 'GeneralizedAttention',
                                                 'NonLocal2d') if _registered(t) is not None)
                hint = close_matches(cfg['type'], list(MMENGINE_MODELS.module_dict))
                raise ValueError(f"{name}: plugin cfg type {cfg['type']!r} is not a registered "
                                 f'layer{hint}; mmcv / mmdet plugins include {examples}.')
            position = plugin.get('position')
            if position not in self.plugin_positions:
                raise ValueError(f'{name}: plugin position {position!r} does not exist; choose one '
                                 f'of {", ".join(self.plugin_positions)}.')
            stages = plugin.get('stages')
            if stages is not None:
                if not isinstance(stages, (list, tuple)) or not all(
                        isinstance(s, (bool, np.bool_)) for s in stages):
                    raise TypeError(f'{name}: plugin stages must be None (every stage) or a '
                                    f'tuple of bools, one per built stage '
                                    f'(num_stages={num_stages}); got {stages!r}.')
                if len(stages) != num_stages:
                    raise ValueError(f'{name}: plugin stages={tuple(stages)} must have one bool '
                                     f'per built stage (num_stages={num_stages}).')
            checked.append(dict(cfg=dict(cfg), position=position,
                                stages=None if stages is None else tuple(bool(s) for s in stages)))
        return checked

    def stage_plugins(self, stage_idx: int) -> Dict[str, List[dict]]:
        """Plugin configs of one stage, grouped by position (mmdet's ``make_stage_plugins``)."""
        grouped: Dict[str, List[dict]] = {}
        for plugin in self.plugins:
            if plugin['stages'] is None or plugin['stages'][stage_idx]:
                grouped.setdefault(plugin['position'], []).append(copy.deepcopy(plugin['cfg']))
        return grouped

    # ------------------------------------------------------------------ building
    def add_stage(self, stage: nn.Module, out_channels: int, stride: int) -> None:
        """Append a stage; ``stride`` is its output stride relative to the input image."""
        self.stages.append(stage)
        self.stage_channels.append(int(out_channels))
        self.stage_strides.append(int(stride))

    def init_conventions(self) -> None:
        """Call at the end of ``__init__``: checks the build and applies freezing."""
        if len(self.stages) != self.num_stages:
            raise RuntimeError(f'{type(self).__name__} built {len(self.stages)} stages for '
                               f'num_stages={self.num_stages}.')
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        for module in self.modules():
            if isinstance(module, FoldableConvModule):
                module.fuse_bn_eval = self.fuse_bn_eval
        # What set_frozen_stages() gives back to an unfrozen stage (norm_cfg may freeze affines).
        self._trainable_at_build = {n for n, p in self.named_parameters() if p.requires_grad}
        self._min_input_size = self.min_input_size  # read on every forward
        self._freeze_stages()

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of each returned feature map, in ``out_indices`` order (FPN ``in_channels``)."""
        return tuple(self.stage_channels[i] for i in self.out_indices)

    @property
    def out_strides(self) -> Tuple[int, ...]:
        """Stride of each returned feature map relative to the input."""
        return tuple(self.stage_strides[i] for i in self.out_indices)

    @property
    def min_input_size(self) -> int:
        """The smallest input height and width ``forward`` takes: the largest stride of the
        stages it runs (up to the last of ``out_indices``). At that size the deepest returned
        map is 1x1; below it every family would either fail or silently return maps computed
        mostly from padding."""
        return max(self.stage_strides[:self.out_indices[-1] + 1])
    # ------------------------------------------------------------------ freezing
    def _pipeline(self) -> List[nn.Module]:
        """The stem (if any) followed by the stages, in forward order."""
        return ([self.stem] if self.stem is not None else []) + list(self.stages)

    def frozen_modules(self) -> List[nn.Module]:
        """The stem and stages that ``frozen_stages`` freezes."""
        if self.frozen_stages < 0:
            return []
        modules = [self.stem] if self.stem is not None else []
        return modules + list(self.stages[:self.frozen_stages])

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def set_frozen_stages(self, frozen_stages: int) -> None:
        """Change ``frozen_stages`` of a built backbone (progressive unfreezing).

        Stages that stop being frozen get back the ``requires_grad`` they were built with (a
        ``norm_cfg`` with ``requires_grad=False`` keeps its affines frozen); newly frozen ones are
        frozen. Module modes (frozen stages in eval, ``norm_eval``) are re-applied for the current
        training mode. Optimisers are not touched: see ``FrozenStagesScheduleHook``.
        """
        self.frozen_stages = self._check_frozen_stages(frozen_stages, self.num_stages)
        trainable = getattr(self, '_trainable_at_build', None)
        names = {id(p): n for n, p in self.named_parameters()}
        frozen = {id(m) for m in self.frozen_modules()}
        for module in self._pipeline():
            if id(module) not in frozen:
                for param in module.parameters():
                    param.requires_grad = trainable is None or names[id(param)] in trainable
        self.train(self.training)

    def train(self, mode: bool = True) -> 'BaseBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, BATCH_NORM_TYPES):
                    module.eval()
        return self

    # ------------------------------------------------------------------ forward
    def _num_constant_leading(self, modules: Sequence[nn.Module], x: torch.Tensor) -> int:
        """How many leading modules have no trainable parameter (and see no grad-requiring input).

        Those run under ``no_grad``: the result is the same, but autograd records no graph and
        keeps no activations for them, so frozen stages cost forward time only.
        """
        if not torch.is_grad_enabled() or x.requires_grad:
            return 0
        count = 0
        for module in modules:
            if any(p.requires_grad for p in module.parameters()):
                break
            count += 1
        return count

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self._check_input(x)
            if (self.fuse_bn_eval and x.device.type == 'cpu'
                    and (not torch.is_grad_enabled() or self.frozen_stages >= 0)
                    and not bool(torch.isfinite(x.sum(dtype=torch.float32)))):
                # Folded convs on the CPU (eval under no_grad, and frozen stages in training) run
                # oneDNN's fused ReLU, which maps NaN to 0: a NaN / Inf input takes the exact
                # path, so it propagates as the unfolded network propagates it. (A sum is finite
                # only if every element is; ~30 us at 320x320, 30x less than isfinite().all().
                # On a GPU the folded conv is F.conv2d + the activation module: nothing to do,
                # and no device sync.)
                with bn_folding(False):
                    return self._forward(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        try:
            if self.channels_last:
                outs = self.forward_stages(x.contiguous(memory_format=torch.channels_last))
                # necks and heads (mmcv's RoIAlign, .view calls) expect NCHW
                to_nchw = _ToNCHW.apply if torch.is_grad_enabled() and not (
                    torch.jit.is_tracing() or torch.jit.is_scripting()) else torch.Tensor.contiguous
                return tuple(to_nchw(o) for o in outs)
            return tuple(self.forward_stages(x))
        except (RuntimeError, ValueError) as exc:
            explained = self._explain_forward_error(x, exc)
            if explained is None:
                raise
            raise explained from exc

    def _check_input(self, x: Any) -> None:
        """Refuse anything but an (N, in_channels, H, W) floating-point tensor of at least
        :attr:`min_input_size`: a few attribute reads, before any layer sees it."""
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
            channels, height, width = x.shape[1:]
            size = self._min_input_size
            if (self.in_channels is None or channels == self.in_channels) and \
                    height >= size and width >= size:
                return
        raise self._input_error(x)

    def _input_error(self, x: Any) -> Exception:
        """The TypeError / ValueError that says what is wrong with a ``forward`` input."""
        name = f'{type(self).__name__}.forward'
        channels = 'C' if self.in_channels is None else f'C={self.in_channels}'
        expected = (f'an (N, {channels}, H, W) floating-point tensor (float32, bfloat16, or '
                    f'float16 on a GPU)')
        if not isinstance(x, torch.Tensor):
            kind = type(x).__name__ if type(x).__module__ == 'builtins' else \
                f'{type(x).__module__}.{type(x).__name__}'
            hint = ''
            if isinstance(x, np.ndarray):
                hint = ('; convert an (H, W, C) image with torch.from_numpy(img).permute(2, 0, '
                        '1)[None].float()')
            elif isinstance(x, (list, tuple)):
                hint = '; stack the images into one batch with torch.stack'
            return TypeError(f'{name}: input x must be {expected}; got a {kind}{hint}.')
        shape = tuple(x.shape)
        if x.dim() != 4:
            hint = ' (add the batch dimension: x[None])' if x.dim() == 3 else ''
            return ValueError(f'{name}: input x must have 4 dimensions (N, C, H, W); got shape '
                              f'{shape}{hint}.')
        if not x.is_floating_point():
            return TypeError(f'{name}: input x must be {expected}; got {x.dtype} (convert '
                             f'images with x.float() and normalise them as the weights expect).')
        if self.in_channels is not None and shape[1] != self.in_channels:
            return ValueError(f'{name}: input x has {shape[1]} channels (shape {shape}), but '
                              f'the backbone was built with in_channels={self.in_channels}.')
        size = self._min_input_size
        return ValueError(
            f'{name}: input {shape[2]}x{shape[3]} is too small; this architecture needs inputs '
            f'of at least {size}x{size}, the total stride of the stages it runs (pad or resize '
            f'the image; input x has shape {shape}).')

    def _explain_forward_error(self, x: torch.Tensor, exc: Exception) -> Optional[Exception]:
        """A clear error for the input failures torch reports cryptically, else None.

        BatchNorm in train mode cannot normalise a single value per channel (batch 1 with a 1x1
        map); an input of another dtype than the weights (float64 or float16 into a float32
        model, without autocast) fails in the first conv. Other errors are not ours to reword.
        """
        name = type(self).__name__
        height, width = x.shape[-2:]
        if self.training and 'more than 1 value per channel' in str(exc):
            return ValueError(
                f'{name}: BatchNorm in train mode got one value per channel (batch {x.shape[0]}, '
                f'input {height}x{width}: a feature map is down to 1x1). Use a batch of 2 or '
                f'more, a larger input, or norm_eval=True (BN statistics frozen). ({exc})')
        weight = next(iter(self.parameters()), None)
        if (weight is not None and x.dtype != weight.dtype
                and not torch.is_autocast_enabled(x.device.type)):
            return TypeError(
                f'{name}.forward: input x is {x.dtype} on {x.device.type}, but the weights are '
                f'{weight.dtype}; pass x.to({weight.dtype}), convert the model to '
                f'{x.dtype}, or run under torch.autocast. ({exc})')
        if min(height, width) < self._min_input_size:
            return ValueError(
                f'{name}: input {height}x{width} is too small; this architecture needs inputs of '
                f'at least {self._min_input_size}x{self._min_input_size}, the total stride of '
                f'the stages it runs (pad or resize the image). ({exc})')
        return None

    def forward_stages(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The stem and the stages up to the last of ``out_indices``; their selected outputs.

        ``forward`` owns the memory layout: ``x`` arrives channels-last when ``channels_last``
        is set, and the outputs are made NCHW-contiguous there."""
        modules = self._pipeline()
        offset = len(modules) - len(self.stages)
        constant = self._num_constant_leading(modules, x)
        last = self.out_indices[-1] + offset
        outs = []
        for idx, module in enumerate(modules[:last + 1]):
            if idx < constant:
                with torch.no_grad():
                    x = module(x)
            else:
                x = module(x)
            if idx - offset in self.out_indices:
                outs.append(x)
        return tuple(outs)

    # ------------------------------------------------------------------ pretrained weights
    def init_weights(self) -> None:
        """mmengine init, with ``Pretrained`` entries loaded by :meth:`load_pretrained`."""
        cfgs = self.init_cfg
        if cfgs is None:
            return super().init_weights()
        cfg_list = [cfgs] if isinstance(cfgs, dict) else list(cfgs)
        pretrained = [c for c in cfg_list if c.get('type') == 'Pretrained']
        others = [c for c in cfg_list if c.get('type') != 'Pretrained']
        if len(pretrained) > 1:
            raise ValueError(f'{type(self).__name__}: init_cfg has {len(pretrained)} Pretrained '
                             f'entries; give one.')
        self.init_cfg = others or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = cfgs
        if pretrained:
            self.load_pretrained(**{k: v for k, v in pretrained[0].items() if k != 'type'})

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None,
                        map_location: str = 'cpu', min_loaded_ratio: Optional[float] = None,
                        sha256: Optional[str] = None) -> Dict[str, List[str]]:
        """Load weights for this backbone from a checkpoint and report what matched.

        ``checkpoint`` is a named weight (``'mmbackbones://vovnet/V-39-eSE'``: downloaded once,
        checked, converted and cached, see :mod:`mmbackbones.weights`), a local path or URL of an
        mmbackbones / mmdet checkpoint or of an unconverted official, timm, torchvision or
        ultralytics file (its format is recognised from its keys and converted on load), or any
        other mmengine checkpoint path. ``sha256`` (a digest or a prefix of at least 8 hex
        digits) pins the file: another file is refused.

        The state dict is taken from ``state_dict`` / ``model`` wrappers when present, keys under
        ``prefix`` are selected (``'backbone.'`` for a detector or mmpretrain checkpoint), and a
        leading ``module.`` is stripped. Tensors whose shape differs are not loaded and are
        reported. Raises ``RuntimeError`` when less than ``min_loaded_ratio`` of the backbone's
        parameter elements was loaded: silently training from scratch is worse than failing.

        A checkpoint made for another number of input channels (RGB weights into a backbone built
        with ``in_channels=1`` or ``4``) has its input conv adapted, as timm does, and a warning
        says so: for 1 channel the filters are summed over the checkpoint's channels (a grey
        image then gives what the RGB model gives on the grey image repeated three times); for
        other counts they are repeated cyclically and scaled by ``ckpt_channels / in_channels``.

        Returns:
            dict: ``missing``, ``unexpected`` and ``shape_mismatch`` key lists, and ``source``
            (the format the weights were converted from, ``'mmbackbones'`` if none).
        """
        return pretrained_loading.load_pretrained(
            self, checkpoint, prefix=prefix, map_location=map_location,
            min_loaded_ratio=min_loaded_ratio, sha256=sha256)

    def map_checkpoint_keys(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Rename checkpoint keys to this backbone's; identity unless a subclass wraps another
        library's model whose plain checkpoints use other names (TimmBackbone)."""
        return state

    def _adapt_input_conv(self, state: Dict[str, torch.Tensor],
                          own: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Adapt the input conv of ``state`` to this model's input channels (load_pretrained)."""
        return pretrained_loading.adapt_input_conv(self, state, own)
