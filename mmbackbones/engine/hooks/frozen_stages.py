# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Progressive unfreezing: change the backbone's ``frozen_stages`` during training.

    custom_hooks = [dict(type='FrozenStagesScheduleHook', schedule={0: 4, 2000: 2, 4000: -1})]

From iteration 0 the stem and stages 1-4 are frozen, from iteration 2000 only the stem and stages
1-2, from 4000 nothing. ``by_epoch=True`` reads the keys as epochs. Works for every mmbackbones
backbone and mmdet's ResNet family (see :mod:`mmbackbones.engine.frozen_stages`).

The optimiser. mmengine's ``DefaultOptimWrapperConstructor`` puts every parameter, frozen or not,
in its single group when there is no ``paramwise_cfg``; with a ``paramwise_cfg`` it gives each
trainable parameter its own group and leaves frozen ones out. A parameter that becomes trainable
and is already in a group is left there (its group has the right settings). One that is in no
group gets its own group, with the settings the constructor gives it when it is trainable
(``lr_mult``, ``decay_mult``, norm/bias rules; found by running the config's constructor on the
model), the live optimiser's ``auto_scale_lr`` factor and current schedule factor, and an entry in
every parameter scheduler of the optimiser. No existing group or state (momentum buffers, Adam
moments) is touched.

