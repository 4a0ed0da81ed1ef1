"""RT-DETR backbone converters: official PResNet / HGNetv2 keys and timm, through the CLIs."""
import os
import re

import pytest
import timm
import torch

from mmbackbones.converters import (ConversionError, convert_rtdetr_hgnetv2, convert_rtdetr_presnet,
                                    convert_timm_hgnetv2, convert_timm_resnetd)
from mmbackbones.converters.cli import run_converter
from mmbackbones.converters.rtdetr_official import hgnetv2_factory, presnet_factory
from mmbackbones.models import HGNetV2, PResNet
from tests.numerics import assert_parity, max_abs_diff, randomize
from tests.paths import REPO
from tests.toolserver import ToolServer

# Our key -> the official key, from the module names of RT-DETR's presnet.py: the stem is
# ``conv1.conv1_{1,2,3}`` (ConvNormLayer: ``conv`` / ``norm``), blocks are
# ``res_layers.i.blocks.j.branch2{a,b,c}``; the projection is ``short`` (a ConvNormLayer) when
# the block keeps the resolution, and ``short.conv`` after ``short.pool`` when it downsamples.
PRESNET_TO_OFFICIAL = [
    (r'stem\.(\d)\.conv\.', lambda m: f'conv1.conv1_{int(m[1]) + 1}.conv.'),
    (r'stem\.(\d)\.bn\.', lambda m: f'conv1.conv1_{int(m[1]) + 1}.norm.'),
    (r'stages\.(\d+)\.(\d+)\.conv([123])\.conv\.',
     lambda m: f'res_layers.{m[1]}.blocks.{m[2]}.branch2{"abc"[int(m[3]) - 1]}.conv.'),
    (r'stages\.(\d+)\.(\d+)\.conv([123])\.bn\.',
     lambda m: f'res_layers.{m[1]}.blocks.{m[2]}.branch2{"abc"[int(m[3]) - 1]}.norm.'),
    (r'stages\.0\.(\d+)\.shortcut\.conv\.', r'res_layers.0.blocks.\1.short.conv.'),
    (r'stages\.0\.(\d+)\.shortcut\.bn\.', r'res_layers.0.blocks.\1.short.norm.'),
    (r'stages\.([1-9])\.(\d+)\.shortcut\.conv\.', r'res_layers.\1.blocks.\2.short.conv.conv.'),
    (r'stages\.([1-9])\.(\d+)\.shortcut\.bn\.', r'res_layers.\1.blocks.\2.short.conv.norm.'),
]
# From RT-DETR's hgnetv2.py: StemBlock's stem1, stem2a, stem2b, stem3, stem4 (ConvBNAct: conv,
# bn, lab; stem2a/b wrap their conv in Sequential(ZeroPad2d, Conv2d), hence ``conv.1``). The
# stages (downsample, blocks.j.layers.k, aggregation_{squeeze,excitation}_conv) share our names.
HGNETV2_TO_OFFICIAL = [
    (r'stem\.0\.', 'stem.stem1.'),
    (r'stem\.1\.conv_([ab])\.conv\.', lambda m: f'stem.stem2{m[1]}.conv.1.'),
    (r'stem\.1\.conv_([ab])\.', lambda m: f'stem.stem2{m[1]}.'),
    (r'stem\.2\.', 'stem.stem3.'),
    (r'stem\.3\.', 'stem.stem4.'),
    (r'stages\.', 'stages.'),
]
TINY_HGNET = dict(stem_channels=[8, 8], stage_mid_channels=[8, 8, 12, 12],
                  stage_out_channels=[16, 24, 32, 40], stage_blocks=[1, 2, 2, 1], layer_num=2,
                  use_lab=True)
X = torch.randn(1, 3, 67, 93, generator=torch.Generator().manual_seed(0))


def to_official(state, table):
    """Our state dict in official key names; RT-DETR's frozen BN keeps no num_batches_tracked."""
    out = {}
    for key, value in state.items():
        if key.endswith('num_batches_tracked'):
            continue
        for pattern, repl in table:
            m = re.match(pattern, key)
            if m:
                new = repl(m) if callable(repl) else m.expand(repl)
                out[new + key[m.end():]] = value
                break
        else:
            raise AssertionError(f'no official name for {key}')
    return out


