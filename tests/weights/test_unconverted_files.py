# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Publisher files given to ``init_cfg`` as they are: local paths and URLs, recognised from their
keys and converted on load; unrecognised and wrong-family files are refused clearly."""
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from mmbackbones.converters import convert_timm_vovnet
from mmbackbones.converters.formats import SOURCE_FORMATS, detect_format
from mmbackbones.models import TimmBackbone, VoVNet, YOLOv8CSPDarknet
from tests.models.backbones.test_vovnet import timm_stage_features
from tests.numerics import max_abs_diff, randomize
from tests.weights.conftest import torch_bytes


def pretrained(checkpoint, **kwargs):
    return dict(type='Pretrained', checkpoint=checkpoint, **kwargs)


def test_official_detector_file_by_path_and_by_url(tmp_path, server, vovnet_vector):
    """A vovnet-detectron2 detector checkpoint (backbone under backbone.bottom_up.) works as is."""
    state = {f'backbone.bottom_up.{k}': v for k, v in vovnet_vector['state_dict'].items()}
    state['roi_heads.box_predictor.cls_score.weight'] = torch.zeros(81, 16)
    data = torch_bytes({'model': state, '__author__': 'detectron2'})
    path = tmp_path / 'model_final.pth'
    path.write_bytes(data)
    server.files['/ckpt/model_final.pth'] = data
    for checkpoint in (str(path), server.url('/ckpt/model_final.pth')):
        model = VoVNet(arch=vovnet_vector['arch'], init_cfg=pretrained(checkpoint,
                                                                       min_loaded_ratio=1.0))
        model.init_weights()
        with torch.no_grad():
            assert max_abs_diff(model.eval()(vovnet_vector['input']), vovnet_vector['outputs']) < 1e-4
    # the URL was downloaded once into the cache; loading it again does not ask the server
    VoVNet(arch=vovnet_vector['arch']).load_pretrained(server.url('/ckpt/model_final.pth'))
    assert server.requests == ['/ckpt/model_final.pth']


def test_timm_safetensors_file_into_vovnet_and_into_timm_backbone(tmp_path):
    ref = randomize(timm.create_model('ese_vovnet19b_slim_dw', num_classes=10), seed=3).eval()
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    x = torch.randn(1, 3, 71, 93, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = timm_stage_features(ref, x)
    model = VoVNet(arch='V-19-slim-dw-eSE', ese_layout='last', channels_last=False)
    report = model.load_pretrained(str(path), min_loaded_ratio=1.0)
    assert report['source'] == 'timm-vovnet' and report['missing'] == []
    with torch.no_grad():
        assert max_abs_diff(model.eval()(x), expected) < 1e-4
    # TimmBackbone takes timm's own keys: no conversion
    wrapped = TimmBackbone(model_name='ese_vovnet19b_slim_dw')
    assert wrapped.load_pretrained(str(path))['source'] == 'mmbackbones'


def test_timm_file_with_the_wrong_ese_layout_says_what_to_set(tmp_path):
    from timm.models.vovnet import VovNet, model_cfgs
    ref = VovNet(cfg=dict(model_cfgs['ese_vovnet19b_slim'], block_per_stage=[1, 1, 2, 2]),
                 num_classes=0)  # two blocks in the last stages: eSE only on the last one
    path = tmp_path / 'vovnet_two_blocks.pth'
    torch.save(ref.state_dict(), path)
    arch, layout = VoVNet.arch_from_state_dict(convert_timm_vovnet(ref.state_dict()).state_dict,
                                               identity=True)
    assert layout == 'last'
    with pytest.raises(RuntimeError, match=r"missing \(\d+\).*ese_layout='last'"):
        VoVNet(arch=arch, ese_layout='all').load_pretrained(str(path), min_loaded_ratio=1.0)
    report = VoVNet(arch=arch, ese_layout='last').load_pretrained(str(path), min_loaded_ratio=1.0)
    assert report['missing'] == [] and report['source'] == 'timm-vovnet'


def test_ultralytics_state_dict_file_is_recognised(tmp_path):
    from ultralytics.nn.tasks import DetectionModel
    ref = DetectionModel('yolov8n.yaml', verbose=False)
    path = tmp_path / 'yolov8n_weights.pth'
    torch.save(ref.state_dict(), path)
    model = YOLOv8CSPDarknet(arch='n')
    report = model.load_pretrained(str(path), min_loaded_ratio=1.0)
    assert report['source'] == 'ultralytics-yolov8' and report['missing'] == []


def test_wrong_family_file_is_refused(tmp_path):
    ref = torchvision.models.shufflenet_v2_x0_5()
    path = tmp_path / 'shufflenetv2_x0.5-f707e7126e.pth'
    torch.save(ref.state_dict(), path)
    model = VoVNet(arch='V-19-slim-dw-eSE', init_cfg=pretrained(str(path)))
    with pytest.raises(RuntimeError, match=r"VoVNet: .* is a torchvision ShuffleNetV2 checkpoint "
                                           r"\(recognised by its keys.*which converts to "
                                           r"ShuffleNetV2, not VoVNet"):
        model.init_weights()


def test_unrecognised_file_names_the_formats_tried(tmp_path):
    path = tmp_path / 'mystery.pth'
    torch.save({'encoder.layer0.weight': torch.zeros(8, 3, 3, 3),
                'encoder.layer1.weight': torch.zeros(8, 8, 3, 3)}, path)
    model = VoVNet(arch='V-19-slim-dw-eSE', init_cfg=pretrained(str(path)))
    with pytest.raises(RuntimeError, match=r'loaded 0/.*below min_loaded_ratio=0\.9.*not in a '
                                           r'format mmbackbones converts') as err:
        model.init_weights()
    for fmt in SOURCE_FORMATS:
        assert fmt.name in str(err.value)


def test_every_format_is_recognised_by_its_own_keys_only():
    """Each format's signature picks out its own source among real state dicts of all of them."""
    samples = {
        'torchvision-shufflenetv2': torchvision.models.shufflenet_v2_x0_5().state_dict(),
        'timm-vovnet': timm.create_model('ese_vovnet19b_slim_dw').state_dict(),
        'timm-resnetd': timm.create_model('resnet18d').state_dict(),
        'timm-hgnetv2': timm.create_model('hgnetv2_b0').state_dict(),
    }
    for name, state in samples.items():
        assert [f.name for f in detect_format(state)] == [name], name
    assert detect_format(VoVNet(arch='V-19-slim-dw-eSE').state_dict()) == []


