# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""VanillaNet's deep-training schedule: ramp ``act_learn`` from 0 (ReLU) to 1 (identity).

    custom_hooks = [dict(type='VanillaNetActLearnHook', ramp=100, by_epoch=True)]

As the official ``main.py``: before epoch ``e`` the slope is ``e / ramp`` (``'linear'``, the
official default) or ``0.5 * (1 - cos(pi * e / ramp))`` (``'cosine'``), and 1 from epoch ``ramp``
on. With ``by_epoch=False`` the same formulas run on the iteration count, updated before every
iteration. Once the slope is 1 the backbone can be re-parameterised (``switch_to_deploy()``,
``tools/deploy/reparameterize.py``) without changing its outputs.

Resume and testing. The slope is written to the checkpoint's ``meta['act_learn']`` and set back
on the model when a checkpoint is loaded (``--resume``, ``load_from``, ``tools/test.py``), so a
resumed run continues where it stopped and a checkpoint saved mid-ramp is evaluated with the
slope it was trained at. The current value is also in the message hub (``act_learn`` runtime
info and the ``train/act_learn`` scalar in the training log).
"""
import math
from typing import List, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop

from mmbackbones.models.backbones.vanillanet import VanillaNet

try:
    from mmdet.registry import HOOKS
except ImportError:  # pragma: no cover - mmdet is a dependency
    from mmengine.registry import HOOKS

META_KEY = 'act_learn'
SCHEDULES = ('linear', 'cosine')


def act_learn_at(step: int, ramp: int, schedule: str = 'linear') -> float:
    """The slope at epoch (or iteration) ``step`` of a ``ramp``-long ramp."""
    progress = min(step / ramp, 1.0)
    if schedule == 'linear':
        return progress
    return 0.5 * (1.0 - math.cos(math.pi * progress))


def vanillanets(model) -> List[VanillaNet]:
    """Every VanillaNet inside ``model`` (unwrapping DDP and friends)."""
    model = model.module if is_model_wrapper(model) else model
    return [m for m in model.modules() if isinstance(m, VanillaNet)]


@HOOKS.register_module()
class VanillaNetActLearnHook(Hook):
    """Ramp the ``act_learn`` slope of every VanillaNet in the model from 0 to 1.

    Args:
        ramp (int): Length of the ramp, in epochs (``by_epoch=True``) or iterations. The official
            ImageNet recipe ramps over 100 of 300 epochs (``--decay_epochs``).
        by_epoch (bool): Count epochs (update before each epoch) or iterations (before each
            iteration). Default: True.
        schedule (str): ``'linear'`` (official default) or ``'cosine'``. Default: ``'linear'``.
    """

    priority = 'NORMAL'

    def __init__(self, ramp: int, by_epoch: bool = True, schedule: str = 'linear') -> None:
        if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 1:
            raise ValueError(f'VanillaNetActLearnHook: ramp={ramp!r} must be a positive int '
                             f'(epochs with by_epoch=True, else iterations).')
        if schedule not in SCHEDULES:
            raise ValueError(f'VanillaNetActLearnHook: schedule={schedule!r} is unknown; choose '
                             f'one of {", ".join(SCHEDULES)}.')
        self.ramp = ramp
        self.by_epoch = bool(by_epoch)
        self.schedule = schedule
        self.current: Optional[float] = None

    def value_at(self, step: int) -> float:
        return act_learn_at(step, self.ramp, self.schedule)

    # ------------------------------------------------------------------ hook points
    def before_train(self, runner) -> None:
        nets = self._nets(runner)
        deployed = [n for n in nets if n.deploy]
        if deployed:
            raise RuntimeError('VanillaNetActLearnHook: the model holds a deploy-form '
                               'VanillaNet, which has no act_learn to ramp; train the train form '
                               '(deploy=False).')
        if self.by_epoch and isinstance(runner.train_loop, IterBasedTrainLoop):
            raise ValueError(f'VanillaNetActLearnHook: by_epoch=True, but training is '
                             f'iteration-based (IterBasedTrainLoop), where the epoch never '
                             f'advances; pass by_epoch=False and ramp={self.ramp} in iterations.')
        # A resumed run continues its ramp: the step counters come from the checkpoint.
        self.set(runner, self.value_at(runner.epoch if self.by_epoch else runner.iter))

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self.set(runner, self.value_at(runner.epoch))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.by_epoch:
            self.set(runner, self.value_at(runner.iter))
        runner.message_hub.update_scalar('train/act_learn', self.current)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.current is not None:
            checkpoint.setdefault('meta', {})[META_KEY] = self.current

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        value = checkpoint.get('meta', {}).get(META_KEY)
        if value is not None:
            self.set(runner, float(value), source='the checkpoint')

    # ------------------------------------------------------------------ changes
    def _nets(self, runner) -> List[VanillaNet]:
        nets = vanillanets(runner.model)
        if not nets:
            raise TypeError(f'VanillaNetActLearnHook: the model ({type(runner.model).__name__}) '
                            f'has no VanillaNet backbone; remove the hook or use VanillaNet.')
        return nets

    def set(self, runner, value: float, source: str = 'the schedule') -> None:
        """Set ``act_learn`` on every VanillaNet of the runner's model."""
        for net in self._nets(runner):
            net.act_learn = value
        if source != 'the schedule':
            print_log(f'VanillaNetActLearnHook: act_learn = {value:.4f} (from {source})',
                      logger='current')
        elif value != self.current and (self.by_epoch or value in (0.0, 1.0)):
            where = f'epoch {runner.epoch}' if self.by_epoch else f'iter {runner.iter}'
            print_log(f'VanillaNetActLearnHook: {where}: act_learn = {value:.4f}',
                      logger='current')
        self.current = value
        runner.message_hub.update_info(META_KEY, value)