@pytest.fixture(scope='module')
def run_tool():
    """``run_tool(name, *args)`` runs ``python tools/model_converters/<name> args`` in the repo.

    Each call forks one interpreter that imported the scripts' modules once (tests/toolserver.py)
    instead of starting a new one: the same script run as ``__main__``, without 5-7 s of imports.
    """
    tools = REPO / 'tools' / 'model_converters'
    server = ToolServer([tools / 'rtdetr_presnet.py', tools / 'timm_hgnetv2.py'], cwd=str(REPO))
    yield lambda name, *args: server.run([tools / name, *args])
    server.close()


# Two tools run as scripts above; the rest in-process (a script only wires these together).
CONVERTERS = {
    'rtdetr_presnet.py': dict(source='RT-DETR PResNet', convert=convert_rtdetr_presnet,
                              factory=presnet_factory),
    'rtdetr_hgnetv2.py': dict(source='RT-DETR HGNetv2', convert=convert_rtdetr_hgnetv2,
                              factory=hgnetv2_factory),
    'timm_resnetd.py': dict(source='timm ResNet-D', convert=convert_timm_resnetd,
                            factory=presnet_factory),
}


def run_in_process(name: str, *args: str) -> int:
    return run_converter(list(args), description=name, **CONVERTERS[name])


