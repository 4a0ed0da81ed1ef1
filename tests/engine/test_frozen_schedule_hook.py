# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""FrozenStagesScheduleHook in real mmengine training runs of the tiny RetinaNet (in-process)."""
import uuid
from typing import Dict, List, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmbackbones.engine.frozen_stages import set_frozen_stages, stage_groups
from mmbackbones.engine.hooks.frozen_stages import FrozenStagesScheduleHook, parse_schedule
from mmbackbones.models import VoVNet

SCHEDULE = {0: 4, 1: 2, 2: -1}  # iteration 0: all frozen; 1: stages 3, 4 train; 2, 3: all train


def make_cfg(tiny_config, tiny_cfg_options, work_dir, *, frozen: int, paramwise: bool,
             schedule=SCHEDULE, max_iters: int = 4) -> Config:
    cfg = Config.fromfile(tiny_config)
    cfg.merge_from_dict(dict(opt.split('=', 1) for opt in tiny_cfg_options))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'frozen_schedule_{uuid.uuid4().hex[:8]}'  # own logger per runner
    cfg.visualizer.name = cfg.experiment_name
    cfg.train_cfg.max_iters = max_iters
    cfg.model.backbone.frozen_stages = frozen
    cfg.custom_hooks = [dict(type='FrozenStagesScheduleHook', schedule=schedule)]
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # no validation: not tested here
    if paramwise:  # per-parameter groups, frozen parameters left out (mmengine's constructor)
        cfg.optim_wrapper.paramwise_cfg = dict(norm_decay_mult=0.0,
                                               custom_keys={'backbone.stages': dict(lr_mult=0.5)})
    return cfg


