# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Log what a training step costs, so frozen-stage runs can be compared from their logs.

    custom_hooks = [dict(type='TrainCostHook')]

Every training iteration it puts these scalars in the message hub, so mmengine's ``LoggerHook``
writes them to the text log and to ``vis_data/scalars.json`` with the loss and ``time``:

* ``peak_rss_mb``: peak resident memory of the training process so far (``VmHWM``; data
  loader workers are separate processes and not included). On CUDA mmengine already logs
  ``memory``, the peak allocated CUDA memory.
* ``trainable_params`` / ``frozen_params``: parameter elements of the whole model.
* ``backbone_gflops``: forward GFLOPs of the backbone for the batch (mmengine's FlopAnalyzer,
  measured once on the first batch's padded shape).
* ``backbone_grad_gflops``: the part of them in stages backward still runs through (from the
  first stage with a trainable parameter on); it follows a ``FrozenStagesScheduleHook``.
"""
import math
import resource
import sys
from typing import List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmbackbones.engine.frozen_stages import gradient_flops, param_counts, stage_flops

try:
    from mmdet.registry import HOOKS
except ImportError:  # pragma: no cover - mmdet is a dependency
    from mmengine.registry import HOOKS


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``. Not ``ru_maxrss``: it survives ``exec``, so a
    process started by a big parent (the sweep runner, a benchmark) reports the parent's RSS at
    fork time when that is larger than its own peak.
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == 'darwin' else peak / 1024  # bytes vs KiB


@HOOKS.register_module()
class TrainCostHook(Hook):
    """Log peak RSS, trainable/frozen parameters and backbone (gradient) FLOPs every iteration.

    Args:
        flops (bool): Measure backbone FLOPs (one trace of the backbone on the first batch).
            Default: True.
    """

    priority = 'ABOVE_NORMAL'  # before LoggerHook (BELOW_NORMAL) writes the iteration's log

    def __init__(self, flops: bool = True) -> None:
        self.flops = bool(flops)
        self.stage_flops: Optional[List[int]] = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.flops and self.stage_flops is None and data_batch is not None:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            shape = _batch_shape(model, data_batch)
            if shape is not None and hasattr(model, 'backbone'):
                self.stage_flops = stage_flops(model.backbone, shape)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        hub = runner.message_hub
        trainable, frozen = param_counts(model)
        hub.update_scalar('train/peak_rss_mb', round(peak_rss_mb(), 1))
        hub.update_scalar('train/trainable_params', trainable)
        hub.update_scalar('train/frozen_params', frozen)
        if self.stage_flops is not None:
            hub.update_scalar('train/backbone_gflops', round(sum(self.stage_flops) / 1e9, 4))
            hub.update_scalar('train/backbone_grad_gflops',
                              round(gradient_flops(model.backbone, self.stage_flops) / 1e9, 4))


def _batch_shape(model, data_batch) -> Optional[tuple]:
    """(N, C, H, W) the data preprocessor makes of ``data_batch`` (padded to its divisor)."""
    inputs = data_batch.get('inputs') if isinstance(data_batch, dict) else None
    if inputs is None or len(inputs) == 0:
        return None
    if hasattr(inputs, 'shape') and inputs.dim() == 4:
        return tuple(inputs.shape)
    divisor = getattr(getattr(model, 'data_preprocessor', None), 'pad_size_divisor', 1) or 1
    height = max(int(x.shape[-2]) for x in inputs)
    width = max(int(x.shape[-1]) for x in inputs)
    return (len(inputs), int(inputs[0].shape[0]), math.ceil(height / divisor) * divisor,
            math.ceil(width / divisor) * divisor)
