"""VoVNet converters, end to end through the command-line tools."""
import os
import re

import pytest
import torch
from timm.models.vovnet import VovNet, model_cfgs

from mmbackbones.converters import ConversionError, convert_timm_vovnet, convert_vovnet_official
from mmbackbones.models import VoVNet
from mmbackbones.models.backbones.vovnet import VOVNET_ARCHS
from tests.numerics import assert_parity, max_abs_diff, parity_tolerance, randomize
from tests.paths import OFFICIAL, REPO
from tests.toolserver import ToolServer


@pytest.fixture(scope='module')
def run_tool():
    """``run_tool(name, *args)`` runs ``python tools/model_converters/<name> args`` in the repo.

    Each call is a fork of one interpreter that imported the scripts' modules once
    (tests/toolserver.py), not a new interpreter: the same script run as ``__main__``, without
    5-7 s of imports each.
    """
    tools = REPO / 'tools' / 'model_converters'
    server = ToolServer([tools / 'vovnet_official.py', tools / 'timm_vovnet.py'], cwd=str(REPO))
    yield lambda name, *args: server.run([tools / name, *args])
    server.close()


@pytest.fixture(scope='module')
def official():
    return torch.load(OFFICIAL / 'vovnet_tiny_spec.pt', weights_only=True)


def test_official_detector_checkpoint_via_cli(official, tmp_path, run_tool):
    """A detectron2 detector checkpoint: backbone under backbone.bottom_up., FPN and heads around."""
    model_state = {f'backbone.bottom_up.{k}': v for k, v in official['state_dict'].items()}
    model_state['backbone.fpn_lateral2.weight'] = torch.zeros(8, 32, 1, 1)
    model_state['roi_heads.box_predictor.cls_score.weight'] = torch.zeros(81, 16)
    src, dst = tmp_path / 'model_final.pth', tmp_path / 'converted.pth'
    torch.save({'model': model_state, '__author__': 'detectron2'}, src)
    proc = run_tool('vovnet_official.py', str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    assert 'dropped 2 non-backbone keys' in proc.stdout
    ckpt = torch.load(dst, weights_only=True)
    backbone = dict(ckpt['meta']['backbone'])
    assert backbone.pop('type') == 'VoVNet'
    model = VoVNet(**backbone, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    with torch.no_grad():
        outs = model.eval()(official['input'])
    assert max_abs_diff(outs, official['outputs']) < parity_tolerance(model, official['input'])


@pytest.mark.parametrize('name,arch,layout', [('ese_vovnet39b', 'V-39-eSE', 'last'),
                                              ('vovnet39a', 'V-39', 'all')])
def test_timm_checkpoint_via_cli(tmp_path, name, arch, layout, run_tool):
    ref = randomize(VovNet(cfg=model_cfgs[name], num_classes=10), seed=4).eval()
    src, dst = tmp_path / f'{name}.pth', tmp_path / 'ours.pth'
    torch.save(ref.state_dict(), src)
    proc = run_tool('timm_vovnet.py', str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    meta = torch.load(dst, weights_only=True)['meta']['backbone']
    assert meta['ese_layout'] == layout and meta['arch'] == dict(VOVNET_ARCHS[arch])
    model = VoVNet(arch=arch, ese_layout=layout, channels_last=False,  # reference's kernels
                   init_cfg=dict(type='Pretrained', checkpoint=str(dst), min_loaded_ratio=1.0))
    model.init_weights()
    x = torch.randn(1, 3, 75, 101)
    with torch.no_grad():
        feats, h = [], ref.stem(x)
        for stage in ref.stages:
            h = stage(h)
            feats.append(h)
        assert_parity(model.eval(), x, feats)


def test_unused_keys_are_refused_and_nothing_is_written(official, tmp_path, run_tool):
    state = dict(official['state_dict'])
    state['stage2.OSA2_1.mystery.weight'] = torch.zeros(3)
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save(state, src)
    proc = run_tool('vovnet_official.py', str(src), str(dst))
    assert proc.returncode == 1
    assert "1 checkpoint keys match no conversion rule, e.g. stage2.OSA2_1.mystery.weight" in proc.stderr
    assert not dst.exists() and os.listdir(tmp_path) == ['src.pth']
    proc = run_tool('vovnet_official.py', str(src), str(dst), '--allow-partial')
    assert proc.returncode == 0, proc.stderr and dst.exists()


def test_wrong_family_is_refused(tmp_path, run_tool):
    import torchvision
    src, dst = tmp_path / 'resnet18.pth', tmp_path / 'out.pth'
    torch.save(torchvision.models.resnet18().state_dict(), src)
    for tool in ('vovnet_official.py', 'timm_vovnet.py'):
        proc = run_tool(tool, str(src), str(dst))
        assert proc.returncode == 1 and 'match no conversion rule' in proc.stderr, proc.stderr
        assert not dst.exists()


def test_truncated_and_malicious_sources_are_refused(official, tmp_path, run_tool):
    good = tmp_path / 'good.pth'
    torch.save(official['state_dict'], good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:5000])
    proc = run_tool('vovnet_official.py', str(truncated), str(tmp_path / 'o.pth'))
    assert proc.returncode == 1 and 'cannot be read as a weights-only checkpoint' in proc.stderr

    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'w': torch.zeros(1), 'x': _Evil(str(marker))}, evil)
    proc = run_tool('vovnet_official.py', str(evil), str(tmp_path / 'o.pth'))
    assert proc.returncode == 1 and 'weights-only' in proc.stderr
    assert not marker.exists()


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


