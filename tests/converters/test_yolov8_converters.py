"""YOLOv8 converters: ultralytics .pt files (read without running their code) and mmyolo."""
import copy
import os
import re

import pytest
import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import strip_optimizer

from mmbackbones.converters import (ConversionError, convert_mmyolo_yolov8,
                                    convert_ultralytics_yolov8, load_ultralytics_checkpoint)
from mmbackbones.converters.ultralytics_yolov8 import yolov8_factory
from mmbackbones.models import YOLOv8CSPDarknet
from tests.models.backbones.test_yolov8_csp_darknet import ultralytics_p3_p4_p5
from tests.numerics import assert_parity, randomize
from tests.paths import REPO
from tests.toolserver import ToolServer

X = torch.randn(1, 3, 67, 93, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope='module')
def run_tool():
    """``run_tool(name, *args)`` runs ``python tools/model_converters/<name> args`` in the repo.

    Each call forks one interpreter that imported the scripts' modules once (tests/toolserver.py)
    instead of starting a new one: the same script run as ``__main__``, without 5-7 s of imports.
    """
    tools = REPO / 'tools' / 'model_converters'
    server = ToolServer([tools / 'ultralytics_yolov8.py', tools / 'mmyolo_yolov8.py'],
                        cwd=str(REPO))
    yield lambda name, *args: server.run([tools / name, *args])
    server.close()


@pytest.fixture(scope='module')
def detector():
    return randomize(DetectionModel('yolov8n.yaml', verbose=False), seed=11).eval()


@pytest.fixture(scope='module')
def ultralytics_files(detector, tmp_path_factory):
    """A checkpoint as ultralytics' trainer writes it (``last.pt``: the fp16 EMA model pickled
    whole) and as ultralytics' own ``strip_optimizer`` finalises it (``best.pt``: the model
    under ``model``, as released weights are)."""
    root = tmp_path_factory.mktemp('ultralytics')
    last, best = root / 'last.pt', root / 'best.pt'
    torch.save({'epoch': 2, 'best_fitness': 0.1, 'model': None,
                'ema': copy.deepcopy(detector).half(), 'updates': 30, 'optimizer': None,
                'train_args': {'model': 'yolov8n.yaml', 'imgsz': 640, 'epochs': 3},
                'date': '2026-01-01T00:00:00', 'version': ultralytics.__version__}, last)
    strip_optimizer(str(last), str(best))
    return last, best


def test_released_pt_pickles_the_model_and_is_read_without_unpickling_it(detector,
                                                                        ultralytics_files):
    last, best = ultralytics_files
    with pytest.raises(Exception):  # what makes a plain weights-only reader fail
        torch.load(best, weights_only=True)
    reference = {k: v.half().float() if v.is_floating_point() else v
                 for k, v in detector.state_dict().items()}
    for path in (last, best):
        state = load_ultralytics_checkpoint(str(path))
        assert state.keys() == reference.keys()
        for key, value in reference.items():
            assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def test_released_pt_converts_with_parity_via_cli(detector, ultralytics_files, tmp_path, run_tool):
    _, best = ultralytics_files
    dst = tmp_path / 'yolov8n_backbone.pth'
    proc = run_tool('ultralytics_yolov8.py', str(best), str(dst))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r'converted 162 tensors', proc.stdout)
    assert "backbone=dict(type='YOLOv8CSPDarknet', arch='n', stem_type='conv'" in proc.stdout
    ckpt = torch.load(dst, weights_only=True)
    model = YOLOv8CSPDarknet(arch='n').eval()
    model.load_state_dict(ckpt['state_dict'], strict=True)
    reference = copy.deepcopy(detector).half().float().eval()  # the weights the file holds
    with torch.no_grad():
        assert_parity(model, X, ultralytics_p3_p4_p5(reference, X))


def test_plain_state_dict_is_accepted(detector, tmp_path):
    path = tmp_path / 'state.pt'
    torch.save({'model': detector.state_dict()}, path)
    state = load_ultralytics_checkpoint(str(path))
    result = convert_ultralytics_yolov8(state).check('ultralytics')
    model, cfg = yolov8_factory(result.state_dict)
    assert cfg == dict(type='YOLOv8CSPDarknet', arch='n', stem_type='conv')
    model.load_state_dict(result.state_dict, strict=True)
    with torch.no_grad():
        assert_parity(model.eval(), X, ultralytics_p3_p4_p5(detector, X))


