# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""VanillaNetActLearnHook: the official schedule, in real mmengine runs of a tiny RetinaNet."""
import math
import shutil
import uuid
from typing import Dict

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmbackbones.engine.hooks.act_learn import VanillaNetActLearnHook, act_learn_at

TINY_BACKBONE = dict(type='VanillaNet', arch=dict(dims=[8, 16, 24, 32], strides=[2, 2, 2]),
                     out_indices=(0, 1, 2), act_learn=1.0)


def official(epoch: int, decay_epochs: int, linear: bool) -> float:
    """VanillaNet main.py: act_learn at the start of ``epoch`` (0-based), for epoch <= decay."""
    epoch = min(epoch, decay_epochs)  # after decay_epochs it is left at its last value, 1
    if linear:
        return epoch / decay_epochs * 1.0
    return 0.5 * (1 - math.cos(math.pi * epoch / decay_epochs)) * 1.0


@pytest.mark.parametrize('linear', [True, False])
def test_schedule_is_the_official_one(linear):
    hook = VanillaNetActLearnHook(ramp=100, schedule='linear' if linear else 'cosine')
    for epoch in (0, 1, 17, 50, 99, 100, 101, 299):
        assert hook.value_at(epoch) == pytest.approx(official(epoch, 100, linear), abs=1e-12)
    assert hook.value_at(0) == 0.0 and hook.value_at(100) == 1.0
    assert act_learn_at(3, 4, 'cosine') == pytest.approx(0.5 * (1 - math.cos(0.75 * math.pi)))


@pytest.mark.parametrize('kwargs, match', [
    (dict(ramp=0), r'ramp=0 must be a positive int'),
    (dict(ramp=2.5), r'ramp=2\.5 must be a positive int'),
    (dict(ramp=10, schedule='step'), r"schedule='step' is unknown; choose one of linear, cosine"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VanillaNetActLearnHook(**kwargs)


class Probe(Hook):
    """The backbone's act_learn during each iteration (after the schedule hook ran)."""

    priority = 'LOW'

    def __init__(self) -> None:
        self.seen: Dict[int, float] = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen[runner.iter] = runner.model.backbone.act_learn


def make_cfg(tiny_config, tiny_cfg_options, work_dir, hook: dict, *, epochs: int = 0,
             iters: int = 0) -> Config:
    cfg = Config.fromfile(tiny_config)
    cfg.merge_from_dict(dict(opt.split('=', 1) for opt in tiny_cfg_options))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'act_learn_{uuid.uuid4().hex[:8]}'  # own logger per runner
    cfg.visualizer.name = cfg.experiment_name
    cfg.model.backbone = dict(TINY_BACKBONE)
    cfg.model.neck.in_channels = [16, 24, 32]
    cfg.custom_hooks = [hook]
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if epochs:  # 8 images, batch 2: 4 iterations an epoch; a checkpoint after each epoch
        cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs, val_interval=100)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=True)
        cfg.log_processor.by_epoch = True
        cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                                    end=3)]
    else:
        cfg.train_cfg.max_iters = iters
    return cfg


def train(cfg: Config, resume: bool = False) -> (Runner, Probe):
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    probe = Probe()
    runner.register_hook(probe)
    runner.train()
    return runner, probe


def meta_act_learn(path) -> float:
    return torch.load(path, map_location='cpu', weights_only=False)['meta']['act_learn']


EPOCH_HOOK = dict(type='VanillaNetActLearnHook', ramp=2, by_epoch=True)


