# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""``frozen_stages`` for every backbone the tools support: ours and mmdet's ResNet family.

One small adapter answers, for a built backbone, the questions the schedule hook, the sweep
runner and the benchmark ask:

* :func:`num_frozen_settings` - the valid ``frozen_stages`` values are ``-1 .. num_stages``;
* :func:`stage_groups` - the modules index k freezes (0 the stem, k stage k), in forward order;
* :func:`set_frozen_stages` - change the setting of a built backbone (freeze *and* unfreeze);
* :func:`param_counts` / :func:`stage_flops` / :func:`gradient_flops` - what freezing saves.

mmbackbones backbones implement ``set_frozen_stages`` themselves (``BaseBackbone``). mmdet's
``ResNet`` (and its subclasses ResNetV1d, ResNeXt, Res2Net, RegNet) can only freeze: unfreezing
here gives stage parameters back ``requires_grad=True``, except norm-layer affines whose
``norm_cfg`` says ``requires_grad=False``, then lets ``ResNet.train()`` re-apply eval modes and
``norm_eval``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.models.backbones.base import BATCH_NORM_TYPES, BaseBackbone

__all__ = ['stage_groups', 'num_frozen_settings', 'frozen_settings', 'set_frozen_stages',
           'param_counts', 'stage_flops', 'gradient_flops', 'SUPPORTED']

SUPPORTED = 'mmbackbones backbones (BaseBackbone) and mmdet ResNet and its subclasses'
_NORM_TYPES = BATCH_NORM_TYPES + (_BatchNorm, nn.GroupNorm, nn.LayerNorm,
                                  nn.modules.instancenorm._InstanceNorm)


def _mmdet_resnet() -> Optional[type]:
    try:
        from mmdet.models.backbones import ResNet
    except ImportError:  # pragma: no cover - mmdet is a dependency
        return None
    return ResNet


def _unsupported(backbone: nn.Module) -> TypeError:
    return TypeError(f'{type(backbone).__name__} is not a supported backbone for frozen-stage '
                     f'changes; supported are {SUPPORTED}.')


def stage_groups(backbone: nn.Module) -> List[List[nn.Module]]:
    """Modules per ``frozen_stages`` index: ``groups[0]`` the stem, ``groups[k]`` stage k."""
    if isinstance(backbone, BaseBackbone):
        stem = [backbone.stem] if backbone.stem is not None else []
        return [stem] + [[stage] for stage in backbone.stages]
    resnet = _mmdet_resnet()
    if resnet is not None and isinstance(backbone, resnet):
        stem = [backbone.stem] if backbone.deep_stem else [backbone.conv1, backbone.norm1]
        return [stem] + [[getattr(backbone, name)] for name in backbone.res_layers]
    raise _unsupported(backbone)


def num_frozen_settings(backbone: nn.Module) -> int:
    """``num_stages``: ``frozen_stages`` may be -1 .. this number."""
    return len(stage_groups(backbone)) - 1


def frozen_settings(backbone: nn.Module) -> List[int]:
    """Every valid ``frozen_stages`` value of ``backbone``, from -1 (nothing frozen) upward."""
    return list(range(-1, num_frozen_settings(backbone) + 1))


def set_frozen_stages(backbone: nn.Module, frozen_stages: int) -> None:
    """Freeze the stem and stages 1..k of a built backbone and unfreeze the rest."""
    if isinstance(backbone, BaseBackbone):
        backbone.set_frozen_stages(frozen_stages)
        return
    groups = stage_groups(backbone)  # raises for unsupported types
    num_stages = len(groups) - 1
    if (not isinstance(frozen_stages, int) or isinstance(frozen_stages, bool)
            or not -1 <= frozen_stages <= num_stages):
        raise ValueError(f'{type(backbone).__name__}: frozen_stages={frozen_stages!r} is out of '
                         f'range; use -1 (nothing), 0 (the stem) or k in 1..{num_stages}.')
    norm_trainable = (backbone.norm_cfg or {}).get('requires_grad', True)
    for modules in groups[frozen_stages + 1:]:
        for module in modules:
            for sub in module.modules():
                trainable = norm_trainable if isinstance(sub, _NORM_TYPES) else True
                for param in sub.parameters(recurse=False):
                    param.requires_grad = trainable
    backbone.frozen_stages = frozen_stages
    backbone.train(backbone.training)  # ResNet.train() freezes 0..k and applies norm_eval


def param_counts(model: nn.Module) -> Tuple[int, int]:
    """(trainable, frozen) parameter element counts of ``model``."""
    trainable = frozen = 0
    for param in model.parameters():
        if param.requires_grad:
            trainable += param.numel()
        else:
            frozen += param.numel()
    return trainable, frozen


def stage_flops(backbone: nn.Module, input_shape: Sequence[int]) -> List[int]:
    """Forward FLOPs (mmengine's FlopAnalyzer, one multiply-add = 1) of each stage group.

    ``input_shape`` is the backbone input, e.g. ``(2, 3, 192, 192)``. Groups a forward does not
    reach (stages after the last ``out_indices`` entry) count 0. The backbone is analysed in eval
    mode, so BatchNorm statistics are not touched; its mode is restored afterwards.
    """
    from mmengine.analysis import FlopAnalyzer
    groups = stage_groups(backbone)
    names = {id(m): n for n, m in backbone.named_modules()}
    param = next(backbone.parameters())
    x = torch.zeros(tuple(input_shape), dtype=param.dtype, device=param.device)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            analyzer = FlopAnalyzer(backbone, (x, ))
            analyzer.unsupported_ops_warnings(False)
            analyzer.uncalled_modules_warnings(False)
            analyzer.tracer_warnings('none')
            by_module = analyzer.by_module()
    finally:
        backbone.train(was_training)
    return [int(sum(by_module.get(names[id(m)], 0) for m in modules)) for modules in groups]


def gradient_flops(backbone: nn.Module, flops: Sequence[int]) -> int:
    """Forward FLOPs of the groups backward still runs through (from the first trainable one).

    A group before the first trainable group needs no gradient at all (frozen means cheap);
    every group from there on needs one, for its parameters or for its input.
    """
    for idx, modules in enumerate(stage_groups(backbone)):
        if any(p.requires_grad for m in modules for p in m.parameters()):
            return int(sum(flops[idx:]))
    return 0
