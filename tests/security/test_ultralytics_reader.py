# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The restricted ultralytics reader: regular archive records only, never a link, bounded in size,
count and time, and nothing imported from names in the file."""
import copy
import io
import pickle
import subprocess
import sys
import tarfile
import threading
import zipfile

import pytest
import torch
from torch import nn

from mmbackbones.converters import ConversionError, load_ultralytics_checkpoint
from mmbackbones.converters import ultralytics_yolov8 as reader
from tests.paths import REPO
from tests.security.payloads import evil_interface, torch_zip


class Placeholder:
    """Renamed in the pickle to a module that must never be imported."""


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def within(seconds, func, *args, **kwargs):
    """Run ``func`` on a daemon thread; fail if it has not finished in ``seconds``."""
    outcome = {}

    def run():
        try:
            outcome['value'] = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome['error'] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f'{func.__name__} did not finish in {seconds} s (hang)'
    return outcome


def legacy_tar(path, special: tarfile.TarInfo) -> None:
    """A torch < 0.4 style tar checkpoint whose 'storages' member is ``special``."""
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(special)
        for name in ('tensors', 'pickle'):
            data = pickle.dumps(0, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize('kind', ['fifo', 'symlink', 'hardlink', 'device'])
@pytest.mark.parametrize('trust', [False, True])
def test_tar_members_that_are_not_regular_files_are_refused(tmp_path, kind, trust):
    info = tarfile.TarInfo('storages')
    info.type = {'fifo': tarfile.FIFOTYPE, 'symlink': tarfile.SYMTYPE,
                 'hardlink': tarfile.LNKTYPE, 'device': tarfile.CHRTYPE}[kind]
    if kind in ('symlink', 'hardlink'):
        info.linkname = '/etc/passwd'
    path = tmp_path / f'{kind}.pt'
    legacy_tar(path, info)
    outcome = within(30, load_ultralytics_checkpoint, str(path), trust_pickle=trust)
    assert isinstance(outcome.get('error'), ConversionError), outcome
    assert "tar member 'storages' is not a regular file" in str(outcome['error'])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'{kind}.pt']  # nothing extracted


def test_fifo_tar_via_the_converter_cli(tmp_path, run_tool):
    info = tarfile.TarInfo('storages')
    info.type = tarfile.FIFOTYPE
    path = tmp_path / 'fifo.pt'
    legacy_tar(path, info)
    proc = run_tool('model_converters/ultralytics_yolov8.py', path, tmp_path / 'out.pth',
                    timeout=120)
    assert proc.returncode == 1 and 'not a regular file' in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / 'out.pth').exists()


def zip_with(tmp_path, name, mutate, model=None) -> str:
    buffer = io.BytesIO()
    torch.save({'model': (model or tiny_model()).half()}, buffer)
    out = tmp_path / name
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(out, 'w') as dst:
        for item in src.infolist():
            info = zipfile.ZipInfo(item.filename)
            mutate(info)
            dst.writestr(info, src.read(item.filename))
    return str(out)


def test_zip_records_marked_as_links_are_refused(tmp_path):
    def symlink(info):
        if info.filename.endswith('data.pkl'):
            info.external_attr = (0o120777 << 16)

    with pytest.raises(ConversionError, match='not a regular file'):
        load_ultralytics_checkpoint(zip_with(tmp_path, 'link.pt', symlink))


def test_compressed_zip_records_are_refused(tmp_path):
    def deflate(info):
        info.compress_type = zipfile.ZIP_DEFLATED

    with pytest.raises(ConversionError, match='compressed'):
        load_ultralytics_checkpoint(zip_with(tmp_path, 'deflated.pt', deflate))


def test_plain_zip_written_by_python_is_read(tmp_path):
    model = tiny_model()
    reference = {k: v.half().float() if v.is_floating_point() else v
                 for k, v in model.state_dict().items()}
    state = load_ultralytics_checkpoint(zip_with(tmp_path, 'plain.pt', lambda info: None,
                                                 copy.deepcopy(model)))
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


@pytest.mark.parametrize('bound, value, message', [
    ('MAX_MEMBERS', 2, 'archive records, more than 2'),
    ('MAX_MEMBER_BYTES', 64, 'more than 64'),
    ('MAX_TOTAL_BYTES', 1000, 'bytes in the archive, more than 1000'),
    ('MAX_PICKLE_BYTES', 10, 'more than 10'),
    ('MAX_SECONDS', -1.0, 'longer than'),
])
def test_size_count_and_time_bounds(tmp_path, monkeypatch, bound, value, message):
    path = tmp_path / 'model.pt'
    torch.save({'model': tiny_model()}, path)
    monkeypatch.setattr(reader, bound, value)
    with pytest.raises(ConversionError, match=message):
        load_ultralytics_checkpoint(str(path))


def renamed_pickle(obj, old: bytes, *new: bytes) -> list:
    """``obj`` saved by torch, with the pickled global ``old`` renamed to each of ``new``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        name = next(n for n in archive.namelist() if n.endswith('data.pkl'))
        data = archive.read(name)
    assert old in data
    return [torch_zip(data.replace(old, n), base=buffer.getvalue()) for n in new]


LAZY_SCRIPT = r"""
import sys
from mmbackbones.converters.ultralytics_yolov8 import load_ultralytics_checkpoint
name = sys.argv[2]
assert f'torch.{name}' not in sys.modules, name
load_ultralytics_checkpoint(sys.argv[1])
print('imported' if f'torch.{name}' in sys.modules else 'not imported')
"""


def test_names_in_the_file_are_never_imported(tmp_path, monkeypatch, tool_env):
    marker = tmp_path / 'imported'
    (tmp_path / 'mmb_evil_module.py').write_text(f'open({str(marker)!r}, "w").close()\n'
                                                 'class Thing: pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    model = tiny_model()
    model.extra = Placeholder()
    module = Placeholder.__module__.encode()
    # torch imports these submodules on first attribute access (torch.__getattr__)
    evil, lazy = renamed_pickle({'model': model}, module + b'\nPlaceholder',
                                b'mmb_evil_module\nThing', b'torch\n_inductor')
    path = tmp_path / 'names.pt'
    path.write_bytes(evil)
    state = load_ultralytics_checkpoint(str(path))
    assert set(state) == set(tiny_model().state_dict())
    assert not marker.exists() and 'mmb_evil_module' not in sys.modules

    path.write_bytes(lazy)  # in a fresh process: torch._inductor is not imported yet there
    proc = subprocess.run([sys.executable, '-c', LAZY_SCRIPT, str(path), '_inductor'],
                          cwd=str(REPO), env=tool_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == 'not imported'


def test_attributes_and_hooks_on_tensors_are_refused(tmp_path):
    model = tiny_model()
    model[0].weight.__array_interface__ = evil_interface()
    path = tmp_path / 'attr.pt'
    torch.save({'model': model}, path)
    with pytest.raises(ConversionError, match='attributes in the file are refused'):
        load_ultralytics_checkpoint(str(path))


def test_module_cycles_are_refused(tmp_path):
    model = tiny_model()
    model._modules['self'] = model
    path = tmp_path / 'cycle.pt'
    torch.save({'model': model}, path)
    with pytest.raises(ConversionError, match='contain themselves'):
        load_ultralytics_checkpoint(str(path))


def test_a_non_checkpoint_file_is_refused(tmp_path):
    path = tmp_path / 'pickle.pt'
    path.write_bytes(pickle.dumps({'model': 1}))
    with pytest.raises(ConversionError):
        load_ultralytics_checkpoint(str(path))
    assert REPO.is_dir()
