# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The extra globals exist only inside mmbackbones' loads; allow_globals refuses callables that
run code; a real MMEngine training checkpoint still resumes with its HistoryBuffers rebuilt."""
import functools
import io
import json
import operator
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader, save_checkpoint

import mmbackbones  # noqa: F401
from mmbackbones.engine import checkpoint as ckpt_mod
from mmbackbones.engine.checkpoint import UnsafeCheckpointError, allow_globals
from tests.paths import REPO

SCOPE_SCRIPT = r'''
import json, sys, torch
def names():
    return sorted(g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
                  for g in torch.serialization.get_safe_globals())
# what mmbackbones' dependencies register themselves (torch.distributed.tensor adds DTensor)
import mmengine.runner, mmdet.models, torch.distributed.tensor  # noqa: E401
out = {'before': names()}
import mmbackbones
from mmbackbones.engine.checkpoint import load_checkpoint_weights_only
out['after_import'] = names()
ckpt = load_checkpoint_weights_only(sys.argv[1], map_location='cpu')
out['loaded_hub'] = type(ckpt['message_hub']['log_scalars']['train/loss']).__name__
out['after_load'] = names()
try:
    torch.load(sys.argv[1], map_location='cpu', weights_only=True)
    out['plain'] = 'loaded'
except Exception as exc:
    out['plain'] = type(exc).__name__ + ': ' + str(exc)
print(json.dumps(out))
'''


@pytest.fixture(scope='module')
def training_checkpoint(tmp_path_factory):
    """A real MMEngine training checkpoint: a state dict, an optimizer and the message hub."""
    path = tmp_path_factory.mktemp('ckpt') / 'iter_3.pth'
    hub = MessageHub.get_instance('mmb_security_scope')
    for i, (loss, lr) in enumerate([(0.9, 0.1), (0.7, 0.1), (0.4, 0.05)]):
        hub.update_scalar('train/loss', loss)
        hub.update_scalar('train/lr', lr, count=2)
    hub.update_info('eta', np.float64(12.5))
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint({'meta': {'iter': 3}, 'state_dict': model.state_dict(),
                     'optimizer': optimizer.state_dict(), 'message_hub': hub.state_dict()},
                    str(path))
    return path, hub


def test_training_checkpoint_resumes_with_rebuilt_buffers(training_checkpoint):
    path, hub = training_checkpoint
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    restored = MessageHub.get_instance('mmb_security_scope_restored')
    restored.load_state_dict(loaded['message_hub'])
    for key, original in hub.log_scalars.items():
        buffer = restored.get_scalar(key)
        assert type(buffer) is HistoryBuffer
        np.testing.assert_array_equal(buffer.data[0], original.data[0])
        np.testing.assert_array_equal(buffer.data[1], original.data[1])
        assert buffer.data[0].dtype == original.data[0].dtype
        assert buffer.max_length == original.max_length
        for statistic in ('mean', 'max', 'min', 'current'):
            assert buffer.statistics(statistic) == original.statistics(statistic)
    assert restored.get_info('eta') == 12.5 and type(restored.get_info('eta')) is np.float64
    assert loaded['optimizer']['state'][0]['momentum_buffer'].shape == (2, 3)


def test_allowlist_is_scoped_to_our_loads(training_checkpoint, tool_env):
    path, _ = training_checkpoint
    proc = subprocess.run([sys.executable, '-c', SCOPE_SCRIPT, str(path)], cwd=str(REPO),
                          env=tool_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['before'] == out['after_import'] == out['after_load']
    ours = {name for _, name in ckpt_mod.SAFE_GLOBALS}
    assert not ours & set(out['after_load'])
    assert out['loaded_hub'] == 'HistoryBuffer'
    assert out['plain'].startswith('UnpicklingError') and 'HistoryBuffer' in out['plain'], out


def test_other_entries_under_our_names_are_shadowed_during_our_loads(training_checkpoint,
                                                                     tmp_path):
    """Someone allowlisted the real HistoryBuffer process-wide (a common workaround): inside our
    loads it is taken off, so the checks still run, and afterwards it is back."""
    path = tmp_path / 'hb.pth'
    buffer = HistoryBuffer([1.0], [1])
    original = HistoryBuffer.__getstate__
    HistoryBuffer.__getstate__ = lambda self: {
        'max_length': 5, '_log_history': self._log_history, '_count_history': self._count_history,
        'statistics_methods': {'mean': HistoryBuffer.max}}
    try:
        torch.save({'hb': buffer}, path)
    finally:
        HistoryBuffer.__getstate__ = original
    statistics = dict(HistoryBuffer._statistics_methods)
    torch.serialization.add_safe_globals([HistoryBuffer])
    try:
        with pytest.raises(UnsafeCheckpointError, match='statistics_methods'):
            CheckpointLoader.load_checkpoint(str(path))
        assert HistoryBuffer in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()
    assert HistoryBuffer._statistics_methods == statistics


def test_concurrent_loads_share_the_scope(training_checkpoint):
    path, _ = training_checkpoint
    before = torch.serialization.get_safe_globals()
    errors = []

    def work():
        try:
            for _ in range(5):
                CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert set(torch.serialization.get_safe_globals()) == set(before)


class Allowed:
    def __init__(self, value=1):
        self.value = value


@pytest.mark.parametrize('dangerous', [
    'builtins.exec', 'builtins.eval', 'builtins.getattr', 'builtins.__import__', 'posix.system',
    'os.system', 'subprocess.Popen', 'importlib.import_module', 'pickle.loads', 'shutil.rmtree',
    'runpy.run_path', 'code.interact', 'ctypes.CDLL', 'functools.partial', 'operator.attrgetter',
    'operator.methodcaller', 'sys.exit', 'torch.load', 'torch._C._jit_pass_inline',
    'torch.ops.aten', 'numpy.load', 'mypkg.evil.exec_command', 'mypkg.loads',
    'mmengine.logging.history_buffer.HistoryBuffer',
])
def test_allow_globals_refuses_code_running_names(dangerous):
    with pytest.raises(ValueError, match='cannot be allowed'):
        allow_globals([dangerous])
    assert not ckpt_mod._USER_GLOBALS


@pytest.mark.parametrize('dangerous', [
    exec, eval, getattr, len, os.system, functools.partial, operator.attrgetter, os, torch._C,
    pickle.loads, (os.system, 'mypkg.harmless'), (exec, 'mypkg.Thing'), print, type, object,
    torch.Tensor.add_, io.open,
])
def test_allow_globals_refuses_code_running_objects(dangerous):
    with pytest.raises(ValueError, match='cannot be allowed'):
        allow_globals([dangerous])
    assert not ckpt_mod._USER_GLOBALS


def test_allowed_class_applies_to_our_loads_only(tmp_path):
    path = tmp_path / 'custom.pth'
    torch.save({'state_dict': {}, 'extra': Allowed(7)}, path)
    before = torch.serialization.get_safe_globals()
    with allow_globals([Allowed]):
        assert set(torch.serialization.get_safe_globals()) == set(before)
        assert CheckpointLoader.load_checkpoint(str(path))['extra'].value == 7
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, weights_only=True)  # not for other loads in the process
    with pytest.raises(UnsafeCheckpointError, match='Allowed'):
        CheckpointLoader.load_checkpoint(str(path))
