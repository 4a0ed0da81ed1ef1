# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Shared pytest fixtures.

Tool fixtures: a tiny synthetic COCO data set, the tiny RetinaNet config that trains on it in
seconds on a CPU, and helpers that run ``tools/*.py`` in a subprocess with deterministic,
single-threaded settings.
"""
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / 'tests' / 'data' / 'configs' / 'tiny_retinanet.py'
TINY_RTDETR_CONFIG = REPO / 'tests' / 'data' / 'configs' / 'tiny_rtdetr.py'


@pytest.fixture(scope='session')
def tiny_demo_data(tmp_path_factory) -> Dict:
    """8 train / 4 val synthetic 128x128 images (``make_demo_dataset``'s return value)."""
    from mmbackbones.datasets import make_demo_dataset
    root = tmp_path_factory.mktemp('tiny_demo')
    return make_demo_dataset(str(root), num_train=8, num_val=4, image_size=(128, 128), seed=0,
                             progress=False)


@pytest.fixture(scope='session')
def tiny_config() -> str:
    """Path of the tiny RetinaNet config (``tests/data/configs/tiny_retinanet.py``)."""
    return str(TINY_CONFIG)


@pytest.fixture(scope='session')
def tiny_rtdetr_config() -> str:
    """Path of the tiny RT-DETR config (``tests/data/configs/tiny_rtdetr.py``): the tiny
    RetinaNet's data, schedule and hooks with an RT-DETR model; the same ``tiny_cfg_options``
    apply."""
    return str(TINY_RTDETR_CONFIG)


@pytest.fixture(scope='session')
def tiny_cfg_options(tiny_demo_data) -> List[str]:
    """``--cfg-options`` values pointing the tiny config at ``tiny_demo_data``.

    The config's ``data_root`` variable is substituted when the file is parsed, so every dataset
    and evaluator path is overridden one by one.
    """
    root = tiny_demo_data['root'].rstrip('/') + '/'
    val_ann = tiny_demo_data['val_ann_file']
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')] \
        + [f'val_evaluator.ann_file={val_ann}', f'test_evaluator.ann_file={val_ann}']


@pytest.fixture(scope='session')
def tool_env() -> Dict[str, str]:
    """Environment for tool subprocesses: one compute thread, the repo importable, no GPU."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONHASHSEED='0', PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    return env


@pytest.fixture(scope='session')
def run_tool(tool_env) -> Callable[..., subprocess.CompletedProcess]:
    """``run_tool('train.py', *args, timeout=..)`` runs ``tools/<script>`` and captures its output.

    stdout and stderr are merged (``.stdout``) so a failing assertion can show the whole log.
    """

    def run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(REPO / 'tools' / script), *map(str, args)]
        return subprocess.run(cmd, cwd=str(REPO), env=tool_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)

    return run


@pytest.fixture(scope='session')
def load_tool() -> Callable[[str], ModuleType]:
    """``load_tool('train')`` imports ``tools/train.py`` as a module, to call ``main(argv)``
    in-process (argument errors are checked without paying a subprocess start-up)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f'mmb_tool_{name}',
                                                      REPO / 'tools' / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def free_port() -> int:
    """A TCP port that was free a moment ago (for torchrun's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def tiny_trained_run(tmp_path_factory, run_tool, tiny_config, tiny_cfg_options) -> Path:
    """Work dir of a real 4-iteration ``tools/train.py`` run (checkpoints iter_2 and iter_4)."""
    work_dir = tmp_path_factory.mktemp('tiny_run')
    args: Sequence[str] = [tiny_config, '--work-dir', str(work_dir), '--cfg-options',
                           *tiny_cfg_options, 'train_cfg.max_iters=4']
    proc = run_tool('train.py', *args)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert (work_dir / 'iter_4.pth').is_file(), proc.stdout[-6000:]
    return work_dir