class _RunsCode:
    """Pickles as a call to os.system: a full unpickle would run the command."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


def test_code_named_in_the_pickle_is_never_run(detector, tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pt'
    torch.save({'model': copy.deepcopy(detector).half(), 'hook': _RunsCode(str(marker)),
                'train_args': {}}, path)
    state = load_ultralytics_checkpoint(str(path))
    assert not marker.exists()
    assert torch.equal(state['model.0.conv.weight'], detector.model[0].conv.weight.half().float())


class _TaggedTensor(torch.Tensor):
    """A tensor subclass: pickled through a rebuild function the restricted reader refuses."""


def test_unreadable_without_trust_asks_for_trust_pickle(detector, tmp_path, run_tool):
    model = copy.deepcopy(detector)
    model.model[22].register_buffer('tag', torch.zeros(2).as_subclass(_TaggedTensor))
    path = tmp_path / 'tagged.pt'
    torch.save({'model': model, 'ema': None}, path)
    with pytest.raises(ConversionError, match=r'--trust-pickle \(trust_pickle=True\) only for a '
                                              r'file from a source you trust'):
        load_ultralytics_checkpoint(str(path))
    proc = run_tool('ultralytics_yolov8.py', str(path), str(tmp_path / 'out.pth'))
    assert proc.returncode == 1 and '--trust-pickle' in proc.stderr
    assert not (tmp_path / 'out.pth').exists()
    state = load_ultralytics_checkpoint(str(path), trust_pickle=True)
    result = convert_ultralytics_yolov8(state).check('ultralytics')
    assert 'model.22.tag' in result.dropped


def test_non_yolov8_and_partial_checkpoints_are_refused(detector):
    state = detector.state_dict()
    state['model.4.extra.weight'] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r'1 checkpoint keys match no conversion rule, e\.g\. '
                                              r'model\.4\.extra\.weight'):
        convert_ultralytics_yolov8(state).check('ultralytics')
    layers = {k: v for k, v in detector.state_dict().items() if not k.startswith('model.8.')}
    converted = convert_ultralytics_yolov8(layers).check('ultralytics').state_dict
    with pytest.raises(ValueError, match=r'C2f repeats \[1, 2, 2, 0\] match none of the scales '
                                         r'n, s, m, l, x'):
        yolov8_factory(converted)


# mmyolo's names for ultralytics' layers (mmyolo's YOLOv8CSPDarknet and its converter, read as
# facts): layer -> (module, names of the C2f / SPPF convs)
MMYOLO_LAYERS = {'0': 'backbone.stem', '1': 'backbone.stage1.0', '2': 'backbone.stage1.1',
                 '3': 'backbone.stage2.0', '4': 'backbone.stage2.1', '5': 'backbone.stage3.0',
                 '6': 'backbone.stage3.1', '7': 'backbone.stage4.0', '8': 'backbone.stage4.1',
                 '9': 'backbone.stage4.2'}
MMYOLO_C2F = {'cv1': 'main_conv', 'cv2': 'final_conv'}
MMYOLO_SPPF = {'cv1': 'conv1', 'cv2': 'conv2'}


def to_mmyolo_key(key: str) -> str:
    _, layer, rest = key.split('.', 2)
    if int(layer) >= 10:  # neck and head, under mmyolo's names for them
        return f'{"neck" if int(layer) < 22 else "bbox_head"}.layer{layer}.{rest}'
    if rest.startswith('m.'):  # m.<i>.cv<j> -> blocks.<i>.conv<j>
        _, i, cv, tail = rest.split('.', 3)
        rest = f'blocks.{i}.conv{cv[-1]}.{tail}'
    else:
        head, tail = rest.split('.', 1)
        names = MMYOLO_SPPF if layer == '9' else MMYOLO_C2F
        rest = f'{names.get(head, head)}.{tail}'
    return f'{MMYOLO_LAYERS[layer]}.{rest}'


def test_mmyolo_checkpoint_via_cli(tmp_path, run_tool):
    detector = randomize(DetectionModel('yolov8s.yaml', verbose=False), seed=12).eval()
    mmyolo_state = {to_mmyolo_key(k): v for k, v in detector.state_dict().items()}
    assert 'backbone.stage4.1.blocks.0.conv2.bn.running_var' in mmyolo_state
    assert 'backbone.stage4.2.conv1.conv.weight' in mmyolo_state
    src, dst = tmp_path / 'mmyolo.pth', tmp_path / 'ours.pth'
    torch.save({'state_dict': mmyolo_state, 'meta': {'mmyolo_version': '0.6.0'}}, src)
    proc = run_tool('mmyolo_yolov8.py', str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    assert "arch='s'" in proc.stdout
    model = YOLOv8CSPDarknet(arch='s').eval()
    model.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    with torch.no_grad():
        assert_parity(model, X, ultralytics_p3_p4_p5(detector, X))

    # a bare backbone state dict (mmyolo's YOLOv8CSPDarknet alone) converts the same way
    bare = {k[len('backbone.'):]: v for k, v in mmyolo_state.items() if k.startswith('backbone.')}
    assert convert_mmyolo_yolov8(bare).check('mmyolo').state_dict.keys() == \
        model.state_dict().keys()
