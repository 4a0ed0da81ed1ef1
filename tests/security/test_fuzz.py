# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Fuzzing the loaders and the ultralytics reader with mutated real checkpoints (bit flips,
truncations, random pickle opcodes, zip header mutations, spliced ranges): every case loads or is
refused with our error type; no other exception, no crash, no hang (each in a subprocess)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.runner import save_checkpoint
from torch import nn

from tests.paths import REPO

PROBE = REPO / 'tests' / 'security' / 'fuzz_probe.py'
CASES, SECONDS = 200, 20


@pytest.fixture(scope='module')
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp('fuzz')
    hub = MessageHub.get_instance('mmb_fuzz')
    for loss in (0.5, 0.25):
        hub.update_scalar('train/loss', loss)
    hub.update_info('eta', np.float64(3.0))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    training = root / 'training.pth'
    save_checkpoint({'meta': {'iter': 2}, 'state_dict': model.state_dict(),
                     'message_hub': hub.state_dict()}, str(training))
    ultralytics = root / 'ultralytics.pt'
    torch.save({'epoch': 1, 'model': None, 'ema': model.half(), 'updates': 2,
                'train_args': {'imgsz': 64}}, ultralytics)
    return {'loader': training, 'ultralytics': ultralytics}


@pytest.mark.parametrize('target', ['loader', 'ultralytics'])
def test_mutated_checkpoints_are_loaded_or_refused(bases, target, tmp_path, tool_env):
    proc = subprocess.run(
        [sys.executable, str(PROBE), target, str(bases[target]), str(tmp_path), '1234',
         str(CASES), str(SECONDS)], cwd=str(REPO), env=tool_env, capture_output=True,
        text=True, timeout=SECONDS + 120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    others = [line for line in proc.stdout.splitlines() if line.startswith('OTHER')]
    assert summary['other'] == 0, others[:10]
    assert summary['done'] >= 50, summary  # enough cases within the time bound
    assert summary['refused'] > 0 and summary['loaded'] + summary['refused'] == summary['done']
