"""Bad input to every public entry point: a clear error naming the argument and the valid choices.

Backbone cases run for every backbone registered by mmbackbones (the families of
``tests/matrix/test_backbone_matrix.py``, tiny configs from the conventions ``CASES``); converter
cases for every script in ``tools/model_converters/``.

=================================  ===========================  =================================
case                               entry point                  expected error
=================================  ===========================  =================================
unknown arch name                  ``MODELS.build`` of the      ``ValueError``: ``arch 'x' is
                                   backbone config              unknown; choose one of`` + names
                                                                (TimmBackbone: ``model_name ...
                                                                is not a timm model``, close
                                                                matches)
arch of the wrong type             same                         ``TypeError`` naming ``arch``
arch dict: missing / unknown key   same                         ``ValueError``: ``arch dict has
                                                                missing ...`` / ``unknown ...``
                                                                + required and optional keys
out_indices out of range,          same                         ``ValueError`` naming
unsorted, empty                                                 ``out_indices`` and the range
frozen_stages out of range         same                         ``ValueError`` naming
                                                                ``frozen_stages`` and the range
plugin position that does not      same                         ``ValueError``: ``plugin position
exist                                                           ... does not exist; choose one
                                                                of`` (or ``does not support
                                                                plugins``)
norm_cfg type that does not exist  same                         ``ValueError``: ``norm_cfg type
                                                                ... is not a registered norm
                                                                layer; choose one of`` (Timm:
                                                                ``... do not apply``)
checkpoint of the wrong family     ``init_cfg=Pretrained``,     ``RuntimeError``: ``below
                                   ``init_weights()``           min_loaded_ratio``, naming the
                                                                file and the missing keys
truncated checkpoint file          ``init_weights()``;          ``CorruptCheckpointError`` naming
                                   mmengine                     the file; tools/test.py:
                                   ``load_checkpoint``;         ``UsageError`` naming
                                   ``check_checkpoint_arg``     ``checkpoint``
converter given the wrong source   every script in              exit 1, ``error:`` on stderr; no
                                   tools/model_converters       output file, no temporary file
converter given a truncated file   same                         exit 1, ``error:`` naming the
                                                                file; no files
neck in_channels that disagree     tools/train.py               exit 2: ``model.neck.in_channels=
with the backbone                  (``launch.load_config``)     ... disagrees`` + the right
                                                                channels; no work dir created
=================================  ===========================  =================================
"""
import contextlib
import copy
import io
import runpy
import sys
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS

from mmbackbones.engine.checkpoint import CorruptCheckpointError
from tests.matrix.test_backbone_matrix import FAMILIES, NO_NAMED_ARCHS, tiny_config
from tests.paths import REPO

CONVERTERS = sorted((REPO / 'tools' / 'model_converters').glob('*.py'))


@pytest.fixture(params=list(FAMILIES), ids=list(FAMILIES))
def family(request) -> str:
    return request.param


def build(cfg: dict, **kwargs):
    return MODELS.build(dict(copy.deepcopy(cfg), **kwargs))


# ------------------------------------------------------------------ backbone arguments


def test_unknown_arch_name(family):
    cfg = tiny_config(family)
    if family in NO_NAMED_ARCHS:  # TimmBackbone: the arch is a timm model name
        with pytest.raises(ValueError, match=r"model_name 'resnet5O' is not a timm model; close "
                                             r"matches: .*resnet50"):
            build(cfg, model_name='resnet5O')
        return
    names = ', '.join(FAMILIES[family].arch_settings)
    with pytest.raises(ValueError, match=rf"{family}: arch 'no-such-arch' is unknown; choose one "
                                         rf"of {names}, or pass a dict with keys"):
        build(cfg, arch='no-such-arch')
    with pytest.raises(TypeError, match=rf'{family}: arch must be a str .* or a dict'):
        build(cfg, arch=3.5)


def test_malformed_arch_dict(family):
    cls = FAMILIES[family]
    cfg = tiny_config(family)
    if family in NO_NAMED_ARCHS:
        with pytest.raises(TypeError, match='model_name must be a timm model name'):
            build(cfg, model_name=dict(depths=(1, 1)))
        return
    arch = dict(cfg['arch']) if isinstance(cfg.get('arch'), dict) \
        else dict(cls.arch_settings[next(iter(cls.arch_settings))])
    required = cls.arch_required_keys
    missing = dict(arch)
    del missing[required[0]]
    with pytest.raises(ValueError, match=rf'{family}: arch dict has missing {required[0]}\. '
                                         rf'Required keys: {", ".join(required)}'):
        build(cfg, arch=missing)
    with pytest.raises(ValueError, match=rf'{family}: arch dict has unknown colour\. Required '
                                         rf'keys: {", ".join(required)}'):
        build(cfg, arch=dict(arch, colour='red'))


@pytest.mark.parametrize('bad', [(0, 9), (2, 1), ()])
def test_wrong_out_indices(family, bad):
    with pytest.raises(ValueError, match=r'out_indices=.*(outside the valid range 0\.\.\d|'
                                         r'unique and sorted|non-empty sequence of ints in 0\.\.)'):
        build(tiny_config(family), out_indices=bad)


