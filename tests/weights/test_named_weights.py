# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Named weights end to end, against a loopback server standing in for the publishers.

The server serves files built from the official test vectors (``tests/data/official``) in their
publishers' formats and file names. Each load runs the whole path: download -> sha256 ->
format detection / conversion -> cache -> ``load_pretrained`` -> the official outputs.
"""
import hashlib
import json

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from mmbackbones import weights
from mmbackbones.models import MogaNet, ShuffleNetV2, VanillaNet, VoVNet
from mmbackbones.weights import cache as weights_cache
from tests.models.backbones.test_shufflenet_v2 import torchvision_features
from tests.numerics import assert_parity, max_abs_diff, randomize
from tests.weights.conftest import torch_bytes

VOVNET_URL = 'https://dl.dropbox.com/s/testvector/vovnet_tiny_ese_detectron2.pth'


def pretrained(checkpoint, **kwargs):
    return dict(type='Pretrained', checkpoint=checkpoint, **kwargs)


def vovnet_entry(vector, **fields):
    return {'test/vovnet-tiny': dict(source='vovnet-detectron2', url=VOVNET_URL,
                                     backbone=dict(type='VoVNet', arch=vector['arch']), **fields)}


def vovnet_outputs(vector, **init):
    model = VoVNet(arch=vector['arch'], init_cfg=pretrained('mmbackbones://test/vovnet-tiny',
                                                            **init))
    model.init_weights()
    with torch.no_grad():
        return model.eval()(vector['input'])


def test_vovnet_download_convert_cache_load(server, cache, vovnet_vector):
    server.files['/vovnet_tiny_ese_detectron2.pth'] = torch_bytes(vovnet_vector['state_dict'])
    with weights.override(vovnet_entry(vovnet_vector)):
        outs = vovnet_outputs(vovnet_vector)
        assert max_abs_diff(outs, vovnet_vector['outputs']) < 1e-4
        assert server.requests == ['/vovnet_tiny_ese_detectron2.pth']
        raw = cache / 'downloads' / 'vovnet_tiny_ese_detectron2.pth'
        converted = cache / 'converted' / 'vovnet_tiny_ese_detectron2.pth.VoVNet.pth'
        assert raw.read_bytes() == server.files['/vovnet_tiny_ese_detectron2.pth']
        records = json.loads((cache / 'sha256.json').read_text())['files']
        assert records['downloads/vovnet_tiny_ese_detectron2.pth']['sha256'] == \
            hashlib.sha256(raw.read_bytes()).hexdigest()
        assert 'converted/vovnet_tiny_ese_detectron2.pth.VoVNet.pth' in records
        saved = torch.load(converted, weights_only=True)
        assert saved['meta']['format'] == 'vovnet-detectron2'
        assert 'stages.0.blocks.0.ese.fc.weight' in saved['state_dict']  # our names

        # A second load reads the converted cache: the server sees nothing new.
        model = VoVNet(arch=vovnet_vector['arch'])
        report = model.load_pretrained('mmbackbones://test/vovnet-tiny', min_loaded_ratio=1.0)
        assert server.requests == ['/vovnet_tiny_ese_detectron2.pth']
        assert report['source'] == 'vovnet-detectron2' and not report['missing']
        with torch.no_grad():
            assert max_abs_diff(model.eval()(vovnet_vector['input']), vovnet_vector['outputs']) < 1e-4


def test_vanillanet_training_checkpoint_takes_the_ema_weights(server, vanillanet_vector):
    ema = dict(vanillanet_vector['state_dict'], **{'cls1.2.weight': torch.randn(10, 256, 1, 1),
                                                   'cls1.2.bias': torch.randn(10)})
    # the official training script's file: model, model_ema, epoch (the EMA is what loads)
    server.files['/vanillanet_tiny.pth'] = torch_bytes(
        {'model': {k: torch.zeros_like(v) for k, v in ema.items()}, 'model_ema': ema, 'epoch': 299})
    arch = vanillanet_vector['arch']
    entry = {'test/vanillanet-tiny': dict(
        source='vanillanet', url='https://github.com/huawei-noah/VanillaNet/releases/download/ckpt/'
                                 'vanillanet_tiny.pth', backbone=dict(type='VanillaNet', arch=arch))}
    with weights.override(entry):
        model = VanillaNet(arch=arch, out_indices=(0, 1, 2),
                           init_cfg=pretrained('mmbackbones://test/vanillanet-tiny',
                                               min_loaded_ratio=1.0))
        model.init_weights()
    model.eval()
    with torch.no_grad():
        feats = [model.stem(vanillanet_vector['input']).contiguous()] + \
            list(model(vanillanet_vector['input']))
    assert max_abs_diff(feats, vanillanet_vector['outputs']) < 1e-4


def test_moganet_release_file(server, moganet_vector):
    arch = moganet_vector['arch']
    head = {'head.weight': torch.zeros(1000, arch['embed_dims'][-1]), 'head.bias': torch.zeros(1000)}
    server.files['/moganet_tiny_test.pth.tar'] = torch_bytes(
        {'state_dict': dict(moganet_vector['state_dict'], **head), 'arch': 'moganet_tiny',
         'epoch': 299})
    entry = {'test/moganet-tiny': dict(
        source='moganet', backbone=dict(type='MogaNet', arch=arch),
        url='https://github.com/Westlake-AI/MogaNet/releases/download/moganet-in1k-weights/'
            'moganet_tiny_test.pth.tar')}
    with weights.override(entry):
        model = MogaNet(arch=arch, init_cfg=pretrained('mmbackbones://test/moganet-tiny',
                                                       min_loaded_ratio=1.0))
        model.init_weights()
    with torch.no_grad():
        assert max_abs_diff(model.eval()(moganet_vector['input']), moganet_vector['outputs']) < 1e-4


def _torchvision_file(seed=5):
    ref = randomize(torchvision.models.shufflenet_v2_x0_5(), seed=seed).eval()
    data = torch_bytes(ref.state_dict())
    return ref, data, f'shufflenetv2_x0.5-{hashlib.sha256(data).hexdigest()[:10]}.pth'


def test_torchvision_hash_in_the_file_name_is_checked(server, cache):
    ref, data, name = _torchvision_file()
    server.files[f'/{name}'] = data
    entry = {'test/shufflenet': dict(source='torchvision-shufflenetv2',
                                     url=f'https://download.pytorch.org/models/{name}',
                                     backbone=dict(type='ShuffleNetV2', arch='x0_5'))}
    with weights.override(entry):
        model = ShuffleNetV2(arch='x0_5', out_indices=(0, 1, 2, 3), channels_last=False,
                             init_cfg=pretrained('mmbackbones://test/shufflenet',
                                                 min_loaded_ratio=1.0))
        model.init_weights()
    x = torch.randn(1, 3, 67, 91, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the reference's layout; exact path within 1e-5, folded BN rtol 1e-5
        assert_parity(model.eval(), x, torchvision_features(ref, x))

    # The same name serving other bytes: the published prefix no longer matches.
    wrong = 'shufflenetv2_x0.5-0123456789.pth'
    server.files[f'/{wrong}'] = data
    entry = {'test/shufflenet-bad': dict(source='torchvision-shufflenetv2',
                                         url=f'https://download.pytorch.org/models/{wrong}',
                                         backbone=dict(type='ShuffleNetV2', arch='x0_5'))}
    with weights.override(entry), pytest.raises(
            weights.IntegrityError, match=r'not the sha256 pytorch/vision publishes \(0123456789\)'):
        weights.fetch('test/shufflenet-bad')
    assert not (cache / 'downloads' / wrong).exists()
    assert not list((cache / 'downloads').glob('.*.part'))


def test_interrupted_download_is_never_cached(server, cache, vovnet_vector):
    data = torch_bytes(vovnet_vector['state_dict'])
    server.files['/vovnet_tiny_ese_detectron2.pth'] = data
    server.truncate['/vovnet_tiny_ese_detectron2.pth'] = len(data) // 3
    with weights.override(vovnet_entry(vovnet_vector)):
        with pytest.raises(weights.WeightsNotAvailable, match=r'interrupted|ended after'):
            vovnet_outputs(vovnet_vector)
        downloads = cache / 'downloads'
        assert not downloads.exists() or list(downloads.iterdir()) == []
        del server.truncate['/vovnet_tiny_ese_detectron2.pth']
        assert max_abs_diff(vovnet_outputs(vovnet_vector), vovnet_vector['outputs']) < 1e-4


def test_download_size_limit_and_killed_download_leftovers(server, cache, monkeypatch,
                                                           vovnet_vector):
    data = torch_bytes(vovnet_vector['state_dict'])
    server.files['/vovnet_tiny_ese_detectron2.pth'] = data
    downloads = cache / 'downloads'
    with weights.override(vovnet_entry(vovnet_vector)):
        monkeypatch.setenv('MMBACKBONES_MAX_DOWNLOAD_BYTES', str(len(data) - 1))
        with pytest.raises(weights.WeightsNotAvailable,
                           match=rf'{len(data)} bytes, more than the limit of {len(data) - 1} '
                                 r'\(MMBACKBONES_MAX_DOWNLOAD_BYTES\)'):
            weights.fetch('test/vovnet-tiny')
        assert not downloads.exists() or list(downloads.iterdir()) == []
        monkeypatch.setenv('MMBACKBONES_MAX_DOWNLOAD_BYTES', 'lots')
        with pytest.raises(ValueError, match="MMBACKBONES_MAX_DOWNLOAD_BYTES='lots' must be"):
            weights.fetch('test/vovnet-tiny')
        monkeypatch.delenv('MMBACKBONES_MAX_DOWNLOAD_BYTES')
        # the temporary file of a download that was SIGKILLed (its pid no longer runs)
        from mmbackbones import fileio
        downloads.mkdir(parents=True, exist_ok=True)
        target = downloads / 'vovnet_tiny_ese_detectron2.pth'
        dead = subprocess.Popen([sys.executable, '-c', 'pass'])
        dead.wait()
        leftover = fileio.temp_path(target).replace(f'.{os.getpid()}.', f'.{dead.pid}.')
        Path(leftover).write_bytes(data[:100])
        weights.fetch('test/vovnet-tiny')
        assert sorted(p.name for p in downloads.iterdir()) == [target.name]


def test_http_error_and_unreachable_host_name_the_url_and_the_path(cache, monkeypatch,
                                                                   vovnet_vector, server):
    with weights.override(vovnet_entry(vovnet_vector)):
        path = cache / 'downloads' / 'vovnet_tiny_ese_detectron2.pth'
        with pytest.raises(weights.WeightsNotAvailable, match=r'HTTP 404') as err:
            weights.fetch('test/vovnet-tiny')
        assert VOVNET_URL in str(err.value) and str(path) in str(err.value)
        server.stop()  # nothing listens there any more: what a machine without network sees
        with pytest.raises(weights.WeightsNotAvailable, match='could not be downloaded') as err:
            weights.fetch('test/vovnet-tiny')
        assert VOVNET_URL in str(err.value) and str(path) in str(err.value)
        assert 'tools/fetch_weights.py test/vovnet-tiny' in str(err.value)


def test_offline_names_the_url_and_the_exact_path(server, cache, monkeypatch, vovnet_vector):
    server.files['/vovnet_tiny_ese_detectron2.pth'] = data = torch_bytes(vovnet_vector['state_dict'])
    monkeypatch.setenv('MMBACKBONES_OFFLINE', '1')
    path = cache / 'downloads' / 'vovnet_tiny_ese_detectron2.pth'
    with weights.override(vovnet_entry(vovnet_vector)):
        with pytest.raises(weights.WeightsNotAvailable, match='MMBACKBONES_OFFLINE=1') as err:
            vovnet_outputs(vovnet_vector)
        assert VOVNET_URL in str(err.value) and f'put the file at {path}' in str(err.value)
        assert server.requests == []
        # Doing what the message says works offline; the file is recorded at first use.
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        assert max_abs_diff(vovnet_outputs(vovnet_vector), vovnet_vector['outputs']) < 1e-4
        assert server.requests == []
        assert weights_cache.record_of(path)['sha256'] == hashlib.sha256(data).hexdigest()


def test_changed_cached_files_are_refused(server, cache, vovnet_vector):
    server.files['/vovnet_tiny_ese_detectron2.pth'] = torch_bytes(vovnet_vector['state_dict'])
    with weights.override(vovnet_entry(vovnet_vector)):
        vovnet_outputs(vovnet_vector)
        raw = cache / 'downloads' / 'vovnet_tiny_ese_detectron2.pth'
        original = raw.read_bytes()
        raw.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(weights.IntegrityError, match=r'has changed since it was recorded.*'
                                                         r'Delete it'):
            vovnet_outputs(vovnet_vector)
        raw.write_bytes(original)
        converted = cache / 'converted' / 'vovnet_tiny_ese_detectron2.pth.VoVNet.pth'
        with open(converted, 'ab') as f:
            f.write(b'\0')
        with pytest.raises(weights.IntegrityError, match=r'\.VoVNet\.pth has changed'):
            vovnet_outputs(vovnet_vector)
        assert server.requests == ['/vovnet_tiny_ese_detectron2.pth']


def test_sha256_pin(server, cache, vovnet_vector):
    data = torch_bytes(vovnet_vector['state_dict'])
    server.files['/vovnet_tiny_ese_detectron2.pth'] = data
    digest = hashlib.sha256(data).hexdigest()
    with weights.override(vovnet_entry(vovnet_vector)):
        with pytest.raises(weights.IntegrityError, match='not the sha256 pinned in init_cfg'):
            vovnet_outputs(vovnet_vector, sha256='0' * 64)
        assert not (cache / 'downloads' / 'vovnet_tiny_ese_detectron2.pth').exists()
        outs = vovnet_outputs(vovnet_vector, sha256=digest[:12])  # a prefix pins too
        assert max_abs_diff(outs, vovnet_vector['outputs']) < 1e-4
        with pytest.raises(weights.IntegrityError, match='not the sha256 pinned in init_cfg'):
            vovnet_outputs(vovnet_vector, sha256='f' * 64)  # a cached file is checked as well
        with pytest.raises(ValueError, match=r"sha256='abc' must be a sha256 hex digest"):
            vovnet_outputs(vovnet_vector, sha256='abc')


def test_a_registry_pin_is_checked(server, cache, vovnet_vector):
    server.files['/vovnet_tiny_ese_detectron2.pth'] = torch_bytes(vovnet_vector['state_dict'])
    with weights.override(vovnet_entry(vovnet_vector, sha256='ab' * 32)):
        with pytest.raises(weights.IntegrityError, match='youngwanLEE/vovnet-detectron2 publishes'):
            weights.fetch('test/vovnet-tiny')


def test_wrong_family_and_wrong_arch_are_refused(server, vovnet_vector):
    with pytest.raises(ValueError, match=r"mmbackbones://shufflenetv2/x1_0 holds ShuffleNetV2 "
                                         r"weights .* cannot initialise a VoVNet.*vovnet/V-39-eSE"):
        VoVNet(arch='V-39-eSE', init_cfg=pretrained('mmbackbones://shufflenetv2/x1_0')).init_weights()
    with pytest.raises(ValueError, match=r"holds weights for backbone=dict\(type='VoVNet', "
                                         r"arch='V-39-eSE'\); this VoVNet needs arch='V-39-eSE' "
                                         r"\(this one is 'V-19-eSE'\)"):
        VoVNet(arch='V-19-eSE', init_cfg=pretrained('mmbackbones://vovnet/V-39-eSE')).init_weights()
    assert server.requests == []  # refused before anything is downloaded


def test_unknown_name_lists_the_family(cache):
    with pytest.raises(ValueError, match=r'mmbackbones://vovnet/V-40-eSE is not a named weight; '
                                         r'choose one of vovnet/V-19-slim-dw-eSE, '):
        VoVNet(arch='V-39-eSE', init_cfg=pretrained('mmbackbones://vovnet/V-40-eSE')).init_weights()


def test_prefix_does_not_apply_to_named_weights(cache):
    with pytest.raises(ValueError, match="prefix='backbone.' does not apply"):
        VoVNet(arch='V-39-eSE').load_pretrained('mmbackbones://vovnet/V-39-eSE', prefix='backbone.')


def test_mmengine_scheme_gives_a_detector_checkpoint(server, vovnet_vector):
    from mmengine.runner import CheckpointLoader
    from mmengine.runner.checkpoint import load_checkpoint
    server.files['/vovnet_tiny_ese_detectron2.pth'] = torch_bytes(vovnet_vector['state_dict'])
    with weights.override(vovnet_entry(vovnet_vector)):
        ckpt = CheckpointLoader.load_checkpoint('mmbackbones://test/vovnet-tiny')
        assert ckpt['meta']['mmbackbones_weights'] == 'test/vovnet-tiny'
        assert all(k.startswith('backbone.') for k in ckpt['state_dict'])

        class Detector(torch.nn.Module):  # what load_from= / tools/test.py load into
            def __init__(self):
                super().__init__()
                self.backbone = VoVNet(arch=vovnet_vector['arch'])
                self.neck = torch.nn.Conv2d(96, 8, 1)

        detector = Detector()
        load_checkpoint(detector, 'mmbackbones://test/vovnet-tiny', map_location='cpu')
    with torch.no_grad():
        outs = detector.backbone.eval()(vovnet_vector['input'])
    assert max_abs_diff(outs, vovnet_vector['outputs']) < 1e-4
    assert server.requests == ['/vovnet_tiny_ese_detectron2.pth']


def test_released_ultralytics_pt_through_the_real_registry_entry(server, tmp_path):
    """``mmbackbones://yolov8/n`` (the registry's own entry, served by the mirror): the released
    .pt pickles the whole model, which is read by the restricted reader, never unpickled."""
    import copy

    import ultralytics
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import strip_optimizer

    from mmbackbones.models import YOLOv8CSPDarknet
    from tests.models.backbones.test_yolov8_csp_darknet import ultralytics_p3_p4_p5
    detector = randomize(DetectionModel('yolov8n.yaml', verbose=False), seed=11).eval()
    last, best = tmp_path / 'last.pt', tmp_path / 'yolov8n.pt'
    torch.save({'epoch': 2, 'model': None, 'ema': copy.deepcopy(detector).half(),
                'optimizer': None, 'train_args': {'model': 'yolov8n.yaml'},
                'version': ultralytics.__version__}, last)
    strip_optimizer(str(last), str(best))  # what a released file looks like
    server.files['/yolov8n.pt'] = best.read_bytes()
    model = YOLOv8CSPDarknet(arch='n', init_cfg=pretrained('mmbackbones://yolov8/n',
                                                           min_loaded_ratio=1.0))
    model.init_weights()
    assert server.requests == ['/yolov8n.pt']
    reference = copy.deepcopy(detector).half().float().eval()  # the weights the file holds
    x = torch.randn(1, 3, 67, 93, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert max_abs_diff(model.eval()(x), ultralytics_p3_p4_p5(reference, x)) < 1e-4


def test_a_copied_cache_loads_offline_even_where_it_cannot_be_locked(server, cache, monkeypatch,
                                                                     vovnet_vector):
    """What a cluster does: fill the cache where there is internet, copy it, read it offline.
    The copy's lock file cannot be opened (as on a read-only file system); reading needs none."""
    import shutil
    server.files['/vovnet_tiny_ese_detectron2.pth'] = torch_bytes(vovnet_vector['state_dict'])
    with weights.override(vovnet_entry(vovnet_vector)):
        weights.converted_state('test/vovnet-tiny', 'VoVNet')
        copy = cache.parent / 'cluster_cache'
        shutil.copytree(cache, copy)
        (copy / '.lock').unlink()
        (copy / '.lock').mkdir()  # open(..., 'a') fails with an OSError, even for root
        monkeypatch.setenv('MMBACKBONES_CACHE', str(copy))
        monkeypatch.setenv('MMBACKBONES_OFFLINE', '1')
        assert max_abs_diff(vovnet_outputs(vovnet_vector), vovnet_vector['outputs']) < 1e-4
    assert server.requests == ['/vovnet_tiny_ese_detectron2.pth']