@pytest.mark.parametrize('depth', [18, 50])
def test_official_presnet_keys_round_trip(depth):
    ours = randomize(PResNet(depth=depth), seed=1)
    official = to_official(ours.state_dict(), PRESNET_TO_OFFICIAL)
    # the official module tree: 3 stem units, and a projection in the first block of each stage
    assert {k.rsplit('.', 2)[0] for k in official if k.startswith('conv1.')} == {
        'conv1.conv1_1', 'conv1.conv1_2', 'conv1.conv1_3'}
    assert 'res_layers.0.blocks.0.short.conv.weight' in official
    assert 'res_layers.1.blocks.0.short.conv.conv.weight' in official
    result = convert_rtdetr_presnet(official).check('official')
    assert not result.unused and not result.dropped
    assert set(result.state_dict) == set(ours.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(result.state_dict[key], value), key


@pytest.mark.parametrize('arch', ['L', TINY_HGNET])
def test_official_hgnetv2_keys_round_trip(arch):
    ours = HGNetV2(arch=arch)
    official = to_official(ours.state_dict(), HGNETV2_TO_OFFICIAL)
    assert 'stem.stem2a.conv.1.weight' in official and 'stem.stem4.bn.running_var' in official
    assert 'stages.2.blocks.1.layers.0.conv2.conv.weight' in official  # light block
    result = convert_rtdetr_hgnetv2(official).check('official')
    assert not result.unused
    assert set(result.state_dict) == set(ours.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(result.state_dict[key], value), key


def test_official_presnet_detector_checkpoint_via_cli(tmp_path, run_tool):
    source = randomize(PResNet(depth=18, channels_last=False), seed=2).eval()
    model_state = {f'backbone.{k}': v
                   for k, v in to_official(source.state_dict(), PRESNET_TO_OFFICIAL).items()}
    model_state['decoder.dec_bbox_head.0.layers.0.weight'] = torch.zeros(4, 4)
    model_state['encoder.input_proj.0.conv.weight'] = torch.zeros(4, 4, 1, 1)
    src, dst = tmp_path / 'rtdetr_r18vd.pth', tmp_path / 'presnet18.pth'
    torch.save({'model': model_state, 'last_epoch': 71}, src)
    proc = run_tool('rtdetr_presnet.py', str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    assert 'dropped 2 non-backbone keys' in proc.stdout
    backbone = dict(torch.load(dst, weights_only=True)['meta']['backbone'])
    assert backbone == dict(type='PResNet', arch='R18')
    model = PResNet(arch='R18', freeze_norm=True, channels_last=False,
                    init_cfg=dict(type='Pretrained', checkpoint=str(dst), min_loaded_ratio=1.0))
    model.init_weights()
    with torch.no_grad():
        assert max_abs_diff(model.eval()(X), source(X)) == 0


def test_official_hgnetv2_checkpoint_via_cli(tmp_path):
    source = HGNetV2(arch=TINY_HGNET, channels_last=False).eval()
    src, dst = tmp_path / 'hgnet.pth', tmp_path / 'ours.pth'
    torch.save(to_official(source.state_dict(), HGNETV2_TO_OFFICIAL), src)
    assert run_in_process('rtdetr_hgnetv2.py', str(src), str(dst)) == 0
    backbone = torch.load(dst, weights_only=True)['meta']['backbone']
    assert backbone['arch'] == dict(HGNetV2.resolve_arch(TINY_HGNET))
    model = HGNetV2(arch=backbone['arch'], channels_last=False,
                    init_cfg=dict(type='Pretrained', checkpoint=str(dst), min_loaded_ratio=1.0))
    model.init_weights()
    with torch.no_grad():
        assert max_abs_diff(model.eval()(X), source(X)) == 0


def test_timm_resnet18d_via_cli(tmp_path, capsys):
    """timm's resnet18d (no stage-1 projection) becomes an R18 that computes the same."""
    ref = randomize(timm.create_model('resnet18d', pretrained=False, num_classes=10), seed=3)
    src, dst = tmp_path / 'resnet18d.pth', tmp_path / 'ours.pth'
    torch.save(ref.state_dict(), src)
    assert run_in_process('timm_resnetd.py', str(src), str(dst)) == 0
    assert 'dropped 2 non-backbone keys (e.g. fc.weight)' in capsys.readouterr().out
    assert torch.load(dst, weights_only=True)['meta']['backbone']['arch'] == 'R18'
    model = PResNet(depth=18, channels_last=False,
                    init_cfg=dict(type='Pretrained', checkpoint=str(dst), min_loaded_ratio=1.0))
    model.init_weights()
    with torch.no_grad():
        ref_outs = ref.eval().forward_intermediates(X, indices=[1, 2, 3, 4],
                                                    intermediates_only=True)
        assert_parity(model.eval(), X, ref_outs)


def test_timm_hgnetv2_via_cli(tmp_path, run_tool):
    ref = randomize(timm.create_model('hgnetv2_b0', pretrained=False), seed=4)
    src, dst = tmp_path / 'hgnetv2_b0.pth', tmp_path / 'ours.pth'
    torch.save(ref.state_dict(), src)
    proc = run_tool('timm_hgnetv2.py', str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    assert torch.load(dst, weights_only=True)['meta']['backbone']['arch'] == 'b0'
    model = HGNetV2(arch='b0', channels_last=False,
                    init_cfg=dict(type='Pretrained', checkpoint=str(dst), min_loaded_ratio=1.0))
    model.init_weights()
    with torch.no_grad():
        ref_outs = ref.eval().forward_intermediates(X, indices=[0, 1, 2, 3],
                                                    intermediates_only=True)
        assert_parity(model.eval(), X, ref_outs)


def test_unused_keys_are_refused_and_nothing_is_written(tmp_path, capsys):
    state = to_official(PResNet(depth=18).state_dict(), PRESNET_TO_OFFICIAL)
    state['res_layers.0.blocks.0.mystery.weight'] = torch.zeros(3)
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save(state, src)
    assert run_in_process('rtdetr_presnet.py', str(src), str(dst)) == 1
    assert ('1 checkpoint keys match no conversion rule, e.g. '
            'res_layers.0.blocks.0.mystery.weight') in capsys.readouterr().err
    assert not dst.exists() and os.listdir(tmp_path) == ['src.pth']


def test_wrong_family_is_refused():
    import torchvision
    plain_resnet = torchvision.models.resnet18().state_dict()  # 7x7 stem, no avg-down
    for convert in (convert_timm_resnetd, convert_rtdetr_presnet, convert_timm_hgnetv2,
                    convert_rtdetr_hgnetv2):
        with pytest.raises(ConversionError, match='match no conversion rule'):
            convert(plain_resnet).check('x')
    resnet50c = timm.create_model('resnet50c', pretrained=False).state_dict()  # no avg_down
    with pytest.raises(ConversionError, match=r'downsample\.0\.weight'):
        convert_timm_resnetd(resnet50c).check('timm')
    hgnet_v1 = timm.create_model('hgnet_tiny', pretrained=False).state_dict()  # PP-HGNet (v1)
    with pytest.raises(ConversionError, match='match no conversion rule'):
        convert_timm_hgnetv2(hgnet_v1).check('timm')
