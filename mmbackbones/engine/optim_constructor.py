# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""An optimiser-wrapper constructor whose ``norm_decay_mult`` also reaches parameters that a
custom key matches (the RT-DETR recipe: backbone lr x0.1 and no weight decay on any norm)."""
from typing import List, Optional, Union

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.instancenorm import _InstanceNorm

#: module types whose parameters are norm parameters: every torch BatchNorm/SyncBatchNorm/
#: InstanceNorm (``_NormBase``), GroupNorm and LayerNorm and their subclasses (timm's LayerNorm2d,
#: BatchNormAct2d, GroupNorm1; mmcv's norms are torch's), RMSNorm where torch has it.
#: FrozenBatchNorm2d holds buffers only, so no optimizer ever sees it.
NORM_TYPES = tuple(t for t in (_NormBase, _InstanceNorm, nn.GroupNorm, nn.LayerNorm,
                               getattr(nn, 'RMSNorm', None)) if t is not None)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class RTDETROptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, except that ``norm_decay_mult`` also multiplies the
    weight decay of norm parameters that a ``custom_keys`` entry matches.

    Why: mmengine applies a matching custom key *instead of* every other rule, so with
    ``custom_keys={'backbone': dict(lr_mult=0.1)}`` and ``norm_decay_mult=0`` each trainable
    backbone norm still gets the full weight decay. The RT-DETR recipe (lyuwenyu/RT-DETR's
    optimizer regexes) wants both: backbone norms at the backbone lr *and* weight decay 0. Here
    a norm parameter under a custom key gets the key's settings (lr_mult, decay_mult, anything
    else it sets) and then weight decay ``base_wd * decay_mult * norm_decay_mult``: the
    multipliers compose.

    Norm layers are found by module type, as mmengine does, over a wider set (``NORM_TYPES``).
    Everything else is mmengine's: the longest (then alphabetically first) key wins, parameters
    with ``requires_grad=False`` are left out of the optimizer, parameters no key matches follow
    ``norm_decay_mult`` / ``bias_decay_mult`` etc.

    ``bias_decay_mult`` is deliberately *not* combined with custom keys: the official recipe
    gives the backbone's biases the backbone lr and the base weight decay (its backbone group
    sets only the lr) and exempts only the encoder's and decoder's biases, which no key matches.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.BatchNorm2d(8))
        >>> build = RTDETROptimWrapperConstructor(
        ...     dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4)),
        ...     dict(custom_keys={'0': dict(lr_mult=0.1), '1': dict(lr_mult=0.1)},
        ...          norm_decay_mult=0.0))
        >>> groups = build(model).optimizer.param_groups  # logs every group's settings
        >>> [(g['lr'], g['weight_decay']) for g in groups]  # conv w, b; BN w, b
        [(1e-05, 0.0001), (1e-05, 0.0001), (1e-05, 0.0), (1e-05, 0.0)]
    """

    _walking = False

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        """mmengine's walk over ``module``, then the norm decay under custom keys (applied once,
        by the outermost call; mmengine's walk calls this method again for every child)."""
        if self._walking:
            super().add_params(params, module, prefix, is_dcn_module)
            return
        start = len(params)
        self._walking = True
        try:
            super().add_params(params, module, prefix, is_dcn_module)
        finally:
            self._walking = False
        self._decay_norms_under_custom_keys(params[start:], module, prefix)

    def _decay_norms_under_custom_keys(self, groups: List[dict], module: nn.Module,
                                       prefix: str) -> None:
        norm_decay_mult = self.paramwise_cfg.get('norm_decay_mult', None)
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        if norm_decay_mult is None or self.base_wd is None or not custom_keys:
            return
        keys = sorted(sorted(custom_keys), key=len, reverse=True)  # mmengine's matching order
        norm_params = {}
        for module_name, sub in module.named_modules(prefix=prefix):
            if isinstance(sub, NORM_TYPES):
                for name, param in sub.named_parameters(recurse=False):
                    norm_params[id(param)] = f'{module_name}.{name}'
        for group in groups:
            (param,) = group['params']  # mmengine makes one group per parameter
            full_name = norm_params.get(id(param))
            if full_name is None:
                continue
            key = next((k for k in keys if k in full_name), None)
            if key is None:  # no key: mmengine has applied norm_decay_mult already
                continue
            decay_mult = custom_keys[key].get('decay_mult', 1.0)
            group['weight_decay'] = self.base_wd * decay_mult * norm_decay_mult
            print_log(f'paramwise_options -- {full_name.lstrip(".")}:weight_decay='
                      f'{group["weight_decay"]} (norm under custom key {key!r})',
                      logger='current')
