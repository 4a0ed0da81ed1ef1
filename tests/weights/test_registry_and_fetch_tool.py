# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The weights registry (one data file) and ``tools/fetch_weights.py``."""
import hashlib
import os
import subprocess
import sys
import urllib.parse

import pytest
import timm
import torch

from mmbackbones import weights
from mmbackbones.converters.formats import FORMATS_BY_NAME
from mmbackbones.models.backbones.base import BaseBackbone
from tests.paths import REPO
from tests.weights.conftest import torch_bytes

TOOL = REPO / 'tools' / 'fetch_weights.py'
#: every named arch of the families whose authors release ImageNet weights
OFFICIAL_ARCHS = {
    'VoVNet': ['V-19-slim-dw-eSE', 'V-19-slim-eSE', 'V-19-dw-eSE', 'V-19-eSE', 'V-39-eSE',
               'V-57-eSE', 'V-99-eSE'],
    'VanillaNet': [f'vanillanet_{n}' for n in range(5, 14)] + ['vanillanet_13_x1_5',
                                                               'vanillanet_13_x1_5_ada_pool'],
    'MogaNet': ['xtiny', 'tiny', 'small', 'base', 'large', 'xlarge'],
    'PResNet': ['R18', 'R34', 'R50', 'R101'],
    'HGNetV2': ['L', 'X', 'H', 'b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6'],
    'ShuffleNetV2': ['x0_5', 'x1_0', 'x1_5', 'x2_0'],
    'YOLOv8CSPDarknet': ['n', 's', 'm', 'l', 'x'],
}