class Probe(Hook):
    """Records, before each iteration (after the schedule hook ran) and after each step, what the
    schedule hook is responsible for."""

    priority = 'LOW'

    def __init__(self) -> None:
        self.before: Dict[int, dict] = {}
        self.after: Dict[int, dict] = {}

    def _state(self, runner) -> dict:
        optimizer = runner.optim_wrapper.optimizer
        backbone = runner.model.backbone
        return dict(
            requires_grad=[[p.requires_grad for m in g for p in m.parameters()]
                           for g in stage_groups(backbone)],
            training=[[m.training for m in g] for g in stage_groups(backbone)],
            in_optimizer={id(p) for g in optimizer.param_groups for p in g['params']},
            groups={id(p): {k: v for k, v in g.items() if k != 'params'}
                    for g in optimizer.param_groups for p in g['params']},
            buffers={id(p): (s['momentum_buffer'], s['momentum_buffer'].clone())
                     for p, s in optimizer.state.items() if 'momentum_buffer' in s})

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.before[runner.iter] = self._state(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.after[runner.iter] = self._state(runner)


def train(cfg: Config) -> Tuple[Runner, Probe]:
    runner = Runner.from_cfg(cfg)
    probe = Probe()
    runner.register_hook(probe)
    runner.train()
    return runner, probe


def trainable_stages(state: dict) -> List[bool]:
    return [all(flags) for flags in state['requires_grad']]


@pytest.fixture(scope='module')
def scheduled_run(tmp_path_factory, tiny_config, tiny_cfg_options):
    """4 iterations with SCHEDULE and per-parameter groups; checkpoints iter_2 and iter_4."""
    work_dir = tmp_path_factory.mktemp('scheduled_run')
    runner, probe = train(make_cfg(tiny_config, tiny_cfg_options, work_dir, frozen=4,
                                   paramwise=True))
    return runner, probe, work_dir


def test_schedule_changes_freezing_and_optimizer_at_the_right_iterations(scheduled_run):
    runner, probe, _ = scheduled_run
    backbone = runner.model.backbone
    groups = stage_groups(backbone)
    expected = {0: [False] * 5, 1: [False] * 3 + [True] * 2, 2: [True] * 5, 3: [True] * 5}
    for it, trainable in expected.items():
        state = probe.before[it]
        assert trainable_stages(state) == trainable, it
        assert [any(f) for f in state['requires_grad']] == trainable, it  # whole stages
        # frozen stages in eval mode, trainable ones train (norm_eval=False in the tiny config)
        assert [all(t) for t in state['training']] == trainable, it
        for idx, modules in enumerate(groups):
            ids = {id(p) for m in modules for p in m.parameters()}
            assert (ids <= state['in_optimizer']) == trainable[idx], (it, idx)
            if not trainable[idx]:
                assert not ids & state['in_optimizer'], (it, idx)

    # Other parameters' optimiser state survives each change: same buffer objects, same values.
    for change in (1, 2):
        old, new = probe.after[change - 1]['buffers'], probe.before[change]['buffers']
        assert old and set(old) <= set(new)
        for pid, (buffer, value) in old.items():
            assert new[pid][0] is buffer
            assert torch.equal(new[pid][1], value)

    # Newly trainable parameters get the settings the constructor gives trainable ones, and the
    # schedulers drive them: lr_mult=0.5 for backbone.stages (a custom key overrides the norm
    # rule in mmengine), no decay on the stem's norm layers (norm_decay_mult=0).
    optimizer = runner.optim_wrapper.optimizer
    neck_conv = runner.model.neck.fpn_convs[0].conv.weight
    stem_bn = next(p for m in backbone.stem.modules() if isinstance(m, torch.nn.BatchNorm2d)
                   for p in m.parameters())
    late_conv = next(p for p in backbone.stages[2].parameters() if p.dim() == 4)  # from iter 1
    early_conv = next(p for p in backbone.stages[0].parameters() if p.dim() == 4)  # from iter 2
    state = probe.before[1]['groups']
    lr = state[id(neck_conv)]['lr']
    assert lr < 0.0099  # still in the LinearLR warm-up
    assert state[id(late_conv)]['lr'] == pytest.approx(0.5 * lr)
    assert state[id(late_conv)]['initial_lr'] == pytest.approx(0.005)
    assert state[id(late_conv)]['weight_decay'] == pytest.approx(1e-4)
    state = probe.before[2]['groups']
    assert state[id(stem_bn)]['initial_lr'] == pytest.approx(0.01)
    assert state[id(stem_bn)]['weight_decay'] == 0.0
    for name, state in [('iter 2', probe.before[2]['groups']),
                        ('end', {id(p): g for g in optimizer.param_groups for p in g['params']})]:
        lr = state[id(neck_conv)]['lr']
        assert state[id(stem_bn)]['lr'] == pytest.approx(lr), name
        for conv in (early_conv, late_conv):
            assert state[id(conv)]['lr'] == pytest.approx(0.5 * lr), name
    for param in backbone.parameters():  # every backbone parameter took optimiser steps
        assert 'momentum_buffer' in optimizer.state[param]


def test_single_group_optimizer_keeps_its_groups(tmp_path, tiny_config, tiny_cfg_options):
    """Without paramwise_cfg every parameter, frozen or not, is in mmengine's one group already."""
    runner, probe = train(make_cfg(tiny_config, tiny_cfg_options, tmp_path, frozen=-1,
                                   paramwise=False, schedule={0: 4, 2: 1}, max_iters=3))
    assert len(runner.optim_wrapper.optimizer.param_groups) == 1
    assert trainable_stages(probe.before[0]) == [False] * 5
    assert trainable_stages(probe.before[2]) == [False] * 2 + [True] * 3
    assert probe.before[0]['in_optimizer'] == probe.before[2]['in_optimizer']
    old, new = probe.after[1]['buffers'], probe.before[2]['buffers']
    assert old and all(new[pid][0] is buf and torch.equal(new[pid][1], v)
                       for pid, (buf, v) in old.items())


def test_resume_restores_freezing_and_optimizer(scheduled_run, tmp_path, tiny_config,
                                                tiny_cfg_options):
    """A run resumed from iter_2 (after the first unfreezing) ends like the uninterrupted one."""
    ref_runner, _, ref_dir = scheduled_run
    checkpoint = ref_dir / 'iter_2.pth'
    meta = torch.load(checkpoint, map_location='cpu', weights_only=False)['meta']
    assert meta['frozen_stages_schedule']['frozen_stages'] == 2
    assert len(meta['frozen_stages_schedule']['added_params']) > 0

    cfg = make_cfg(tiny_config, tiny_cfg_options, tmp_path / 'resumed', frozen=4, paramwise=True)
    cfg.resume, cfg.load_from = True, str(checkpoint)
    runner, probe = train(cfg)
    assert sorted(probe.before) == [2, 3]
    assert trainable_stages(probe.before[2]) == [True] * 5
    assert trainable_stages(probe.before[3]) == [True] * 5
    ref_opt, opt = ref_runner.optim_wrapper.optimizer, runner.optim_wrapper.optimizer
    assert len(opt.param_groups) == len(ref_opt.param_groups)
    ref_params = dict(ref_runner.model.named_parameters())
    for name, param in runner.model.named_parameters():
        torch.testing.assert_close(param, ref_params[name], rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(opt.state[param]['momentum_buffer'],
                                   ref_opt.state[ref_params[name]]['momentum_buffer'],
                                   rtol=1e-5, atol=1e-7, msg=name)
    for group, ref_group in zip(opt.param_groups, ref_opt.param_groups):
        assert {k: v for k, v in group.items() if k != 'params'} == \
            {k: v for k, v in ref_group.items() if k != 'params'}


def test_set_frozen_stages_on_mmbackbones_and_mmdet_resnet():
    from mmdet.models.backbones import ResNet
    vov = VoVNet(arch='V-19-slim-dw-eSE', frozen_stages=3, norm_eval=True,
                 out_indices=(0, 1, 2, 3), norm_cfg=dict(type='BN', requires_grad=False))
    resnet = ResNet(depth=18, frozen_stages=3, norm_eval=True,
                    norm_cfg=dict(type='BN', requires_grad=False))
    for model in (vov, resnet):
        model.train()  # mmdet's ResNet.train() returns None
        set_frozen_stages(model, 1)
        assert model.frozen_stages == 1
        groups = stage_groups(model)
        for idx, modules in enumerate(groups):
            for module in modules:
                for sub in module.modules():
                    is_norm = isinstance(sub, torch.nn.BatchNorm2d)
                    for param in sub.parameters(recurse=False):
                        # unfrozen convs train again; norm affines stay as norm_cfg built them
                        assert param.requires_grad == (idx > 1 and not is_norm), (model, idx)
                    if is_norm:
                        assert not sub.training  # norm_eval re-applied
                if idx > 0 or model is vov:  # mmdet's ResNet leaves its stem conv in train mode
                    assert module.training == (idx > 1)
        if model is vov:  # frozen means cheap after the change too: no graph through stage 1
            outs = model(torch.randn(1, 3, 67, 93))
            assert outs[0].grad_fn is None and outs[1].grad_fn is not None
        set_frozen_stages(model, 4)
        assert not any(p.requires_grad for m in groups[:5] for mod in m for p in mod.parameters())
    with pytest.raises(ValueError, match=r'frozen_stages=5 is out of range'):
        set_frozen_stages(resnet, 5)


def test_schedule_parsing_and_errors():
    assert parse_schedule('0:4, 200:2,400:-1') == {0: 4, 200: 2, 400: -1}
    assert parse_schedule([(100, 2), (0, 4)]) == {0: 4, 100: 2}
    hook = FrozenStagesScheduleHook({0: 4, 2000: 2, 4000: -1})
    assert [hook.value_at(s) for s in (0, 1999, 2000, 5000)] == [4, 4, 2, -1]
    assert FrozenStagesScheduleHook({10: 2}).value_at(5) is None
    for bad in ('0-4', {-1: 2}, {0: 'x'}, {}, [(0, 1), (0, 2)]):
        with pytest.raises(ValueError, match='schedule'):
            parse_schedule(bad)
