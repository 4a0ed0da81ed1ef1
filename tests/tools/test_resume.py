# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/train.py: a SIGKILLed run, resumed, ends with the weights of an uninterrupted run."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmbackbones.engine.checkpoint import is_valid_checkpoint, load_checkpoint_weights_only
from tests.toolserver import ToolServer

REPO = Path(__file__).resolve().parents[2]
MAX_ITERS = 8  # tiny config: checkpoints every 2 iterations


@pytest.fixture(scope='module')
def train_tool(tool_env):
    """``train_tool(*args)`` runs ``python tools/train.py args`` like conftest's ``run_tool``
    (same environment, stderr into stdout), as a fork of one interpreter that imported train.py's
    modules once (tests/toolserver.py) instead of a new interpreter each time."""
    script = REPO / 'tools' / 'train.py'
    server = ToolServer([script], env=tool_env, cwd=str(REPO))
    yield lambda *args, timeout=300: server.run([script, *args], timeout=timeout,
                                                merge_stderr=True)
    server.close()


def final_state(work_dir: Path) -> dict:
    # a training checkpoint (HistoryBuffers): plain torch.load(weights_only=True) refuses it,
    # since mmbackbones' extra globals apply to its own loads only; only the tensors are compared
    return load_checkpoint_weights_only(work_dir / f'iter_{MAX_ITERS}.pth',
                                        map_location='cpu')['state_dict']


def start_train(work_dir: Path, tiny_config, tiny_cfg_options, tool_env, log: Path, *extra):
    cmd = [sys.executable, str(REPO / 'tools' / 'train.py'), tiny_config, '--work-dir',
           str(work_dir), *extra, '--cfg-options', *tiny_cfg_options,
           f'train_cfg.max_iters={MAX_ITERS}']
    return subprocess.Popen(cmd, cwd=str(REPO), env=tool_env, stdout=log.open('w'),
                            stderr=subprocess.STDOUT)


# tiny_rtdetr draws denoising noise every iteration: it resumes exactly only because each
# checkpoint holds the generators' state (RNGStateHook, added by tools/train.py).
TINY_RTDETR = str(REPO / 'tests' / 'data' / 'configs' / 'tiny_rtdetr.py')


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, train_tool, tiny_config, tiny_cfg_options):
    """``uninterrupted(detector)``: (work dir, log) of a MAX_ITERS run without interruption, one
    per detector and module. It is started with ``--resume`` in an empty work dir, which is to start
    from scratch (test_auto_resume_without_checkpoints_starts_fresh checks that on its log)."""
    runs = {}

    def get(detector: str):
        if detector not in runs:
            config = TINY_RTDETR if detector == 'rtdetr' else tiny_config
            work_dir = tmp_path_factory.mktemp(f'uninterrupted_{detector}')
            proc = train_tool(config, '--work-dir', work_dir, '--resume', '--cfg-options',
                              *tiny_cfg_options, f'train_cfg.max_iters={MAX_ITERS}')
            assert proc.returncode == 0, proc.stdout[-6000:]
            runs[detector] = work_dir, proc.stdout
        return runs[detector]
    return get


