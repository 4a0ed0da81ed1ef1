"""Official MogaNet checkpoints -> MogaNet: parity with the official test vector, wrappers,
dropped head keys, and refusal of partial results."""
import json
import os

import pytest
import torch

from mmbackbones.converters import ConversionError, convert_moganet_official, load_source_checkpoint
from mmbackbones.converters.moganet_official import moganet_arch_from_state_dict
from mmbackbones.models import MogaNet
from mmbackbones.models.backbones.moganet import MOGANET_ARCHS
from tests.numerics import max_abs_diff, parity_tolerance
from tests.paths import OFFICIAL, REPO
from tests.toolserver import ToolServer

TOOL = REPO / 'tools' / 'model_converters' / 'moganet_official.py'


@pytest.fixture(scope='module')
def run_tool():
    """``run_tool(*args)`` runs ``python tools/model_converters/moganet_official.py args``.

    Each call forks one interpreter that imported the scripts' modules once (tests/toolserver.py)
    instead of starting a new one: the same script run as ``__main__``, without 5-7 s of imports.
    """
    server = ToolServer([TOOL], cwd=str(REPO))
    yield lambda *args: server.run([TOOL, *args])
    server.close()


@pytest.fixture(scope='module')
def official():
    vector = torch.load(OFFICIAL / 'moganet_tiny_arch.pt', weights_only=True)
    vector['arch'] = json.loads((OFFICIAL / 'moganet_tiny_arch.json').read_text())['arch']
    return vector


def _head(arch):
    return {'head.weight': torch.zeros(1000, arch['embed_dims'][-1]),
            'head.bias': torch.zeros(1000)}


@pytest.mark.parametrize('channels_last', [False, True])
def test_official_parity(official, channels_last):
    """Every feature map of the official model (random weights, random BN statistics, odd
    input size) is reproduced through the converter."""
    values = official['state_dict']
    assert not torch.allclose(values['blocks3.1.layer_scale_1'], torch.full((1, ), 1e-5))
    result = convert_moganet_official(values).check('official')
    model = MogaNet(arch=official['arch'], channels_last=channels_last).eval()
    model.load_state_dict(result.state_dict, strict=True)
    with torch.no_grad():
        outs = model(official['input'])
    assert len(outs) == 4
    assert max_abs_diff(outs, official['outputs']) < parity_tolerance(model, official['input'])


def test_release_checkpoint_via_cli(official, tmp_path, run_tool):
    """A release file: ``state_dict`` wrapper with the classifier head, as downloaded."""
    src, dst = tmp_path / 'moganet_tiny.pth.tar', tmp_path / 'converted.pth'
    torch.save({'state_dict': {**official['state_dict'], **_head(official['arch'])}}, src)
    proc = run_tool(src, dst)
    assert proc.returncode == 0, proc.stderr
    assert 'dropped 2 non-backbone keys (e.g. head.weight)' in proc.stdout
    ckpt = torch.load(dst, weights_only=True)
    backbone = dict(ckpt['meta']['backbone'])
    assert backbone.pop('type') == 'MogaNet' and backbone['arch'] == official['arch']
    model = MogaNet(**backbone, init_cfg=dict(type='Pretrained', checkpoint=str(dst),
                                              min_loaded_ratio=1.0))
    model.init_weights()
    with torch.no_grad():
        outs = model.eval()(official['input'])
    assert max_abs_diff(outs, official['outputs']) < parity_tolerance(model, official['input'])


def test_training_and_detector_wrappers(official, tmp_path):
    """The training script's ``model`` wrapper (DDP ``module.`` keys) and an official mmdet
    detector (``backbone.`` keys plus neck and heads) give the same weights."""
    expected = convert_moganet_official(official['state_dict']).check('official').state_dict
    path = tmp_path / 'checkpoint-best.pth'
    torch.save({'model': {f'module.{k}': v for k, v in official['state_dict'].items()},
                'epoch': 299}, path)
    result = convert_moganet_official(load_source_checkpoint(str(path))).check('official')
    assert result.state_dict.keys() == expected.keys() and not result.dropped

    detector = {f'backbone.{k}': v for k, v in official['state_dict'].items()}
    detector.update({'neck.lateral_convs.0.conv.weight': torch.zeros(256, 16, 1, 1),
                     'bbox_head.retina_cls.weight': torch.zeros(720, 256, 3, 3)})
    path = tmp_path / 'retinanet.pth'
    torch.save({'state_dict': detector, 'meta': {}}, path)
    result = convert_moganet_official(load_source_checkpoint(str(path))).check('official')
    assert sorted(result.dropped) == ['bbox_head.retina_cls.weight',
                                      'neck.lateral_convs.0.conv.weight']
    assert all(torch.equal(result.state_dict[k], v) for k, v in expected.items())


def test_unused_keys_are_refused_and_nothing_is_written(official, tmp_path, run_tool):
    state = dict(official['state_dict'])
    state['blocks2.0.attn.mystery.weight'] = torch.zeros(3)
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save(state, src)
    proc = run_tool(src, dst)
    assert proc.returncode == 1
    assert '1 checkpoint keys match no conversion rule, e.g. blocks2.0.attn.mystery.weight' \
        in proc.stderr
    assert not dst.exists() and os.listdir(tmp_path) == ['src.pth']
    with pytest.raises(ConversionError, match='match no conversion rule'):
        convert_moganet_official(state).check('official MogaNet')


def test_missing_weights_are_refused(official):
    """A checkpoint that lacks part of a stage does not fill the model: refused."""
    from mmbackbones.converters import check_against_model
    state = {k: v for k, v in official['state_dict'].items() if not k.startswith('blocks3.1.')}
    result = convert_moganet_official(state).check('official')
    with pytest.raises(ConversionError, match=r'do not fill the target model exactly: missing'):
        check_against_model(result.state_dict, MogaNet(arch=official['arch']), 'official')


@pytest.mark.parametrize('arch', ['xtiny', 'small'])
def test_arch_is_read_off_the_weights(arch):
    with torch.device('meta'):
        state = MogaNet(arch=arch).state_dict()
    assert moganet_arch_from_state_dict(state) == MOGANET_ARCHS[arch]