Resume. The hook stores its setting and the parameters it added (in order) in the checkpoint's
meta. On resume it re-applies both right after the checkpoint is read and before mmengine loads
the optimiser state, so the optimiser has the saved group structure again.
"""
import copy
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import nn

from mmbackbones.engine.frozen_stages import frozen_settings, set_frozen_stages

try:
    from mmdet.registry import HOOKS
except ImportError:  # pragma: no cover - mmdet is a dependency
    from mmengine.registry import HOOKS

META_KEY = 'frozen_stages_schedule'
Schedule = Union[Dict[int, int], Sequence[Tuple[int, int]]]


def parse_schedule(schedule: Union[Schedule, str]) -> Dict[int, int]:
    """``{0: 4, 2000: 2}``, ``[(0, 4), (2000, 2)]`` or ``'0:4,2000:2'`` -> a sorted dict."""
    text = schedule if isinstance(schedule, str) else None
    try:
        if text is not None:
            pairs = [item.split(':') for item in text.replace(' ', '').split(',') if item]
            pairs = [(int(step), int(stages)) for step, stages in pairs]
        else:
            pairs = list(schedule.items()) if isinstance(schedule, dict) else list(schedule)
            pairs = [(step, stages) for step, stages in pairs]
    except (TypeError, ValueError, AttributeError):
        pairs = None
    bad = (not pairs or any(not isinstance(v, int) or isinstance(v, bool)
                            for pair in pairs for v in pair)
           or any(step < 0 for step, _ in pairs))
    if bad:
        raise ValueError(f'FrozenStagesScheduleHook: schedule={schedule!r} is not valid; give '
                         'step -> frozen_stages as a dict like {0: 4, 2000: 2, 4000: -1}, a list '
                         "of (step, frozen_stages) pairs, or a string like '0:4,2000:2,4000:-1' "
                         '(steps are non-negative ints, iterations or epochs with by_epoch=True).')
    if len({step for step, _ in pairs}) != len(pairs):
        raise ValueError(f'FrozenStagesScheduleHook: schedule={schedule!r} repeats a step.')
    return dict(sorted(pairs))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class FrozenStagesScheduleHook(Hook):
    """Change ``model.backbone``'s ``frozen_stages`` at given iterations (or epochs).

    Args:
        schedule (dict | list | str): step -> frozen_stages, e.g. ``{0: 4, 2000: 2, 4000: -1}``.
            Before the first step the config's ``frozen_stages`` applies.
        by_epoch (bool): Steps are epochs (applied before each epoch) instead of iterations
            (applied before each iteration). Default: False.
    """

    priority = 'NORMAL'

    def __init__(self, schedule: Union[Schedule, str], by_epoch: bool = False) -> None:
        self.schedule = parse_schedule(schedule)
        self.by_epoch = bool(by_epoch)
        self.current: Optional[int] = None
        self.added: List[str] = []  # parameter names (model-relative) added to the optimiser

    # ------------------------------------------------------------------ schedule
    def value_at(self, step: int) -> Optional[int]:
        """The scheduled ``frozen_stages`` at ``step`` (None before the first key)."""
        value = None
        for key, stages in self.schedule.items():
            if key <= step:
                value = stages
        return value

    def _step(self, runner) -> int:
        return runner.epoch if self.by_epoch else runner.iter

    # ------------------------------------------------------------------ hook points
    def before_run(self, runner) -> None:
        model = _unwrap(runner.model)
        backbone = getattr(model, 'backbone', None)
        if backbone is None:
            raise TypeError(f'FrozenStagesScheduleHook: the model ({type(model).__name__}) has no '
                            '`backbone` attribute.')
        valid = frozen_settings(backbone)  # also rejects unsupported backbones
        bad = {k: v for k, v in self.schedule.items() if v not in valid}
        if bad:
            raise ValueError(f'FrozenStagesScheduleHook: schedule entries {bad} are out of range '
                             f'for {type(backbone).__name__}; frozen_stages must be one of '
                             f'{valid}.')
        self._check_ddp(runner, backbone)

    def before_train(self, runner) -> None:
        self.apply(runner, self.value_at(self._step(runner)))

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self.apply(runner, self.value_at(runner.epoch))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.by_epoch:
            self.apply(runner, self.value_at(runner.iter))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[META_KEY] = dict(
            frozen_stages=self.current, added_params=list(self.added), by_epoch=self.by_epoch,
            schedule=dict(self.schedule))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Only when resuming (load_from of a finished run starts a new schedule), and only in
        # training, where the optimiser exists and is about to receive the saved state.
        if not getattr(runner, '_resume', False) or not isinstance(runner.optim_wrapper,
                                                                   OptimWrapper):
            return
        meta = checkpoint.get('meta', {})
        state = meta.get(META_KEY)
        if state is None:  # a checkpoint from a run without this hook: follow the schedule
            step = meta.get('epoch' if self.by_epoch else 'iter', 0)
            self.apply(runner, self.value_at(step))
            return
        model = _unwrap(runner.model)
        if state['frozen_stages'] is not None:
            set_frozen_stages(model.backbone, state['frozen_stages'])
            self.current = state['frozen_stages']
        params = dict(model.named_parameters())
        missing = [name for name in state['added_params'] if name not in params]
        if missing:
            raise RuntimeError(f'FrozenStagesScheduleHook: the checkpoint lists parameters the '
                               f'model does not have: {missing[:5]}; is it from another model?')
        self._add_to_optimizer(runner, [(name, params[name]) for name in state['added_params']])

    # ------------------------------------------------------------------ changes
    def apply(self, runner, frozen_stages: Optional[int]) -> None:
        """Set ``frozen_stages`` and give newly trainable parameters to the optimiser."""
        if frozen_stages is None or frozen_stages == self.current:
            return
        model = _unwrap(runner.model)
        previous = model.backbone.frozen_stages
        set_frozen_stages(model.backbone, frozen_stages)
        self.current = frozen_stages
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        added = self._add_to_optimizer(runner, trainable)
        if previous != frozen_stages or added:
            where = f'epoch {runner.epoch}' if self.by_epoch else f'iter {runner.iter}'
            print_log(f'FrozenStagesScheduleHook: {where}: frozen_stages {previous} -> '
                      f'{frozen_stages}; {len(added)} parameter tensors added to the optimiser.',
                      logger='current')

    def _add_to_optimizer(self, runner, named_params: List[Tuple[str, nn.Parameter]]) -> List[str]:
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, OptimWrapperDict) or not isinstance(wrapper, OptimWrapper):
            raise TypeError('FrozenStagesScheduleHook: needs a single OptimWrapper (the runner '
                            f'has {type(wrapper).__name__}).')
        optimizer = wrapper.optimizer
        present = {id(p) for group in optimizer.param_groups for p in group['params']}
        missing = [(n, p) for n, p in named_params if id(p) not in present]
        if not missing:
            return []
        settings = self._trainable_settings(runner, [p for _, p in missing])
        schedulers = [s for s in _schedulers(runner)
                      if getattr(s, 'optimizer', None) in (wrapper, optimizer)]
        for name, param in missing:
            group = dict(settings[id(param)], params=[param])
            for scheduler in schedulers:
                key = scheduler.param_name
                group.setdefault(f'initial_{key}', group[key])
            optimizer.add_param_group(group)
            for scheduler in schedulers:
                scheduler.base_values.append(group[f'initial_{scheduler.param_name}'])
            self.added.append(name)
        return [name for name, _ in missing]

    def _trainable_settings(self, runner, params: List[nn.Parameter]) -> Dict[int, dict]:
        """Group settings (lr, weight_decay, ...) the config gives ``params`` when trainable."""
        cfg = runner.cfg.get('optim_wrapper')
        if cfg is None:
            raise RuntimeError('FrozenStagesScheduleHook: runner.cfg has no optim_wrapper to '
                               'derive the settings of newly trainable parameters from.')
        logger = logging.getLogger('mmengine')
        level = logger.level
        logger.setLevel(logging.WARNING)  # the constructor logs one line per parameter
        try:
            fresh = runner.build_optim_wrapper(copy.deepcopy(cfg)).optimizer
        finally:
            logger.setLevel(level)
        live = runner.optim_wrapper.optimizer
        # auto_scale_lr and the schedule have scaled the live lrs since the build: measure both
        # on a parameter the fresh and the live optimiser share.
        fresh_of = {id(p): g for g in fresh.param_groups for p in g['params']}
        base_scale, schedule_scale = 1.0, 1.0
        for group in live.param_groups:
            ref = next((fresh_of[id(p)] for p in group['params'] if id(p) in fresh_of), None)
            if ref is not None and ref['lr'] > 0:
                initial = group.get('initial_lr', group['lr'])
                base_scale = initial / ref['lr']
                schedule_scale = group['lr'] / initial if initial > 0 else 1.0
                break
        settings = {}
        for param in params:
            if id(param) not in fresh_of:
                raise RuntimeError('FrozenStagesScheduleHook: the optimiser constructor left out a '
                                   'parameter that is now trainable; cannot derive its settings.')
            group = {k: v for k, v in fresh_of[id(param)].items()
                     if k != 'params' and not k.startswith('initial_')}
            group['initial_lr'] = group['lr'] * base_scale
            group['lr'] = group['initial_lr'] * schedule_scale
            settings[id(param)] = group
        return settings

    def _check_ddp(self, runner, backbone: nn.Module) -> None:
        # DDP reduces gradients only of parameters that required grad when it wrapped the model.
        from torch.nn.parallel import DistributedDataParallel
        if not isinstance(runner.model, DistributedDataParallel):
            return
        lowest = min(self.schedule.values())
        if backbone.frozen_stages > lowest:
            raise ValueError(
                'FrozenStagesScheduleHook: under DistributedDataParallel the config must build the '
                f'backbone with the fewest frozen stages the schedule reaches (frozen_stages='
                f'{lowest}, it has {backbone.frozen_stages}) and set find_unused_parameters=True; '
                'the schedule then freezes from the start.')


def _schedulers(runner) -> List:
    schedulers = runner.param_schedulers
    if schedulers is None:
        return []
    if isinstance(schedulers, dict):
        return [s for group in schedulers.values() for s in group]
    return list(schedulers)