@pytest.mark.parametrize('detector', ['retinanet', 'rtdetr'])
def test_killed_run_resumes_to_the_same_weights(tmp_path, train_tool, uninterrupted, tiny_config,
                                                tiny_cfg_options, tool_env, detector):
    if detector == 'rtdetr':
        tiny_config = TINY_RTDETR
    # 1. a run (a new interpreter) that is SIGKILLed once its first checkpoint is on disk
    killed_dir = tmp_path / 'killed'
    log = tmp_path / 'killed.log'
    proc = start_train(killed_dir, tiny_config, tiny_cfg_options, tool_env, log)
    deadline = time.monotonic() + 240
    try:
        while not (killed_dir / 'last_checkpoint').exists():
            assert proc.poll() is None, 'train.py exited before writing a checkpoint:\n' \
                + log.read_text()[-6000:]
            assert time.monotonic() < deadline, 'no checkpoint after 240 s:\n' + log.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = sorted(p.name for p in killed_dir.glob('iter_*.pth'))
    assert saved and f'iter_{MAX_ITERS}.pth' not in saved, (saved, log.read_text()[-3000:])
    assert not (killed_dir / f'iter_{MAX_ITERS}.pth').exists()

    # 2. plant a half-written newer checkpoint and point last_checkpoint at it, as if the kill had
    #    hit mid-save with a non-atomic writer
    newest_valid = max(killed_dir.glob('iter_*.pth'), key=lambda p: int(p.stem.split('_')[1]))
    assert is_valid_checkpoint(newest_valid)
    torn_step = int(newest_valid.stem.split('_')[1]) + 2
    torn = killed_dir / f'iter_{torn_step}.pth'
    data = newest_valid.read_bytes()
    torn.write_bytes(data[:len(data) // 2])
    (killed_dir / 'last_checkpoint').write_text(str(torn))

    # 3. auto-resume finishes the run from the newest valid checkpoint
    resumed = train_tool(tiny_config, '--work-dir', killed_dir, '--resume',
                         '--cfg-options', *tiny_cfg_options, f'train_cfg.max_iters={MAX_ITERS}')
    out = resumed.stdout
    assert resumed.returncode == 0, out[-6000:]
    assert f"Skipping checkpoint '{torn}'" in out, out[-6000:]
    assert f"resuming from '{newest_valid}'" in out, out[-6000:]
    assert f'resumed epoch: 0, iter: {newest_valid.stem.split("_")[1]}' in out, out[-6000:]

    # 4. the same run without interruption
    reference_dir, _ = uninterrupted(detector)

    # Bitwise equal: same seed, deterministic algorithms, one thread, no random augmentation,
    # mmengine replays the data order by skipping the batches already trained on, and the model's
    # own random draws (RT-DETR's denoising) continue from the generators' saved state.
    got, want = final_state(killed_dir), final_state(reference_dir)
    assert got.keys() == want.keys()
    differing = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differing, differing


def test_resume_arguments_are_checked(tmp_path, load_tool, capsys, tiny_config,
                                      tiny_cfg_options):
    train = load_tool('train')
    missing = tmp_path / 'missing.pth'
    with pytest.raises(SystemExit) as exit_info:
        train.main([tiny_config, '--work-dir', str(tmp_path), '--resume', str(missing),
                    '--cfg-options', *tiny_cfg_options])
    assert exit_info.value.code == 2
    assert f"--resume: checkpoint '{missing}' does not exist" in capsys.readouterr().err

    torn = tmp_path / 'iter_2.pth'
    torn.write_bytes(b'PK\x03\x04' + b'\0' * 100)
    with pytest.raises(SystemExit) as exit_info:
        train.main([tiny_config, '--work-dir', str(tmp_path), '--resume', str(torn),
                    '--cfg-options', *tiny_cfg_options])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'truncated or corrupt' in err and str(torn) in err


def test_train_argument_errors(tmp_path, load_tool, capsys, tiny_config):
    train = load_tool('train')
    with pytest.raises(SystemExit) as exit_info:
        train.main([tiny_config, '--work-dir', str(tmp_path), '--auto-scale-lr',
                    '--cfg-options', 'auto_scale_lr=None'])
    assert exit_info.value.code == 2
    assert '--auto-scale-lr: the config needs auto_scale_lr' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        train.main([str(tmp_path / 'nope.py')])
    assert exit_info.value.code == 2
    assert f"config: '{tmp_path / 'nope.py'}' is not a file" in capsys.readouterr().err


# --amp on a CPU: tests/tools/test_amp_tools.py (the answer depends on the CPU's bf16 kernels)
@pytest.mark.parametrize('extra, message', [
    (['--launcher', 'slurm'], 'supported with --launcher pytorch only'),
])
def test_cpu_only_argument_errors(tmp_path, train_tool, tiny_config, extra, message):
    # tool_env hides any GPU (CUDA_VISIBLE_DEVICES=''), i.e. these are the errors of a CPU machine
    proc = train_tool(tiny_config, '--work-dir', tmp_path, *extra)
    assert proc.returncode == 2, proc.stdout[-4000:]
    assert message in proc.stdout


def test_auto_resume_without_checkpoints_starts_fresh(uninterrupted):
    # the uninterrupted retinanet run: --resume in an empty work dir (its exit status is checked
    # where it is made)
    work_dir, log = uninterrupted('retinanet')
    assert 'no valid checkpoint' in log and 'from scratch' in log
    assert is_valid_checkpoint(work_dir / 'iter_2.pth')


def test_config_level_resume_is_validated_too(tmp_path):
    """``resume = True`` in a config (no --resume) also avoids a torn checkpoint."""
    from mmengine.config import Config

    from mmbackbones.engine import launch
    for step in (2, 4):
        torch.save({'meta': {'iter': step}}, tmp_path / f'iter_{step}.pth')
    torn = tmp_path / 'iter_6.pth'
    torn.write_bytes((tmp_path / 'iter_4.pth').read_bytes()[:50])
    (tmp_path / 'last_checkpoint').write_text(str(torn))

    cfg = Config(dict(work_dir=str(tmp_path), resume=True, load_from=None))
    assert launch.apply_resume(cfg, None) == str(tmp_path / 'iter_4.pth')
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'iter_4.pth')

    cfg = Config(dict(work_dir=str(tmp_path), resume=True, load_from=str(torn)))
    with pytest.raises(launch.UsageError, match='truncated or corrupt'):
        launch.apply_resume(cfg, None)

    cfg = Config(dict(work_dir=str(tmp_path), resume=False, load_from='pretrained.pth'))
    assert launch.apply_resume(cfg, None) is None
    assert cfg.resume is False and cfg.load_from == 'pretrained.pth'  # plain weight loading


def test_atomic_writes_respect_a_configured_backend(tmp_path):
    from mmengine.config import Config

    from mmbackbones.engine import launch
    cfg = Config(dict(work_dir=str(tmp_path), default_hooks=dict(
        checkpoint=dict(type='CheckpointHook', interval=1))))
    assert launch.enable_atomic_checkpoint_writes(cfg)
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')

    own = dict(backend='local')
    cfg = Config(dict(work_dir=str(tmp_path), default_hooks=dict(
        checkpoint=dict(type='CheckpointHook', interval=1, backend_args=own))))
    assert not launch.enable_atomic_checkpoint_writes(cfg)
    assert cfg.default_hooks.checkpoint.backend_args == own

    cfg = Config(dict(work_dir=str(tmp_path), default_hooks=dict(
        checkpoint=dict(type='CheckpointHook', interval=1, out_dir='s3://bucket/ckpts'))))
    assert not launch.enable_atomic_checkpoint_writes(cfg)
