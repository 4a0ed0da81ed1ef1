# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Every converter CLI given bad paths or damaged weights, and atomic writing under SIGKILL.

==========================================  =====  =============================================
case                                        exit   stderr names
==========================================  =====  =============================================
source file does not exist                  2      ``argument src``, the path, what to pass
source is a directory                       2      ``argument src``, the path, a file inside it
destination directory does not exist        2      ``argument dst``, the directory, ``mkdir -p``
destination directory is not writable       2/1    ``dst`` / the path, "writ(e|able)"
destination is a directory                  2      ``argument dst``, a file name to use instead
converted weights hold NaN or Inf           1      ``NaN or Inf`` and the offending tensors
==========================================  =====  =============================================

In every case: no traceback, and nothing is left in the destination directory (neither the
output nor a temporary file).
"""
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmbackbones import fileio
from tests.paths import OFFICIAL, REPO
from tests.test_bad_inputs import run_converter

CONVERTERS = sorted((REPO / 'tools' / 'model_converters').glob('*.py'))
IDS = [p.stem for p in CONVERTERS]


# ------------------------------------------------------------------ a valid source per CLI


def _official(name: str) -> dict:
    return torch.load(OFFICIAL / f'{name}.pt', weights_only=True)['state_dict']


def _yolov8n_state() -> dict:
    from ultralytics.nn.tasks import DetectionModel
    return DetectionModel('yolov8n.yaml', verbose=False).state_dict()


def _source(stem: str) -> tuple:
    """(state dict the CLI ``stem`` converts, extra CLI arguments)."""
    import timm
    import torchvision
    if stem == 'vovnet_official':
        return _official('vovnet_tiny_spec'), []
    if stem == 'moganet_official':
        return _official('moganet_tiny_arch'), []
    if stem == 'vanillanet_official':
        return _official('vanillanet_tiny'), ['--strides', '2', '2', '2']
    if stem == 'timm_vovnet':
        return timm.create_model('ese_vovnet19b_slim_dw', pretrained=False).state_dict(), []
    if stem == 'timm_resnetd':
        return timm.create_model('resnet18d', pretrained=False).state_dict(), []
    if stem == 'timm_hgnetv2':
        return timm.create_model('hgnetv2_b0', pretrained=False).state_dict(), []
    if stem == 'torchvision_shufflenetv2':
        return torchvision.models.shufflenet_v2_x0_5().state_dict(), []
    if stem == 'mmpretrain_shufflenetv2':
        from tests.converters.test_shufflenetv2_converters import to_mmpretrain_key
        state = torchvision.models.shufflenet_v2_x0_5().state_dict()
        return {to_mmpretrain_key(k): v for k, v in state.items()}, []
    if stem in ('rtdetr_presnet', 'rtdetr_hgnetv2'):
        from mmbackbones.models import HGNetV2, PResNet
        from tests.converters.test_rtdetr_converters import (HGNETV2_TO_OFFICIAL,
                                                             PRESNET_TO_OFFICIAL, TINY_HGNET,
                                                             to_official)
        if stem == 'rtdetr_presnet':
            return to_official(PResNet(depth=18).state_dict(), PRESNET_TO_OFFICIAL), []
        return to_official(HGNetV2(arch=TINY_HGNET).state_dict(), HGNETV2_TO_OFFICIAL), []
    if stem == 'rtdetr_official_detector':
        from tests.rtdetr.test_detector_converter import BACKBONES
        make, table = BACKBONES['PResNet']
        from tests.converters.test_rtdetr_converters import to_official
        state = {f'backbone.{k}': v for k, v in to_official(make().state_dict(), table).items()}
        state.update(_official('rtdetr_tiny'))
        return state, ['--nhead', '4', '--num-heads', '4']
    if stem == 'ultralytics_yolov8':
        return _yolov8n_state(), []
    if stem == 'mmyolo_yolov8':
        from tests.converters.test_yolov8_converters import to_mmyolo_key
        return {to_mmyolo_key(k): v for k, v in _yolov8n_state().items()}, []
    raise AssertionError(f'add a valid source for tools/model_converters/{stem}.py to _source')


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    """Per CLI: a valid source file, the same with NaN / Inf weights, extra arguments."""
    root = tmp_path_factory.mktemp('sources')
    made = {}

    def get(stem: str) -> tuple:
        if stem not in made:
            state, extra = _source(stem)
            good, bad = root / f'{stem}.pth', root / f'{stem}_nonfinite.pth'
            torch.save(state, good)
            poisoned, n = {}, 0
            for key, value in state.items():
                if value.is_floating_point() and value.numel() and 'running_var' not in key:
                    value = value.clone(memory_format=torch.contiguous_format)
                    value.view(-1)[0] = float('nan') if n % 2 else float('inf')
                    n += 1
                poisoned[key] = value
            torch.save(poisoned, bad)
            made[stem] = good, bad, extra
        return made[stem]
    return get


@pytest.fixture
def out_dir(tmp_path) -> Path:
    path = tmp_path / 'out'
    path.mkdir()
    return path


def assert_clear(code: int, stderr: str, codes=(2, ), *needles: str) -> None:
    assert code in codes, (code, stderr)
    assert 'Traceback' not in stderr, stderr
    assert 'error:' in stderr, stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)


# ------------------------------------------------------------------ the cases, for every CLI


@pytest.mark.parametrize('script', CONVERTERS, ids=IDS)
def test_missing_source(script, out_dir):
    missing = out_dir.parent / 'no_such_checkpoint.pth'
    code, _, err = run_converter(script, missing, out_dir / 'converted.pth')
    assert_clear(code, err, (2, ), 'argument src', repr(str(missing)), 'does not exist',
                 'pass the path of the checkpoint file')
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize('script', CONVERTERS, ids=IDS)
def test_source_is_a_directory(script, out_dir):
    folder = out_dir.parent / 'release'
    folder.mkdir()
    (folder / 'model_final.pth').write_bytes(b'')
    code, _, err = run_converter(script, folder, out_dir / 'converted.pth')
    assert_clear(code, err, (2, ), 'argument src', repr(str(folder)), 'is a directory',
                 f'e.g. {folder / "model_final.pth"}')
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize('script', CONVERTERS, ids=IDS)
def test_destination_directory_does_not_exist(script, sources, out_dir):
    src, _, extra = sources(script.stem)
    missing = out_dir / 'checkpoints'
    code, _, err = run_converter(script, src, missing / 'converted.pth', *extra)
    assert_clear(code, err, (2, ), 'argument dst', repr(str(missing)), 'does not exist',
                 f'mkdir -p {missing}')
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize('script', CONVERTERS, ids=IDS)
def test_destination_directory_not_writable(script, sources, out_dir):
    src, _, extra = sources(script.stem)
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses new files
        locked = Path('/sys')
    else:
        locked = out_dir
        locked.chmod(0o555)
    try:
        code, _, err = run_converter(script, src, locked / 'converted.pth', *extra)
    finally:
        out_dir.chmod(0o755)
    assert_clear(code, err, (1, 2), str(locked))
    assert 'writable' in err or 'write' in err, err
    assert not (locked / 'converted.pth').exists()
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize('script', CONVERTERS, ids=IDS)
def test_destination_is_a_directory(script, sources, out_dir):
    src, _, extra = sources(script.stem)
    code, _, err = run_converter(script, src, out_dir, *extra)
    assert_clear(code, err, (2, ), 'argument dst', repr(str(out_dir)), 'is a directory',
                 str(out_dir / 'converted.pth'))
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize('script', CONVERTERS, ids=IDS)
def test_nonfinite_weights_are_refused(script, sources, out_dir):
    good, bad, extra = sources(script.stem)
    code, _, err = run_converter(script, good, out_dir / 'converted.pth', *extra)
    assert code == 0, err  # the same source without NaN / Inf converts
    ours = torch.load(out_dir / 'converted.pth', weights_only=True)['state_dict']
    (out_dir / 'converted.pth').unlink()
    code, _, err = run_converter(script, bad, out_dir / 'converted.pth', *extra)
    assert_clear(code, err, (1, ), str(bad), 'NaN or Inf', 'nothing was written')
    named = re.search(r'tensors \(([^)]*)\)', err)[1]
    named = re.sub(r' and \d+ more$', '', named).split(', ')
    assert named and all(key in ours for key in named), (named, err)  # the written names
    assert list(out_dir.iterdir()) == []


# ------------------------------------------------------------------ atomic writing

_WRITER = textwrap.dedent('''
    import sys, time
    from mmbackbones.fileio import atomic_write

    def write(f):
        f.write(b'\\0' * (8 << 20))      # 8 MiB of a big checkpoint, then the process is killed
        f.flush()
        print('writing', flush=True)
        time.sleep(600)

    atomic_write(sys.argv[1], write)
''')


def _start_writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, '-c', _WRITER, str(target)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == 'writing'
    return proc


def test_sigkill_mid_write_leaves_old_file_and_next_write_cleans_up(tmp_path):
    target = tmp_path / 'model.pth'
    fileio.atomic_save({'w': torch.zeros(3)}, target)
    proc = _start_writer(target)
    temps = [p for p in tmp_path.iterdir() if p != target]
    assert len(temps) == 1 and temps[0].name.startswith('.model.pth.')
    assert f'.{proc.pid}.' in temps[0].name and temps[0].stat().st_size == 8 << 20
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the real name still holds the old, complete file; only the hidden temp is left over
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.zeros(3))
    assert temps[0].exists()

    big = {'w': torch.arange(1 << 20, dtype=torch.float32)}
    fileio.atomic_save(big, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.pth']
    assert torch.equal(torch.load(target, weights_only=True)['w'], big['w'])


def test_temps_of_live_writers_and_other_targets_are_kept(tmp_path):
    target = tmp_path / 'model.pth'
    proc = _start_writer(target)
    try:
        live = [p for p in tmp_path.iterdir()]
        other_target = tmp_path / f'.other.pth.{fileio._host()}.999999999.abcd.tmp'
        other_host = tmp_path / '.model.pth.some-other-host.999999999.abcd.tmp'
        other_target.write_bytes(b'x')
        other_host.write_bytes(b'x')
        fileio.atomic_write_bytes(b'new', target)
        assert target.read_bytes() == b'new'
        for kept in live + [other_target, other_host]:
            assert kept.exists(), kept
    finally:
        proc.kill()
        proc.wait()
    assert fileio.remove_stale_temps(target) == [str(live[0])]


def test_a_failing_write_removes_its_temp_and_keeps_the_old_file(tmp_path):
    target = tmp_path / 'ann.json'
    fileio.atomic_write_bytes(b'old', target)

    def fails(f):
        f.write(b'partial')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(target, fails)
    assert target.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['ann.json']
