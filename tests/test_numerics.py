# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The parity tolerance (tests/numerics.py): holds at 1 and 2 threads, and rejects real bugs.

Measured here (max abs diff / (eps * depth * scale)): float32 rounding reaches 2.3 at most
(ese_vovnet99b, folded path, 1 thread; 1.9 at 2 threads), against ROUNDING_PER_LAYER = 8. A wrong
BN eps (1e-3 for 1e-5) in every layer is 92-636 bounds off, in a single layer 3-24 bounds, two
swapped kernels in one conv 600-4600 bounds.

Cases are a subset of the backbone parity tests: the deep ese_vovnet99b (99 convs, activations
up to ~1700), a VoVNetV2-19, torchvision's ShuffleNetV2 and timm's resnet18d / hgnetv2_b0, each
against its independent implementation, exact and folded path.
"""
import copy

import pytest
import torch
import torchvision

from mmbackbones.converters import (convert_timm_hgnetv2, convert_timm_resnetd,
                                    convert_timm_vovnet, convert_torchvision_shufflenetv2)
from mmbackbones.models import HGNetV2, PResNet, ShuffleNetV2, VoVNet
from mmbackbones.models.layers import bn_folding
from tests.models.backbones.test_hgnetv2 import timm_hgnet
from tests.models.backbones.test_presnet import timm_features, timm_resnetd
from tests.models.backbones.test_shufflenet_v2 import torchvision_features
from tests.models.backbones.test_vovnet import timm_stage_features, timm_vovnet
from tests.numerics import (FLOAT32_EPS, ROUNDING_PER_LAYER, assert_parity, max_abs_diff,
                            parity_tolerance, path_stats, randomize)

ODD_INPUT = (1, 3, 97, 131)
NCHW = dict(channels_last=False)


def _vovnet(arch: str, name: str):
    ref = randomize(timm_vovnet(name), seed=1).eval()
    model = VoVNet(arch=arch, ese_layout='last', **NCHW).eval()
    model.load_state_dict(convert_timm_vovnet(ref.state_dict()).check('timm').state_dict)
    return model, lambda x: timm_stage_features(ref, x)


def _shufflenet():
    ref = randomize(torchvision.models.shufflenet_v2_x1_0(), seed=5).eval()
    model = ShuffleNetV2(widen_factor=1.0, out_indices=(0, 1, 2, 3), **NCHW).eval()
    model.load_state_dict(
        convert_torchvision_shufflenetv2(ref.state_dict()).check('torchvision').state_dict)
    return model, lambda x: torchvision_features(ref, x)


def _presnet():
    ref = timm_resnetd(18, patched=True)
    model = PResNet(depth=18, **NCHW).eval()
    model.load_state_dict(convert_timm_resnetd(ref.state_dict()).check('timm').state_dict)
    return model, lambda x: timm_features(ref, x)


def _hgnetv2():
    ref = timm_hgnet('b0')
    model = HGNetV2(arch='b0', **NCHW).eval()
    model.load_state_dict(convert_timm_hgnetv2(ref.state_dict()).check('timm').state_dict)
    return model, lambda x: ref.forward_intermediates(x, indices=[0, 1, 2, 3],
                                                      intermediates_only=True)


CASES = {
    'ese_vovnet99b': lambda: _vovnet('V-99-eSE', 'ese_vovnet99b'),
    'ese_vovnet19b_dw': lambda: _vovnet('V-19-dw-eSE', 'ese_vovnet19b_dw'),
    'shufflenet_v2_x1_0': _shufflenet,
    'resnet18d': _presnet,
    'hgnetv2_b0': _hgnetv2,
}


@pytest.fixture(scope='module', params=list(CASES))
def case(request):
    model, reference = CASES[request.param]()
    x = torch.randn(*ODD_INPUT, generator=torch.Generator().manual_seed(2))
    return request.param, model, reference, x


@pytest.fixture
def threads():
    """Set torch's intra-op thread count for one test; restored afterwards."""
    before = torch.get_num_threads()

    def set_threads(n: int) -> None:
        torch.set_num_threads(n)
        assert torch.get_num_threads() == n

    yield set_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize('num_threads', [1, 2])
def test_parity_holds_at_one_and_two_threads(case, num_threads, threads):
    name, model, reference, x = case
    threads(num_threads)
    with torch.no_grad():
        expected = reference(x)
        assert_parity(model, x, expected)  # exact and folded path


def test_the_bound_is_small_against_the_activations(case):
    """The bound stays a rounding-sized fraction of the activations: below 1e-3 of the largest
    one for ese_vovnet99b (103 layers), below 1e-4 for the others."""
    name, model, _, x = case
    depth, scale = path_stats(model, x)
    bound = parity_tolerance(model, x)
    assert bound == pytest.approx(ROUNDING_PER_LAYER * FLOAT32_EPS * depth * scale)
    if name == 'ese_vovnet99b':
        assert depth >= 99 and scale > 100, (depth, scale)
    assert bound / scale < (1e-4 if depth < 100 else 1e-3), (name, depth, scale, bound)


def _bn_layers(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _wrong_bn_eps(model):
    for bn in _bn_layers(model):
        bn.eps = 1e-3  # the references use 1e-5


def _swapped_output_channels(model):
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels > 1]
    conv = convs[len(convs) // 2]  # one conv in the middle of the network
    with torch.no_grad():
        conv.weight[[0, 1]] = conv.weight[[1, 0]].clone()


def _one_bn_layer_eps(model):
    bns = _bn_layers(model)
    bns[len(bns) // 2].eps = 1e-3  # one layer in the middle of the network


PERTURBATIONS = {'every_bn_eps_1e-3': _wrong_bn_eps, 'one_bn_eps_1e-3': _one_bn_layer_eps,
                 'two_kernels_swapped': _swapped_output_channels}


@pytest.mark.parametrize('perturb', list(PERTURBATIONS))
def test_the_bound_rejects_a_perturbed_model(case, perturb):
    name, model, reference, x = case
    broken = copy.deepcopy(model)
    PERTURBATIONS[perturb](broken)
    with torch.no_grad():
        expected = reference(x)
        bound = parity_tolerance(model, x)
        with bn_folding(False):
            diff = max_abs_diff(broken(x), expected)
    assert diff > bound, f'{name}, {perturb}: diff {diff:.3g} vs bound {bound:.3g}'
    with pytest.raises(AssertionError, match='max abs diff'):
        with torch.no_grad():
            assert_parity(broken, x, expected)
