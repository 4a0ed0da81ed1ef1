# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Every hostile checkpoint in ``payloads.ATTACKS`` through every loader: refused with our error
type, no side effect. The crash attacks run in a subprocess (test_crash_attacks.py)."""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as mm_checkpoint
from mmengine.runner import load_checkpoint as mm_load_checkpoint

import mmbackbones  # noqa: F401  (installs the loaders)
from mmbackbones.converters.core import ConversionError, load_source_checkpoint
from mmbackbones.converters.ultralytics_yolov8 import load_ultralytics_checkpoint
from mmbackbones.engine.checkpoint import UnsafeCheckpointError, find_latest_valid_checkpoint
from tests.loopback import LoopbackServer
from tests.paths import REPO
from tests.security.payloads import ATTACKS, MARKER_ENV

IN_PROCESS = sorted(name for name, (_, kind) in ATTACKS.items() if kind != 'crash')
CONVERTER_CLIS = sorted(p.name for p in (REPO / 'tools' / 'model_converters').glob('*.py'))


@pytest.fixture(scope='module')
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, '_hub_dir', str(hub))
    return hub


@pytest.fixture
def attack(request, tmp_path, server, monkeypatch):
    """(name, local path, URL) of one hostile file; afterwards, checks nothing happened."""
    name = request.param
    build, _ = ATTACKS[name]
    data = build(tmp_path)
    path = tmp_path / f'{name}.pth'
    path.write_bytes(data)
    server.files[f'/{name}/x.pth'] = data
    monkeypatch.delenv(MARKER_ENV, raising=False)
    statistics = dict(HistoryBuffer._statistics_methods)
    yield name, path, server.url(f'/{name}/x.pth')
    assert not (tmp_path / 'pwned').exists(), 'the payload ran code'
    assert MARKER_ENV not in os.environ, 'the payload ran code'
    assert HistoryBuffer._statistics_methods == statistics, 'HistoryBuffer class state changed'
    assert HistoryBuffer([1.0, 2.0], [1, 1]).statistics('mean') == 1.5
    assert not hasattr(HistoryBuffer, 'statistics_methods')
    assert np.dtype('f8').isnative and np.dtype('f8').fields is None


def _init_cfg(target: str) -> None:
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    backbone = MODELS.build(dict(type='ResNet', depth=18, base_channels=4, out_indices=(3, ),
                                 init_cfg=dict(type='Pretrained', checkpoint=target)))
    backbone.init_weights()


def _resume(path: Path) -> None:
    """What tools/train.py --resume does: pick the newest valid checkpoint, then Runner.resume's
    load (mmengine's _load_checkpoint)."""
    work_dir = path.parent / 'work_dir'
    work_dir.mkdir()
    (work_dir / 'iter_8.pth').write_bytes(path.read_bytes())
    found = find_latest_valid_checkpoint(work_dir, logger=None)
    assert found == str(work_dir / 'iter_8.pth')  # hostile, but a complete archive
    mm_checkpoint._load_checkpoint(found, map_location='cpu')


LOCAL: Dict[str, Callable[[Path], object]] = {
    'CheckpointLoader': lambda p: CheckpointLoader.load_checkpoint(str(p), map_location='cpu'),
    'mmengine.load_checkpoint': lambda p: mm_load_checkpoint(torch.nn.Linear(2, 2), str(p),
                                                            map_location='cpu'),
    'init_cfg': lambda p: _init_cfg(str(p)),
    'resume': _resume,
}


@pytest.mark.parametrize('attack', IN_PROCESS, indirect=True)
@pytest.mark.parametrize('loader', sorted(LOCAL))
def test_local_loaders_refuse(attack, loader):
    name, path, _ = attack
    with pytest.raises(UnsafeCheckpointError) as info:
        LOCAL[loader](path)
    loaded = 'iter_8.pth' if loader == 'resume' else path.name  # resume loads the work dir copy
    assert 'Refused to load checkpoint' in str(info.value) and loaded in str(info.value)


def _tables(monkeypatch, url: str) -> None:
    monkeypatch.setattr(mm_checkpoint, 'get_torchvision_models', lambda: {'evil': url})
    monkeypatch.setattr(mm_checkpoint, 'get_external_models', lambda: {'evil': url})
    monkeypatch.setattr(mm_checkpoint, 'get_mmcls_models', lambda: {'evil': url})


@pytest.mark.parametrize('attack', IN_PROCESS, indirect=True)
@pytest.mark.parametrize('scheme', ['http', 'torchvision://', 'open-mmlab://', 'mmcls://',
                                    'init_cfg-http'])
def test_url_loaders_refuse(attack, scheme, hub_dir, monkeypatch, server):
    name, _, url = attack
    _tables(monkeypatch, url)
    target = url if scheme in ('http', 'init_cfg-http') else f'{scheme}evil'
    before = len(server.requests)
    with pytest.raises(UnsafeCheckpointError) as info:
        if scheme == 'init_cfg-http':
            _init_cfg(target)
        else:
            CheckpointLoader.load_checkpoint(target, map_location='cpu')
    assert server.requests[before:] == [f'/{name}/x.pth']  # downloaded, then refused
    cached = hub_dir / 'checkpoints' / 'x.pth'
    assert str(cached) in str(info.value)
    assert sorted(p.name for p in cached.parent.iterdir()) == ['x.pth']  # no temp files left


@pytest.mark.parametrize('attack', IN_PROCESS, indirect=True)
def test_converter_readers_refuse(attack):
    _, path, _ = attack
    with pytest.raises(ConversionError, match='weights-only'):
        load_source_checkpoint(str(path))
    with pytest.raises(ConversionError):
        load_ultralytics_checkpoint(str(path))


@pytest.mark.parametrize('attack', ['rce_system', 'rce_exec', 'hb_shared_statistics',
                                    'dtype_structured_state', 'deep_nesting'], indirect=True)
@pytest.mark.parametrize('cli', CONVERTER_CLIS)
def test_converter_clis_refuse(attack, cli, monkeypatch, capsys):
    _, path, _ = attack
    out = path.parent / 'out.pth'
    monkeypatch.setattr(sys, 'argv', [cli, str(path), str(out)])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / 'tools' / 'model_converters' / cli), run_name='__main__')
    assert info.value.code == 1
    assert 'error:' in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- what each refusal says


