# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Weights-only checkpoint loading, refusal of unsafe/corrupt files, and resume-candidate search."""
import logging
import os
import pickle
import pickletools
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader, load_checkpoint, save_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

import mmbackbones  # noqa: F401  (installs the loader, as a config's custom_imports would)
from mmbackbones.engine import checkpoint as ckpt_mod
from mmbackbones.engine.checkpoint import (SAFE_GLOBALS, AtomicLocalBackend,
                                           CorruptCheckpointError, UnsafeCheckpointError,
                                           allow_globals, find_latest_valid_checkpoint,
                                           is_valid_checkpoint, load_from_local_weights_only)


class Payload:
    """An arbitrary class: unpickling it means importing and instantiating user code."""

    def __init__(self, value=1):
        self.value = value


class SystemCall:
    """Pickles as ``os.system(<command>)``: arbitrary code execution on load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class GetattrCall:
    """Pickles as ``getattr(HistoryBuffer, name)``, reaching a non-statistics attribute."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, 'register_statistics')


def pickle_globals(path: Path) -> set:
    """Every GLOBAL / STACK_GLOBAL name in a torch zip checkpoint, read without unpickling."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith('data.pkl'))
        data = archive.read(name)
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == 'GLOBAL':
            module, attr = arg.split(' ', 1)
            found.add(f"{'builtins' if module == '__builtin__' else module}.{attr}")
        elif op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
            strings.append(arg)
        elif op.name == 'STACK_GLOBAL':
            found.add(f'{strings[-2]}.{strings[-1]}')
    return found


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


# --------------------------------------------------------------------------- real checkpoints


def test_local_paths_use_the_weights_only_loader():
    assert CheckpointLoader._get_checkpoint_loader('work_dirs/x/iter_4.pth') \
        is load_from_local_weights_only
    # URLs have their own (download, then weights-only) loader
    assert CheckpointLoader._get_checkpoint_loader('https://x/y.pth') \
        is ckpt_mod.load_from_http_weights_only


def test_training_checkpoint_round_trips_with_weights_only(tiny_trained_run):
    path = tiny_trained_run / 'iter_4.pth'
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'} <= set(loaded)
    assert loaded['meta']['iter'] == 4
    loss = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    assert np.isfinite(loss.mean())  # the statistics methods came back through the guarded getattr
    assert len(loaded['param_schedulers']) == 2

    # Nothing is lost compared with an unrestricted load of this (self-made, trusted) file.
    reference = torch.load(path, map_location='cpu', weights_only=False)
    assert loaded['state_dict'].keys() == reference['state_dict'].keys()
    for key, value in reference['state_dict'].items():
        assert torch.equal(loaded['state_dict'][key], value), key
    ref_hub = reference['message_hub']['log_scalars']
    for key, buffer in ref_hub.items():
        np.testing.assert_array_equal(loaded['message_hub']['log_scalars'][key].data[0],
                                      buffer.data[0])
    assert loaded['optimizer']['param_groups'] == reference['optimizer']['param_groups']
    assert loaded['param_schedulers'] == reference['param_schedulers']


def test_allowlist_is_exactly_what_training_checkpoints_hold(tiny_trained_run):
    """Every non-torch global of a real checkpoint is allowlisted, and every entry is used.

    The exceptions are documented in SAFE_GLOBALS: the numpy 1.x spellings of the same two
    functions (files written under numpy<2).
    """
    in_file = set()
    for path in tiny_trained_run.glob('iter_*.pth'):
        in_file |= pickle_globals(path)
    torch_default = set(torch._weights_only_unpickler._get_allowed_globals())
    needed = in_file - torch_default
    names = {name for _, name in SAFE_GLOBALS}
    assert needed <= names, needed - names
    numpy1_aliases = {'numpy.core.multiarray._reconstruct', 'numpy.core.multiarray.scalar'}
    assert names - needed == numpy1_aliases


def test_checkpoint_written_under_numpy_1_loads(tiny_trained_run, tmp_path):
    """numpy<2 pickles its helpers as numpy.core.multiarray.*; those aliases are allowlisted."""
    rewritten = tmp_path / 'numpy1.pth'
    with zipfile.ZipFile(tiny_trained_run / 'iter_2.pth') as src, \
            zipfile.ZipFile(rewritten, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith('data.pkl'):
                data = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
            dst.writestr(info.filename, data)
    assert 'numpy.core.multiarray._reconstruct' in pickle_globals(rewritten)
    assert not any(g.startswith('numpy._core') for g in pickle_globals(rewritten))
    loaded = _load_checkpoint(str(rewritten), map_location='cpu')
    assert np.isfinite(loaded['message_hub']['log_scalars']['train/loss'].mean())


def test_init_cfg_pretrained_goes_through_the_safe_loader(tiny_trained_run, tiny_config,
                                                         tmp_path):
    """``init_cfg=dict(type='Pretrained')`` (mmengine's PretrainedInit) uses the same loader."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    path = tiny_trained_run / 'iter_4.pth'
    cfg = Config.fromfile(tiny_config).model.backbone
    cfg.init_cfg = dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')
    backbone = MODELS.build(cfg)
    backbone.init_weights()
    state = torch.load(path, map_location='cpu', weights_only=False)['state_dict']
    loaded = backbone.state_dict()
    assert loaded and all(torch.equal(v, state['backbone.' + k]) for k, v in loaded.items())

    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': Payload()}, evil)
    cfg['init_cfg'] = dict(type='Pretrained', checkpoint=str(evil), prefix='backbone.')
    with pytest.raises(UnsafeCheckpointError, match='Payload'):
        MODELS.build(cfg).init_weights()


# --------------------------------------------------------------------------- refusals


def test_pickled_system_call_is_refused_without_running(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'malicious.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': SystemCall(f'touch {marker}')}, path)

    with pytest.raises(UnsafeCheckpointError) as info:
        _load_checkpoint(str(path), map_location='cpu')
    system_name = f'{os.system.__module__}.system'  # posix.system on Linux
    assert system_name in info.value.globals
    message = str(info.value)
    assert system_name in message and str(path) in message
    assert 'arbitrary code' in message
    # a code-running global is never offered for allow_globals
    assert 'allow_globals([' not in message and 'cannot be allowed' in message
    assert 'state dict' in message
    assert isinstance(info.value, pickle.UnpicklingError)
    assert not marker.exists()

    # the model-level entry point refuses it too
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(torch.nn.Linear(2, 2), str(path))
    assert not marker.exists()


