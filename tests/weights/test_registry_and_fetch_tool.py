# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The weights registry (one data file) and ``tools/fetch_weights.py``."""
import hashlib
import os
import subprocess
import sys
import urllib.parse

import pytest
import timm

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
    proc = run_tool('--list')
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


def test_fetch_by_name_through_a_mirror(cache, server, vovnet_vector, tmp_path):
    """fetch_weights.py NAME downloads, checks, records and converts; --list then shows the
    recorded sha256. A private registry entry is added through a tiny wrapper script."""
    data = torch_bytes(vovnet_vector['state_dict'])
    server.files['/vovnet_tiny_ese_detectron2.pth'] = data
    wrapper = tmp_path / 'fetch_with_test_entry.py'
    wrapper.write_text(
        'import runpy, sys\n'
        'from mmbackbones import weights\n'
        f'arch = {vovnet_vector["arch"]!r}\n'
        "entry = dict(source='vovnet-detectron2', backbone=dict(type='VoVNet', arch=arch),\n"
        "             url='https://dl.dropbox.com/s/testvector/vovnet_tiny_ese_detectron2.pth')\n"
        "with weights.override({'test/vovnet-tiny': entry}):\n"
        f"    sys.argv = [{str(TOOL)!r}] + sys.argv[1:]\n"
        f"    runpy.run_path({str(TOOL)!r}, run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(wrapper), 'test/vovnet-tiny'], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    digest = hashlib.sha256(data).hexdigest()
    assert f'sha256 {digest}' in proc.stdout and 'converted for VoVNet' in proc.stdout
    assert (cache / 'downloads' / 'vovnet_tiny_ese_detectron2.pth').read_bytes() == data
    assert (cache / 'converted' / 'vovnet_tiny_ese_detectron2.pth.VoVNet.pth').is_file()
    assert server.requests == ['/vovnet_tiny_ese_detectron2.pth']
    proc = subprocess.run([sys.executable, str(wrapper), '--list', 'test/vovnet-tiny'],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert f'sha256 {digest} (recorded ' in proc.stdout, proc.stdout + proc.stderr


def test_fetch_failures_exit_non_zero_with_the_reason(cache, server):
    proc = run_tool('vovnet/V-40-eSE')
    assert proc.returncode == 2 and 'unknown weight name(s) vovnet/V-40-eSE' in proc.stderr
    proc = run_tool('yolov8/n', MMBACKBONES_OFFLINE='1')
    assert proc.returncode == 1
    assert 'https://github.com/ultralytics/assets/releases/download/v8.2.0/yolov8n.pt' in proc.stderr
    assert str(cache / 'downloads' / 'yolov8n.pt') in proc.stderr
    assert server.requests == []


def test_models_do_not_import_converters_at_import_time():
    code = ('import sys; import mmbackbones.models.backbones.base; '
            'print(sorted(m for m in sys.modules if m.startswith("mmbackbones.converters")))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[]', proc.stdout


@pytest.mark.parametrize('name', ['vovnet/V-39-eSE', 'yolov8/s'])
def test_mirror_replaces_the_published_url(monkeypatch, name):
    entry = weights.get(name)
    monkeypatch.setenv('MMBACKBONES_WEIGHTS_MIRROR', 'http://mirror.example/weights/')
    assert entry.download_url() == f'http://mirror.example/weights/{entry.file}'
    monkeypatch.delenv('MMBACKBONES_WEIGHTS_MIRROR')
    assert entry.download_url() == entry.url
    dropbox = weights.get('vovnet/V-19-dw-eSE')
    assert dropbox.download_url() == dropbox.url + '?dl=1'