def test_deleted_download_and_stale_conversion(server, cache, vovnet_vector):
    """The conversion outlives a deleted download; a conversion by another converter version is
    redone, downloading the file again."""
    server.files['/vovnet_tiny_ese_detectron2.pth'] = torch_bytes(vovnet_vector['state_dict'])
    with weights.override(vovnet_entry(vovnet_vector)):
        weights.converted_state('test/vovnet-tiny', 'VoVNet')
        (cache / 'downloads' / 'vovnet_tiny_ese_detectron2.pth').unlink()
        state, info = weights.converted_state('test/vovnet-tiny', 'VoVNet')
        assert info['cached'] and server.requests == ['/vovnet_tiny_ese_detectron2.pth']
        converted = cache / 'converted' / 'vovnet_tiny_ese_detectron2.pth.VoVNet.pth'
        ckpt = torch.load(converted, weights_only=True)
        ckpt['meta']['converter'] = 'an older one'
        torch.save(ckpt, converted)
        with weights_cache.locked():
            weights_cache.write_record(converted, weights_cache.sha256_of(converted), 'test')
        assert max_abs_diff(vovnet_outputs(vovnet_vector), vovnet_vector['outputs']) < 1e-4
        assert server.requests == ['/vovnet_tiny_ese_detectron2.pth'] * 2
        assert torch.load(converted, weights_only=True)['meta']['converter'] != 'an older one'


def test_redirects_are_followed(server, cache, vovnet_vector):
    """Publishers redirect (GitHub releases and the Hugging Face hub to their CDNs)."""
    server.files['/cdn/blob-1234'] = torch_bytes(vovnet_vector['state_dict'])
    server.redirects['/vovnet_tiny_ese_detectron2.pth'] = server.url('/cdn/blob-1234')
    with weights.override(vovnet_entry(vovnet_vector)):
        path = weights.fetch('test/vovnet-tiny')
    assert path.read_bytes() == server.files['/cdn/blob-1234']
    assert server.requests == ['/vovnet_tiny_ese_detectron2.pth', '/cdn/blob-1234']