@pytest.mark.parametrize('bad', [-2, 9])
def test_frozen_stages_out_of_range(family, bad):
    with pytest.raises(ValueError, match=rf'frozen_stages={bad} is out of range; use -1 '
                                         r'\(nothing\), 0 \(the stem\) or k in 1\.\.\d'):
        build(tiny_config(family), frozen_stages=bad)


def test_plugin_position_that_does_not_exist(family):
    positions = FAMILIES[family].plugin_positions
    plugins = [dict(cfg=dict(type='ContextBlock', ratio=0.25), position='after_conv9')]
    expected = (rf"plugin position 'after_conv9' does not exist; choose one of "
                rf"{', '.join(positions)}" if positions else f'{family} does not support plugins')
    with pytest.raises(ValueError, match=expected):
        build(tiny_config(family), plugins=plugins)


def test_norm_cfg_type_that_does_not_exist(family):
    cfg = tiny_config(family)
    if family in NO_NAMED_ARCHS:  # timm builds its own layers and refuses mmcv layer configs
        with pytest.raises(ValueError, match=r'norm_cfg .* do not apply to timm models'):
            build(cfg, norm_cfg=dict(type='BatchNormz'))
        return
    with pytest.raises(ValueError, match=r"norm_cfg type 'BatchNormz' is not a registered norm "
                                         r"layer; choose one of .*\bBN\b.*\bGN\b"):
        build(cfg, norm_cfg=dict(type='BatchNormz'))


# ------------------------------------------------------------------ checkpoints


def _save_state(family: str, path: Path) -> Path:
    torch.save({'state_dict': build(tiny_config(family)).state_dict(), 'meta': {}}, path)
    return path


def test_checkpoint_of_the_wrong_family(family, tmp_path):
    names = list(FAMILIES)
    other = names[(names.index(family) + 1) % len(names)]
    path = _save_state(other, tmp_path / f'{other}.pth')
    model = build(tiny_config(family), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match=rf"{family}: loaded \d+/\d+ tensors .* from "
                                           rf"'{path}', below min_loaded_ratio=0\.9\. Refusing"):
        model.init_weights()


def test_truncated_checkpoint(family, tmp_path, load_tool):
    from mmengine.runner.checkpoint import load_checkpoint
    path = _save_state(family, tmp_path / 'cut.pth')
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    model = build(tiny_config(family), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CorruptCheckpointError, match=r"cut\.pth.*not a complete zip archive"):
        model.init_weights()
    with pytest.raises(CorruptCheckpointError, match=r'cut\.pth'):
        load_checkpoint(build(tiny_config(family)), str(path), map_location='cpu')
    from mmbackbones.engine import launch
    with pytest.raises(launch.UsageError, match=r'^checkpoint: .*cut\.pth'):
        launch.check_checkpoint_arg(str(path))


# ------------------------------------------------------------------ converters


def run_converter(script: Path, *args: str):
    """Run a converter script in-process, as ``python script args``; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = [str(script), *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(script), run_name='__main__')
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope='module')
def foreign_source(tmp_path_factory) -> Path:
    """A checkpoint no converter takes: torchvision's MobileNetV3-Small, as a plain state dict."""
    import torchvision
    path = tmp_path_factory.mktemp('foreign') / 'mobilenet_v3_small.pth'
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    return path


@pytest.mark.parametrize('script', CONVERTERS, ids=[p.stem for p in CONVERTERS])
def test_converter_given_the_wrong_source(script, foreign_source, tmp_path):
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    code, stdout, stderr = run_converter(script, foreign_source, out_dir / 'converted.pth')
    assert code == 1, (stdout, stderr)
    assert 'error:' in stderr and ('features.0.0.weight' in stderr or 'features.' in stderr
                                   or 'checkpoint' in stderr), stderr
    assert list(out_dir.iterdir()) == []  # no output, no temporary file

    cut = tmp_path / 'cut.pth'
    data = foreign_source.read_bytes()
    cut.write_bytes(data[:len(data) // 3])
    code, stdout, stderr = run_converter(script, cut, out_dir / 'converted.pth')
    assert code == 1 and 'error:' in stderr and 'cut.pth' in stderr, (stdout, stderr)
    assert list(out_dir.iterdir()) == []


# ------------------------------------------------------------------ configs


def test_neck_in_channels_disagreeing_with_the_backbone(load_tool, tiny_config, tmp_path, capsys):
    from mmengine.config import Config
    cfg = Config.fromfile(tiny_config)
    right = list(cfg.model.neck.in_channels)
    wrong = [c * 2 for c in right]
    work_dir = tmp_path / 'work'
    train = load_tool('train')
    with pytest.raises(SystemExit) as exit_info:
        train.main([tiny_config, '--work-dir', str(work_dir), '--cfg-options',
                    f'model.neck.in_channels={wrong}'.replace(' ', '')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f'model.neck.in_channels={wrong} disagrees with the backbone' in err, err
    assert f'Set model.neck.in_channels={right}' in err, err
    assert not work_dir.exists()