def test_code_execution_refusal_names_the_global_and_never_suggests_allowing_it(tmp_path):
    for name, banned in (('rce_system', f'{os.system.__module__}.system'),
                         ('rce_exec', 'builtins.exec'), ('rce_import', 'builtins.__import__')):
        path = tmp_path / f'{name}.pth'
        path.write_bytes(ATTACKS[name][0](tmp_path))
        with pytest.raises(UnsafeCheckpointError) as info:
            CheckpointLoader.load_checkpoint(str(path))
        message = str(info.value)
        assert banned in info.value.globals, info.value.globals
        assert 'allow_globals([' not in message and 'cannot be allowed' in message, message


def test_getattr_refusal_is_explained(tmp_path):
    path = tmp_path / 'g.pth'
    path.write_bytes(ATTACKS['rce_getattr'][0](tmp_path))
    with pytest.raises(UnsafeCheckpointError, match=r"getattr\(HistoryBuffer, <built-in "
                                                    r"statistic>\)") as info:
        CheckpointLoader.load_checkpoint(str(path))
    assert 'allow_globals([' not in str(info.value)


@pytest.mark.parametrize('name, expected', [
    ('hb_shared_statistics', 'statistics_methods'), ('hb_class_dict', 'keys'),
    ('dtype_object', "numpy.dtype('O')"), ('dtype_structured_state', 'plain numeric'),
    ('dtype_singleton', 'numpy.dtype'), ('array_size_mismatch', 'needs 8388608 bytes'),
    ('array_bad_shape', 'non-negative'), ('array_reconstruct_args', '_reconstruct'),
    ('scalar_object', "numpy.dtype('O')"), ('scalar_short', 'expected 8 bytes'),
    ('hb_unbuilt', 'state was never set'), ('hb_bad_arrays', '_count_history'),
    ('deep_nesting', 'nesting deeper than'),
])
def test_data_refusals_say_what_failed(tmp_path, name, expected):
    path = tmp_path / f'{name}.pth'
    path.write_bytes(ATTACKS[name][0](tmp_path))
    with pytest.raises(UnsafeCheckpointError) as info:
        CheckpointLoader.load_checkpoint(str(path))
    assert expected in str(info.value), str(info.value)


def test_torch_environment_override_does_not_switch_the_check_off(tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only changes torch.load calls that leave weights_only
    unset; ours always pass it."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    path = tmp_path / 'rce.pth'
    path.write_bytes(ATTACKS['rce_system'][0](tmp_path))
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        CheckpointLoader.load_checkpoint(str(path))
    assert not (tmp_path / 'pwned').exists()