def test_eca_vovnet_gets_a_clear_error():
    state = VovNet(cfg=model_cfgs['eca_vovnet39b']).state_dict()
    with pytest.raises(ConversionError, match='ECA attention'):
        convert_timm_vovnet(state)


_OFFICIAL_PARTS = {'conv': 'conv', 'bn': 'norm', 'depthwise_conv.conv': 'dw_conv3x3',
                   'pointwise_conv.conv': 'pw_conv1x1', 'pointwise_conv.bn': 'pw_norm'}


def official_name(key: str) -> str:
    """Our key -> vovnet-detectron2's name for it, written from the official module naming."""
    m = re.fullmatch(r'stem\.(\d)\.(.+)\.(\w+)', key)
    if m:
        return f'stem.stem_{int(m[1]) + 1}/{_OFFICIAL_PARTS[m[2]]}.{m[3]}'
    m = re.fullmatch(r'stages\.(\d)\.blocks\.(\d+)\.(.+)', key)
    s, b, rest = int(m[1]) + 2, int(m[2]) + 1, m[3]
    block, name = f'stage{s}.OSA{s}_{b}', f'OSA{s}_{b}'
    if rest.startswith('ese.'):
        return f'{block}.{rest}'
    m = re.fullmatch(r'(?:layers\.(\d+)|(concat)|reduction)\.(.+)\.(\w+)', rest)
    part = f'{_OFFICIAL_PARTS[m[3]]}.{m[4]}'
    if m[1] is not None:
        return f'{block}.layers.{m[1]}.{name}_{m[1]}/{part}'
    if m[2]:
        return f'{block}.concat.{name}_concat/{part}'
    return f'{block}.conv_reduction.{name}_reduction_0/{part}'


def test_official_rules_cover_depthwise_and_reduction_keys():
    """The official test vector is not depthwise; check the dw / reduction names round-trip."""
    ours = VoVNet(arch='V-19-slim-dw-eSE').state_dict()
    official = {official_name(k): v for k, v in ours.items()}
    assert any('/dw_conv3x3' in k for k in official)
    assert any('conv_reduction' in k for k in official)
    result = convert_vovnet_official(official).check('official')
    assert list(result.state_dict) == list(ours)
    assert all(torch.equal(result.state_dict[k], v) for k, v in ours.items())