def test_epoch_ramp_survives_resume(tmp_path, tiny_config, tiny_cfg_options):
    """Epochs 0, 1, 2 train at 0, 0.5, 1 (official linear, decay_epochs=2), also when the run is
    stopped after epoch 2 and resumed: the weights equal those of the uninterrupted run."""
    full_dir = tmp_path / 'full'
    runner, probe = train(make_cfg(tiny_config, tiny_cfg_options, full_dir, EPOCH_HOOK, epochs=3))
    assert probe.seen == {i: official(i // 4, 2, True) for i in range(12)}
    assert [meta_act_learn(full_dir / f'epoch_{e}.pth') for e in (1, 2, 3)] == [0.0, 0.5, 1.0]
    assert runner.message_hub.get_info('act_learn') == 1.0
    reference = {k: v.clone() for k, v in runner.model.state_dict().items()}

    # The run stopped after epoch 2 (its checkpoint is the full run's, training is deterministic)
    part_dir = tmp_path / 'part'
    part_dir.mkdir()
    shutil.copy(full_dir / 'epoch_2.pth', part_dir / 'epoch_2.pth')
    cfg = make_cfg(tiny_config, tiny_cfg_options, part_dir, EPOCH_HOOK, epochs=3)
    cfg.load_from = str(part_dir / 'epoch_2.pth')
    resumed, probe = train(cfg, resume=True)
    assert probe.seen == {8: 1.0, 9: 1.0, 10: 1.0, 11: 1.0}
    state = resumed.model.state_dict()
    differing = [k for k in reference if not torch.equal(reference[k], state[k])]
    assert not differing, differing


def test_iteration_ramp_resume_restores_the_slope_before_training(tmp_path, tiny_config,
                                                                  tiny_cfg_options):
    """By iterations, cosine. A checkpoint saved mid-ramp brings its slope back on load, so
    evaluating it (load_from, as tools/test.py does) uses the slope it was trained with."""
    hook = dict(type='VanillaNetActLearnHook', ramp=4, by_epoch=False, schedule='cosine')
    work_dir = tmp_path / 'iters'
    _, probe = train(make_cfg(tiny_config, tiny_cfg_options, work_dir, hook, iters=2))
    want = {i: 0.5 * (1 - math.cos(math.pi * min(i / 4, 1))) for i in range(6)}
    assert probe.seen == pytest.approx({i: want[i] for i in range(2)})
    assert meta_act_learn(work_dir / 'iter_2.pth') == pytest.approx(want[1])

    resumed, probe = train(make_cfg(tiny_config, tiny_cfg_options, work_dir, hook, iters=6),
                           resume=True)
    assert probe.seen == pytest.approx({i: want[i] for i in range(2, 6)})
    assert meta_act_learn(work_dir / 'iter_6.pth') == 1.0

    cfg = make_cfg(tiny_config, tiny_cfg_options, tmp_path / 'eval', hook, iters=2)
    cfg.load_from = str(work_dir / 'iter_2.pth')
    runner = Runner.from_cfg(cfg)
    assert runner.model.backbone.act_learn == 1.0  # the constructor's value
    runner.load_or_resume()
    assert runner.model.backbone.act_learn == pytest.approx(want[1])


def test_hook_needs_a_trainable_vanillanet(tmp_path, tiny_config, tiny_cfg_options):
    cfg = make_cfg(tiny_config, tiny_cfg_options, tmp_path, EPOCH_HOOK, iters=1)
    with pytest.raises(ValueError, match=r'by_epoch=True, but training is iteration-based'):
        train(cfg)
    cfg = make_cfg(tiny_config, tiny_cfg_options, tmp_path,
                   dict(EPOCH_HOOK, by_epoch=False), iters=1)
    cfg.model.backbone.deploy = True
    with pytest.raises(RuntimeError, match='deploy-form VanillaNet, which has no act_learn'):
        train(cfg)
    cfg = make_cfg(tiny_config, tiny_cfg_options, tmp_path, EPOCH_HOOK, iters=1)
    cfg.model.backbone = dict(type='ResNet', depth=18, out_indices=(1, 2, 3))
    cfg.model.neck.in_channels = [128, 256, 512]
    with pytest.raises(TypeError, match='has no VanillaNet backbone'):
        train(cfg)