def test_sha256_pin_on_a_local_file(tmp_path, vovnet_vector):
    import hashlib

    from mmbackbones.weights import IntegrityError
    path = tmp_path / 'vovnet.pth'
    torch.save(vovnet_vector['state_dict'], path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = VoVNet(arch=vovnet_vector['arch'])
    with pytest.raises(IntegrityError, match=rf'has sha256 {digest}, not the sha256 pinned'):
        model.load_pretrained(str(path), sha256='1234abcd')
    assert model.load_pretrained(str(path), sha256=digest[:8])['source'] == 'vovnet-detectron2'
    for weak in ('a', digest[:7], 'not-hex!', digest + '0'):
        with pytest.raises(ValueError, match='must be a sha256 hex digest or a prefix of at '
                                             'least 8 hex digits'):
            model.load_pretrained(str(path), sha256=weak)


def test_url_file_name_cannot_leave_the_cache(tmp_path, cache, server, vovnet_vector):
    """An encoded '../' in a URL's last path segment stays a file name inside the cache."""
    data = torch_bytes({'model': {f'backbone.bottom_up.{k}': v
                                  for k, v in vovnet_vector['state_dict'].items()}})
    evil = '/x/..%2F..%2F..%2F..%2Fescaped.pth'
    server.files[evil] = data
    model = VoVNet(arch=vovnet_vector['arch'], init_cfg=pretrained(server.url(evil)))
    model.init_weights()
    assert server.requests == [evil]
    written = [p for p in tmp_path.rglob('*escaped*')]
    assert written and all(cache.resolve() in p.resolve().parents for p in written), written
    assert not (tmp_path / 'escaped.pth').exists() and not (cache / 'escaped.pth').exists()