def test_arbitrary_class_is_refused_until_explicitly_allowed(tmp_path):
    path = tmp_path / 'custom.pth'
    torch.save({'state_dict': {}, 'extra': Payload(7)}, path)
    qualified = f'{Payload.__module__}.Payload'

    with pytest.raises(UnsafeCheckpointError) as info:
        _load_checkpoint(str(path))
    assert info.value.globals == (qualified,)
    assert f"allow_globals(['{qualified}'])" in str(info.value)

    with allow_globals([Payload]):
        assert _load_checkpoint(str(path))['extra'].value == 7
    with pytest.raises(UnsafeCheckpointError):  # the context removed it again
        _load_checkpoint(str(path))

    handle = allow_globals([qualified])  # the dotted name from the message works as well
    try:
        assert _load_checkpoint(str(path))['extra'].value == 7
    finally:
        handle.remove()
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(str(path))


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': GetattrCall()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        _load_checkpoint(str(path))
    assert any('builtins.getattr' in g and 'register_statistics' in g for g in info.value.globals)
    assert 'cannot be allowed' in str(info.value)
    with pytest.raises(ValueError, match='getattr cannot be allowed'):
        allow_globals(['builtins.getattr'])


def test_leaving_allow_globals_keeps_the_base_allowlist(tiny_trained_run):
    # The real HistoryBuffer cannot be allowed: it would bypass its checked rebuilder.
    with pytest.raises(ValueError, match='checked rebuilder'):
        allow_globals([HistoryBuffer])
    with allow_globals([Payload]):
        pass
    loaded = _load_checkpoint(str(tiny_trained_run / 'iter_2.pth'))
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


def test_allow_globals_rejects_bad_arguments():
    with pytest.raises(TypeError, match='list of globals'):
        allow_globals('os.system')
    with pytest.raises(ValueError, match='cannot import'):
        allow_globals(['no_such_package_xyz.Thing'])


# --------------------------------------------------------------------------- corrupt files


@pytest.mark.parametrize('fraction', [0.0, 0.01, 0.5, 0.999])
def test_truncated_checkpoint_gives_a_clear_error(tiny_trained_run, tmp_path, fraction):
    path = truncated_copy(tiny_trained_run / 'iter_4.pth', tmp_path / 'iter_4.pth', fraction)
    with pytest.raises(CorruptCheckpointError) as info:
        _load_checkpoint(str(path), map_location='cpu')
    assert str(path) in str(info.value)
    assert 'truncated or corrupt' in str(info.value)
    assert info.value.path == str(path)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        _load_checkpoint(str(tmp_path / 'nope.pth'))


# --------------------------------------------------------------------------- resume candidates


@pytest.fixture
def work_dir(tiny_trained_run, tmp_path) -> Path:
    """A copy of the tiny run's checkpoints (iter_2, iter_4) with no pointer file."""
    wd = tmp_path / 'wd'
    wd.mkdir()
    for name in ('iter_2.pth', 'iter_4.pth'):
        shutil.copy(tiny_trained_run / name, wd / name)
    return wd


