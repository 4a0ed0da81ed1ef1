# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The numpy array-protocol payloads, in subprocesses: they segfault a process that loads them
with the allowlist mmbackbones used to install (or with torch's defaults alone, for attributes on
tensors and dicts) and hands the result to numpy; through our loaders they are refused and the
process exits normally."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.loopback import LoopbackServer
from tests.paths import REPO
from tests.security.payloads import ATTACKS

CRASH = sorted(name for name, (_, kind) in ATTACKS.items() if kind == 'crash')
PROBE = REPO / 'tests' / 'security' / 'probe.py'
LOADERS = ('CheckpointLoader', 'mmengine.load_checkpoint', 'load_source_checkpoint',
           'ultralytics')
#: what each payload needs to crash a process without mmbackbones' checks
CONTROL = {'crash_hb_interface': 'old-allowlist', 'crash_nested_interface': 'old-allowlist',
           'crash_tensor_interface': 'plain-torch', 'crash_dict_interface': 'plain-torch'}


def probe(jobs, tmp_path: Path, env, timeout: float = 240) -> subprocess.CompletedProcess:
    spec = tmp_path / f'jobs-{len(list(tmp_path.glob("jobs-*")))}.json'
    spec.write_text(json.dumps(jobs))
    return subprocess.run([sys.executable, str(PROBE), str(spec)], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def crash_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('crash')
    files = {}
    for name in CRASH:
        files[name] = root / f'{name}.pth'
        files[name].write_bytes(ATTACKS[name][0](root))
    return files


def test_payloads_crash_a_process_without_our_checks(crash_files, tmp_path, tool_env):
    """The control: these files are real crashes, not merely odd data."""
    assert set(CONTROL) == set(CRASH)
    for name, path in crash_files.items():
        proc = probe([[CONTROL[name], str(path)]], tmp_path, tool_env, timeout=120)
        assert proc.returncode == -signal.SIGSEGV, (name, proc.returncode, proc.stdout,
                                                    proc.stderr[-2000:])


def test_crash_payloads_are_refused_by_every_loader(crash_files, tmp_path, tool_env):
    jobs = [[loader, str(path)] for path in crash_files.values() for loader in LOADERS]
    with LoopbackServer({f'/{n}.pth': p.read_bytes() for n, p in crash_files.items()}) as srv:
        hub = tmp_path / 'hub'
        env = dict(tool_env, TORCH_HOME=str(tmp_path / 'torch_home'))
        jobs += [['CheckpointLoader', srv.url(f'/{n}.pth')] for n in crash_files]
        proc = probe(jobs, tmp_path, env)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    outcomes = (' REFUSED ', ' LOADED', ' OTHER ')
    lines = [line for line in proc.stdout.splitlines() if any(o in line for o in outcomes)
             and line.split(' ', 1)[0] in LOADERS]
    assert len(lines) == len(jobs), proc.stdout
    for (loader, target), line in zip(jobs, lines):
        assert line.startswith(f'{loader} {target} REFUSED'), line
        expected = 'ConversionError' if loader in ('load_source_checkpoint', 'ultralytics') \
            else 'UnsafeCheckpointError'
        assert line.endswith(expected), line
    assert not hub.exists()
    assert len(list((tmp_path / 'torch_home' / 'hub' / 'checkpoints').iterdir())) == len(CRASH)


STATE_SCRIPT = r"""
import sys, torch
sys.path.insert(0, sys.argv[2])
from tests.security.probe import old_allowlist
from mmengine.logging.history_buffer import HistoryBuffer
if sys.argv[3] == 'old':
    old_allowlist()
    torch.load(sys.argv[1], weights_only=True)
else:
    import mmbackbones
    from mmengine.runner import CheckpointLoader
    try:
        CheckpointLoader.load_checkpoint(sys.argv[1])
    except Exception as exc:
        print(type(exc).__name__)
print('mean', HistoryBuffer([1.0, 2.0], [1, 1]).statistics('mean'))
"""


def test_shared_statistics_payload_rewrites_class_state_only_without_our_checks(tmp_path,
                                                                               tool_env):
    path = tmp_path / 'stats.pth'
    path.write_bytes(ATTACKS['hb_shared_statistics'][0](tmp_path))
    outs = {}
    for mode in ('old', 'ours'):
        proc = subprocess.run([sys.executable, '-c', STATE_SCRIPT, str(path), str(REPO), mode],
                              cwd=str(REPO), env=tool_env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[mode] = proc.stdout.split()
    assert outs['old'][-2:] == ['mean', '2.0']  # 'mean' now computes the max, process-wide
    assert outs['ours'][-3:] == ['UnsafeCheckpointError', 'mean', '1.5']
