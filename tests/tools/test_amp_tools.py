# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""``tools/train.py --amp`` and ``tools/test.py --amp`` on a CPU: bf16 autocast.

A real tiny RetinaNet run trains two iterations with ``CPUBF16AmpOptimWrapper`` (float32
weights that move, no loss scaler), validates under ``CPUBF16ValLoop``, and its checkpoint is
tested with ``CPUBF16TestLoop``. The subprocesses set MMBACKBONES_ALLOW_EMULATED_BF16=1, so the
run also works on a CPU without bf16 kernels (reference kernels: same numbers, only slow); a CPU
without them is simulated in-process for the refusal.
"""
import pytest
import torch
from mmengine.config import Config, ConfigDict

from mmbackbones.engine import amp, launch
from mmbackbones.engine.amp import ALLOW_EMULATED_ENV
from mmbackbones.engine.checkpoint import load_checkpoint_weights_only


@pytest.fixture(scope='module')
def bf16_run(tmp_path_factory, tool_env, tiny_config, tiny_cfg_options):
    import subprocess
    import sys

    from tests.conftest import REPO
    work_dir = tmp_path_factory.mktemp('bf16_run')
    env = dict(tool_env, **{ALLOW_EMULATED_ENV: '1'})
    cmd = [sys.executable, str(REPO / 'tools' / 'train.py'), tiny_config, '--amp', '--work-dir',
           str(work_dir), '--cfg-options', *tiny_cfg_options, 'train_cfg.max_iters=2',
           'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=1']
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    return work_dir, proc, env


def test_train_amp_on_cpu_trains_with_bf16_and_fp32_master_weights(bf16_run):
    work_dir, proc, _ = bf16_run
    log = proc.stdout
    assert proc.returncode == 0, log[-6000:]
    assert "type='CPUBF16AmpOptimWrapper'" in log and "type='CPUBF16ValLoop'" in log, log[-6000:]
    assert 'Iter(train) [2/2]' in log and ' loss: ' in log, log[-6000:]
    assert 'coco/bbox_mAP' in log, log[-6000:]  # validation ran under the bf16 loop
    first = load_checkpoint_weights_only(str(work_dir / 'iter_1.pth'))
    second = load_checkpoint_weights_only(str(work_dir / 'iter_2.pth'))
    weights = {k: v for k, v in second['state_dict'].items() if v.is_floating_point()}
    assert weights and all(v.dtype == torch.float32 for v in weights.values())
    moved = [k for k, v in weights.items() if 'running' not in k
             and not torch.equal(v, first['state_dict'][k])]
    assert any(k.startswith('backbone.') for k in moved) and any(k.startswith('bbox_head.')
                                                                 for k in moved)
    optimizer = second['optimizer']
    assert 'loss_scaler' not in optimizer
    assert all(s['momentum_buffer'].dtype == torch.float32 for s in optimizer['state'].values())


def test_test_amp_evaluates_under_bf16(bf16_run, tmp_path, tiny_config, tiny_cfg_options):
    import subprocess
    import sys

    from tests.conftest import REPO
    work_dir, train, env = bf16_run
    assert train.returncode == 0, train.stdout[-6000:]
    cmd = [sys.executable, str(REPO / 'tools' / 'test.py'), tiny_config,
           str(work_dir / 'iter_2.pth'), '--amp', '--work-dir', str(tmp_path), '--cfg-options',
           *tiny_cfg_options]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "type='CPUBF16TestLoop'" in proc.stdout and 'coco/bbox_mAP' in proc.stdout


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_amp_on_a_cpu_without_bf16_is_refused(tool, tmp_path, load_tool, capsys, monkeypatch,
                                              tiny_config, tiny_cfg_options):
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: False)
    monkeypatch.delenv(ALLOW_EMULATED_ENV, raising=False)
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cpu')
    ckpt = []
    if tool == 'test':
        ckpt = [str(tmp_path / 'model.pth')]
        torch.save({'state_dict': {}}, ckpt[0])
    with pytest.raises(SystemExit) as exit_info:
        load_tool(tool).main([tiny_config, *ckpt, '--amp', '--work-dir', str(tmp_path),
                              '--cfg-options', *tiny_cfg_options])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f'{tool}.py: error: --amp: bfloat16 autocast on the CPU needs bf16 kernels' in err
    assert 'Drop --amp on this machine' in err and f'{ALLOW_EMULATED_ENV}=1' in err


def _cfg(**kwargs) -> Config:
    base = dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=1)),
                val_cfg=dict(type='ValLoop'), test_cfg=dict(type='TestLoop'))
    return Config(dict(base, **kwargs))


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: True)
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cpu')


def test_enable_amp_on_cpu_and_gpu(bf16_cpu, monkeypatch):
    cfg = _cfg()
    launch.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'CPUBF16AmpOptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper
    assert cfg.val_cfg == ConfigDict(type='CPUBF16ValLoop')
    launch.enable_test_amp(cfg)
    assert cfg.test_cfg == ConfigDict(type='CPUBF16TestLoop')

    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cuda')
    cfg = _cfg()
    launch.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.val_cfg == ConfigDict(type='ValLoop', fp16=True)
    launch.enable_test_amp(cfg)
    assert cfg.test_cfg == ConfigDict(type='TestLoop', fp16=True)
    cfg = _cfg(test_cfg=dict(type='CPUBF16TestLoop'))
    with pytest.raises(launch.UsageError, match="test_cfg.type='CPUBF16TestLoop' autocasts CPU "
                       "operations only, but this run is on 'cuda'"):
        launch.enable_test_amp(cfg)


def test_enable_amp_errors(bf16_cpu):
    cfg = _cfg()
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    with pytest.raises(launch.UsageError, match="optim_wrapper.type='AmpOptimWrapper', which "
                       "does not run on the CPU; use 'CPUBF16AmpOptimWrapper' there"):
        launch.enable_amp(cfg)
    cfg.optim_wrapper.type = 'OneCycleWrapper'
    with pytest.raises(launch.UsageError, match='--amp works with optim_wrapper.type="OptimWrapper"'
                       " only, but the config has 'OneCycleWrapper'"):
        launch.enable_amp(cfg)
    cfg = _cfg(test_cfg=dict(type='MyTestLoop'))
    with pytest.raises(launch.UsageError, match=r"test_cfg.type='MyTestLoop' is not MMEngine's "
                       r"TestLoop, .*; use test_cfg=dict\(type='TestLoop'\) or drop --amp"):
        launch.enable_test_amp(cfg)
    cfg = _cfg(val_cfg=dict(type='MyValLoop'))
    launch.enable_amp(cfg)  # warns: training is mixed, that validation loop stays float32
    assert cfg.val_cfg.type == 'MyValLoop' and 'fp16' not in cfg.val_cfg
    with pytest.raises(ValueError, match='CPUBF16ValLoop: fp16=True is not supported'):
        amp.CPUBF16ValLoop(runner=None, dataloader=None, evaluator=None, fp16=True)
    cfg = _cfg(test_cfg=dict(type='CPUBF16TestLoop'))
    launch.enable_test_amp(cfg)  # already the CPU loop: kept
    assert cfg.test_cfg == ConfigDict(type='CPUBF16TestLoop')


def _benchmark_tool():
    import importlib.util

    from tests.conftest import REPO
    spec = importlib.util.spec_from_file_location(
        'mmb_benchmark_backbones', REPO / 'tools' / 'analysis' / 'benchmark_backbones.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_amp_bf16_states_the_dtype(tmp_path, monkeypatch, capsys):
    import json
    tool = _benchmark_tool()
    args = ['--family', 'shufflenetv2', '--arch', 'x0.5', '--shape', '1', '3', '64', '64',
            '--rounds', '1', '--warmup', '0', '--modes', 'eval', '--threads', '1']
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: False)
    monkeypatch.delenv(ALLOW_EMULATED_ENV, raising=False)
    for extra, message in [(['--amp', 'bf16'], '--amp bf16: bfloat16 autocast on the CPU needs '
                            'bf16 kernels'),
                           (['--amp', 'fp16'], '--amp fp16: float16 autocast is for --device '
                            'cuda; on a CPU use --amp bf16'),
                           (['--device', 'mps'], "--device: 'mps' is not supported")]:
        with pytest.raises(SystemExit) as exit_info:
            tool.main(args + extra)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    monkeypatch.setenv(ALLOW_EMULATED_ENV, '1')
    out = tmp_path / 'bench.json'
    tool.main(args + ['--amp', 'bf16', '--json', str(out)])
    header = next(line for line in capsys.readouterr().out.splitlines()
                  if line.startswith('torch '))
    assert f', bf16 autocast ({amp.cpu_bf16_kind()}), 1 alternating rounds' in header, header
    data = json.loads(out.read_text())
    assert data['amp'] == 'bf16' and data['amp_kernels'] == amp.cpu_bf16_kind()
    assert [row['mode'] for row in data['rows']] == ['eval']
