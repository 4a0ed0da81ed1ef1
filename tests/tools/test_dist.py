# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/dist_train.sh / dist_test.sh: two torchrun workers on CPU over gloo; rank 0 alone saves."""
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmbackbones.engine.checkpoint import is_valid_checkpoint, load_checkpoint_weights_only

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('detector', ['retinanet', 'rtdetr'])
def test_two_cpu_workers_train_and_test_with_gloo(tmp_path, tiny_config, tiny_rtdetr_config,
                                                  tiny_cfg_options, tool_env, free_port,
                                                  detector):
    # RT-DETR: denoising queries drawn per rank, the loss normaliser averaged over ranks
    if detector == 'rtdetr':
        tiny_config = tiny_rtdetr_config
    work_dir = tmp_path / 'dist'
    env = dict(tool_env, PYTHON=sys.executable, PORT=str(free_port))
    cmd = ['bash', str(REPO / 'tools' / 'dist_train.sh'), tiny_config, '2', '--work-dir',
           str(work_dir), '--cfg-options', *tiny_cfg_options, 'train_cfg.max_iters=4',
           'train_dataloader.batch_size=1']
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-8000:]  # torchrun exits 0 only if every worker did

    # both ranks initialised a gloo group of two and reached the end of training
    for rank in (0, 1):
        assert f'rank {rank}/2: no CUDA device, joined the process group with the gloo backend' \
            in out, out[-8000:]
        assert f'rank {rank}/2: finished.' in out, out[-8000:]
    assert 'Distributed training: True' in out and 'GPU number: 2' in out, out[-8000:]
    assert "'backend': 'gloo'" in out or "backend='gloo'" in out, out[-8000:]

    # rank 0 saved each checkpoint exactly once; no stray temporary or duplicate files
    files = sorted(p.name for p in work_dir.iterdir() if p.is_file())
    assert [f for f in files if f.endswith('.pth')] == ['iter_2.pth', 'iter_4.pth'], files
    assert not [f for f in files if f.endswith('.tmp')], files
    saves = re.findall(r'Saving checkpoint at (\d+) iterations', out)
    assert saves == ['2', '4'], saves  # logged once per save: only rank 0 logs and saves
    for name in ('iter_2.pth', 'iter_4.pth'):
        assert is_valid_checkpoint(work_dir / name)
    ckpt = load_checkpoint_weights_only(work_dir / 'iter_4.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 4
    # the checkpoint holds the plain model, not the DDP wrapper
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])

    # tools/dist_test.sh evaluates it with the same two workers; predictions of both ranks are
    # collected into one dump
    preds = tmp_path / 'preds.pkl'
    cmd = ['bash', str(REPO / 'tools' / 'dist_test.sh'), tiny_config, str(work_dir / 'iter_4.pth'),
           '2', '--work-dir', str(tmp_path / 'dist_test'), '--out', str(preds), '--cfg-options',
           *tiny_cfg_options]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-8000:]
    for rank in (0, 1):
        assert f'rank {rank}/2: finished.' in proc.stdout, proc.stdout[-8000:]
    assert 'coco/bbox_mAP' in proc.stdout
    with open(preds, 'rb') as f:
        assert sorted(p['img_id'] for p in pickle.load(f)) == [1, 2, 3, 4]


def test_dist_train_rejects_bad_process_count(tiny_config):
    proc = subprocess.run(['bash', str(REPO / 'tools' / 'dist_train.sh'), tiny_config, 'two'],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 2
    assert "NPROC must be a positive integer" in proc.stdout and "'two'" in proc.stdout
    proc = subprocess.run(['bash', str(REPO / 'tools' / 'dist_train.sh')],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 2 and 'usage:' in proc.stdout


def test_pytorch_launcher_without_torchrun_explains_itself(tmp_path, run_tool, tiny_config,
                                                           tiny_cfg_options, tool_env):
    env = {k: v for k, v in tool_env.items()
           if k not in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK')}
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), tiny_config, '--launcher', 'pytorch',
         '--work-dir', str(tmp_path), '--cfg-options', *tiny_cfg_options],
        cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=120)
    assert proc.returncode == 2, proc.stdout[-4000:]
    assert 'RANK' in proc.stdout and 'torchrun' in proc.stdout