@pytest.fixture
def warnings_log(caplog):
    logger = logging.getLogger('test_find_latest')
    caplog.set_level(logging.WARNING, logger='test_find_latest')
    return logger, caplog


def test_find_latest_trusts_a_valid_pointer(work_dir, warnings_log):
    logger, caplog = warnings_log
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    assert find_latest_valid_checkpoint(work_dir, logger=logger) == str(work_dir / 'iter_2.pth')
    assert not caplog.records


def test_find_latest_skips_a_truncated_newest_checkpoint(work_dir, tiny_trained_run,
                                                         warnings_log):
    logger, caplog = warnings_log
    truncated = truncated_copy(tiny_trained_run / 'iter_4.pth', work_dir / 'iter_6.pth', 0.6)
    (work_dir / 'last_checkpoint').write_text(str(truncated))
    assert not is_valid_checkpoint(truncated)
    assert find_latest_valid_checkpoint(work_dir, logger=logger) == str(work_dir / 'iter_4.pth')
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(truncated) in m for m in skipped), skipped

    # Without the pointer the truncated file is the newest by step and is skipped as well.
    (work_dir / 'last_checkpoint').unlink()
    caplog.clear()
    assert find_latest_valid_checkpoint(work_dir, logger=logger) == str(work_dir / 'iter_4.pth')
    assert any(str(truncated) in r.getMessage() for r in caplog.records)


def test_find_latest_ignores_a_dangling_or_empty_pointer(work_dir, warnings_log):
    logger, caplog = warnings_log
    dangling = work_dir / 'iter_10.pth'
    (work_dir / 'last_checkpoint').write_text(str(dangling))
    assert find_latest_valid_checkpoint(work_dir, logger=logger) == str(work_dir / 'iter_4.pth')
    assert any(str(dangling) in r.getMessage() for r in caplog.records)

    (work_dir / 'last_checkpoint').write_text('')
    assert find_latest_valid_checkpoint(work_dir, logger=logger) == str(work_dir / 'iter_4.pth')


def test_find_latest_orders_by_step_and_ignores_temp_files(work_dir, warnings_log):
    logger, _ = warnings_log
    # An older step with a newer mtime must not win; a leftover temp file of an interrupted
    # atomic write is not a candidate.
    os.utime(work_dir / 'iter_2.pth', ns=(2 * 10**18, 2 * 10**18))
    (work_dir / '.iter_8.pth.123.abcd.tmp').write_bytes(b'PK\x03\x04 partial')
    assert find_latest_valid_checkpoint(work_dir, logger=logger) == str(work_dir / 'iter_4.pth')


def test_find_latest_returns_none_without_valid_checkpoints(tmp_path, tiny_trained_run,
                                                            warnings_log):
    logger, _ = warnings_log
    assert find_latest_valid_checkpoint(tmp_path, logger=logger) is None
    truncated_copy(tiny_trained_run / 'iter_2.pth', tmp_path / 'iter_2.pth', 0.3)
    assert find_latest_valid_checkpoint(tmp_path, logger=logger) is None


# --------------------------------------------------------------------------- atomic writes


def test_atomic_backend_is_selected_through_backend_args(tmp_path):
    backend = get_file_backend(str(tmp_path), backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)
    target = tmp_path / 'sub' / 'ckpt.pth'
    save_checkpoint({'state_dict': {'w': torch.arange(3.)}}, str(target),
                    backend_args=dict(backend='atomic_local'))
    assert is_valid_checkpoint(target)
    assert torch.equal(_load_checkpoint(str(target))['state_dict']['w'], torch.arange(3.))
    assert sorted(p.name for p in target.parent.iterdir()) == ['ckpt.pth']


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / 'iter_2.pth'
    AtomicLocalBackend().put(b'old complete file', target)

    def killed(*args, **kwargs):  # the process dies between writing and renaming
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        AtomicLocalBackend().put(b'new file that never lands', target)
    monkeypatch.undo()
    assert target.read_bytes() == b'old complete file'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_2.pth']


def test_train_tool_run_wrote_atomically(tiny_trained_run):
    """The train tool selected the atomic backend and left no temporary files behind."""
    dumped = (tiny_trained_run / 'tiny_retinanet.py').read_text()
    assert "backend='atomic_local'" in dumped
    assert not list(tiny_trained_run.glob('.*.tmp'))
    pointer = (tiny_trained_run / 'last_checkpoint').read_text().strip()
    assert Path(pointer).name == 'iter_4.pth' and is_valid_checkpoint(pointer)