def run_tool(*args, timeout=120, **env):
    """tools/fetch_weights.py with this checkout importable and the test's environment."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', **env)
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def test_every_entry_is_consistent():
    from mmdet.registry import MODELS
    for name, entry in weights.entries().items():
        cls = MODELS.get(entry.backbone_type)
        assert cls is not None and issubclass(cls, BaseBackbone), name
        if cls.arch_settings:
            assert entry.backbone['arch'] in cls.arch_settings, name
        if entry.format is None:  # timm's own keys, for TimmBackbone: nothing to convert
            assert entry.backbones == ('TimmBackbone', ), name
        else:
            assert FORMATS_BY_NAME[entry.format].backbone == entry.backbone_type, name
        assert urllib.parse.urlsplit(entry.url).scheme == 'https', name
        assert entry.licence and entry.published_in.startswith('https://github.com/'), name


def test_every_official_arch_has_named_weights():
    have = {}
    for entry in weights.entries().values():
        have.setdefault(entry.backbone_type, set()).add(entry.backbone.get('arch'))
    for family, archs in OFFICIAL_ARCHS.items():
        assert set(archs) <= have.get(family, set()), (family, set(archs) - have.get(family, set()))
    assert weights.get('vanillanet/vanillanet_13_act_num_4_kd_pretrain').backbone == dict(
        type='VanillaNet', arch='vanillanet_13', act_num=4)


def test_timm_entries_exist_in_the_installed_timm():
    """Every timm tag in the registry is a pretrained tag of the installed timm, on the hub."""
    for name, entry in weights.entries().items():
        if not name.startswith('timm/'):
            continue
        tag = name.split('/', 1)[1]
        cfg = timm.models.get_pretrained_cfg(tag)
        assert cfg is not None and cfg.hf_hub_id == f'timm/{tag}', name
        assert entry.url == f'https://huggingface.co/timm/{tag}/resolve/main/model.safetensors'


def test_restrictive_licences_are_said():
    for name, entry in weights.entries().items():
        if name.startswith('vovnet/'):
            assert 'non-commercial' in entry.licence.lower(), name
        if name.startswith('yolov8/'):
            assert entry.licence.startswith('AGPL-3.0'), name


def test_list_prints_every_entry_with_url_and_licence(cache):
    proc = run_tool('--list')  # the real command line, once
    assert proc.returncode == 0, proc.stderr
    blocks = {b.split('\n', 1)[0]: b for b in proc.stdout.split('\n\n')[1:]}
    assert set(blocks) == set(weights.entries())
    for name, entry in weights.entries().items():
        assert f'url:       {entry.url}' in blocks[name]
        assert f'licence:   {entry.licence}' in blocks[name]
        assert entry.init_cfg() in blocks[name]
    assert 'top-1:     82.05 [official]' in blocks['vanillanet/vanillanet_13']
    assert 'top-1:     -' in blocks['vanillanet/vanillanet_13_act_num_4_kd_pretrain']
    assert 'f707e7126e... (published in the file name)' in blocks['shufflenetv2/x0_5']


def test_fetch_by_name_through_a_mirror(cache, server, vovnet_vector, load_tool, capsys):
    """fetch_weights.py NAME downloads, checks, records and converts; --list then shows the
    recorded sha256 (the tool's main(), in-process, with a test entry in the registry)."""
    tool = load_tool('fetch_weights')
    data = torch_bytes(vovnet_vector['state_dict'])
    server.files['/vovnet_tiny_ese_detectron2.pth'] = data
    entry = dict(source='vovnet-detectron2', backbone=dict(type='VoVNet', arch=vovnet_vector['arch']),
                 url='https://dl.dropbox.com/s/testvector/vovnet_tiny_ese_detectron2.pth')
    with weights.override({'test/vovnet-tiny': entry}):
        assert tool.main(['test/vovnet-tiny']) == 0
        out = capsys.readouterr().out
        digest = hashlib.sha256(data).hexdigest()
        assert f'sha256 {digest}' in out and 'converted for VoVNet' in out
        assert 'licence: CC BY-NC 4.0 (non-commercial use only)' in out
        assert (cache / 'downloads' / 'vovnet_tiny_ese_detectron2.pth').read_bytes() == data
        assert (cache / 'converted' / 'vovnet_tiny_ese_detectron2.pth.VoVNet.pth').is_file()
        assert server.requests == ['/vovnet_tiny_ese_detectron2.pth']
        assert tool.main(['--list', 'test/vovnet-tiny']) == 0
        assert f'sha256 {digest} (recorded ' in capsys.readouterr().out
        assert tool.main(['mmbackbones://test/vovnet-tiny']) == 0  # cached: no new request
        assert server.requests == ['/vovnet_tiny_ese_detectron2.pth']


def test_fetch_failures_exit_non_zero_with_the_reason(cache, server, monkeypatch, load_tool,
                                                     capsys):
    tool = load_tool('fetch_weights')
    assert tool.main(['vovnet/V-40-eSE']) == 2
    assert 'unknown weight name(s) vovnet/V-40-eSE' in capsys.readouterr().err
    monkeypatch.setenv('MMBACKBONES_OFFLINE', '1')
    assert tool.main(['yolov8/n', 'yolov8/s']) == 1
    err = capsys.readouterr().err
    assert 'https://github.com/ultralytics/assets/releases/download/v8.2.0/yolov8n.pt' in err
    assert str(cache / 'downloads' / 'yolov8n.pt') in err
    assert '2 of 2 failed: yolov8/n, yolov8/s' in err
    assert server.requests == []


def test_models_do_not_import_converters_at_module_level():
    """mmbackbones.models (and the weights package it loads lazily) import converters only
    inside functions: the models are the lower layer."""
    import ast
    offenders = []
    for folder in ('models', 'weights'):
        for path in sorted((REPO / 'mmbackbones' / folder).rglob('*.py')):
            for node in ast.parse(path.read_text()).body:
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [('.' * node.level) + (node.module or '')]
                if any('converters' in n for n in names):
                    offenders.append(f'{path.relative_to(REPO)}:{node.lineno}')
    assert offenders == []


@pytest.mark.parametrize('name', ['vovnet/V-39-eSE', 'yolov8/s'])
def test_mirror_replaces_the_published_url(monkeypatch, name):
    entry = weights.get(name)
    monkeypatch.setenv('MMBACKBONES_WEIGHTS_MIRROR', 'http://mirror.example/weights/')
    assert entry.download_url() == f'http://mirror.example/weights/{entry.file}'
    monkeypatch.delenv('MMBACKBONES_WEIGHTS_MIRROR')
    assert entry.download_url() == entry.url
    dropbox = weights.get('vovnet/V-19-dw-eSE')
    assert dropbox.download_url() == dropbox.url + '?dl=1'


@pytest.mark.parametrize('name', [
    'vovnet/V-19-slim-dw-eSE', 'timm/ese_vovnet19b_dw.ra_in1k', 'vanillanet/vanillanet_5',
    'vanillanet/vanillanet_13_act_num_4_kd_pretrain', 'moganet/xtiny', 'presnet/R18',
    'timm/resnet18d.ra2_in1k', 'hgnetv2/L', 'hgnetv2/b0', 'shufflenetv2/x0_5', 'yolov8/n'])
def test_entry_fits_the_backbone_its_config_builds(name):
    """An entry's backbone config builds (on the meta device: nothing allocated) and passes the
    family / arch / argument check the loader runs before any download; the same backbone with
    another arch or a missing argument does not."""
    from mmdet.registry import MODELS
    entry = weights.get(name)
    with torch.device('meta'):
        weights.check_backbone(entry, MODELS.build(dict(entry.backbone)))
        names = list(MODELS.get(entry.backbone_type).arch_settings)
        other = dict(entry.backbone, arch=names[names.index(entry.backbone['arch']) - 1])
        with pytest.raises(ValueError, match=f"this {entry.backbone_type} needs arch="):
            weights.check_backbone(entry, MODELS.build(other))
