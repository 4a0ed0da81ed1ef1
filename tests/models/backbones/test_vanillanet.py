"""VanillaNet: deploy re-parameterisation, act_learn, parameter counts, stage indices."""
import re

import pytest
import torch
from mmdet.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.models import VanillaNet
from mmbackbones.models.backbones.vanillanet import VANILLANET_ARCHS
from mmbackbones.models.layers import SeriesActivation
from tests.numerics import randomize

#: Parameter counts of the official models in deploy form, classifier included: the README's
#: "Params (M)" column, and the exact counts of the official code (shared/reference/
#: architectures.md, VanillaNet (e)).
OFFICIAL_DEPLOY_PARAMS = {
    'vanillanet_5': (15.5, 15_523_304), 'vanillanet_6': (32.5, 32_509_416),
    'vanillanet_7': (32.8, 32_797_672), 'vanillanet_8': (37.1, 37_096_424),
    'vanillanet_9': (41.4, 41_395_176), 'vanillanet_10': (45.7, 45_693_928),
    'vanillanet_11': (50.0, 49_992_680), 'vanillanet_12': (54.3, 54_291_432),
    'vanillanet_13': (58.6, 58_590_184), 'vanillanet_13_x1_5': (127.8, 127_796_200),
    'vanillanet_13_x1_5_ada_pool': (127.8, 127_796_200),
}
TINY = dict(dims=[8, 16, 24, 24, 32], strides=[2, 2, 1, 2])


def deploy_classifier_params(num_features: int, num_classes: int = 1000) -> int:
    """The official deploy-form classifier: one biased 1x1 conv (cls1 + cls2 merged)."""
    return num_features * num_classes + num_classes


def randomize_all(model: nn.Module, seed: int) -> nn.Module:
    """Random values for every parameter and BN statistic (also of a meta-built, to_empty model)."""
    return randomize(model, seed, weighted=(SeriesActivation, ))


@pytest.mark.parametrize('arch', list(VANILLANET_ARCHS))
def test_deploy_param_counts_equal_the_official_readme(arch):
    with torch.device('meta'):
        model = VanillaNet(arch=arch, deploy=True)
    params = sum(p.numel() for p in model.parameters())
    total = params + deploy_classifier_params(VANILLANET_ARCHS[arch]['dims'][-1])
    readme_millions, exact = OFFICIAL_DEPLOY_PARAMS[arch]
    assert total == exact
    assert round(total / 1e6, 1) == readme_millions


def assert_deploy_equivalent(arch, out_indices, x: torch.Tensor, seed: int = 3) -> None:
    with torch.device('meta'):  # filled in place below: no wasted init of the large archs
        model = VanillaNet(arch=arch, out_indices=out_indices)
    model = randomize_all(model.to_empty(device='cpu'), seed=seed).eval()
    with torch.no_grad():
        train_outs = model(x)
        model.switch_to_deploy()
        deploy_outs = model(x)
    assert model.deploy and not any(isinstance(m, _BatchNorm) for m in model.modules())
    for i, (a, b) in enumerate(zip(train_outs, deploy_outs)):
        scale = a.abs().max().item()
        assert scale > 1e-3, 'degenerate features would prove nothing'
        assert (a - b).abs().max().item() <= 1e-5 * scale + 1e-6, (arch, i)


@pytest.mark.parametrize('arch', list(VANILLANET_ARCHS))
def test_switch_to_deploy_equals_train_form(arch):
    """Every named arch's topology (blocks, strides, ada_pool, stem), random weights and BN
    statistics, act_learn = 1: the same features from every block.

    Widths are divided by 32: merging the full-width archs' 1x1 convs is 10^11-10^12 FLOPs
    each (minutes on the 2-core CI); the merge itself is width-agnostic and is checked at full
    width on vanillanet_5 below.
    """
    spec = dict(VANILLANET_ARCHS[arch])
    spec['dims'] = [d // 32 for d in spec['dims']]
    x = torch.randn(1, 3, 45, 37, generator=torch.Generator().manual_seed(0))
    assert_deploy_equivalent(spec, tuple(range(len(spec['strides']))), x)


def test_switch_to_deploy_equals_train_form_at_full_width():
    x = torch.randn(1, 3, 45, 37, generator=torch.Generator().manual_seed(0))
    assert_deploy_equivalent('vanillanet_5', (0, 1, 2), x)


def test_deploy_form_builds_directly_and_loads_switched_weights():
    train = randomize_all(VanillaNet(arch=dict(TINY, act_num=4)), seed=1).eval()
    train.switch_to_deploy()
    direct = VanillaNet(arch=dict(TINY, act_num=4), deploy=True).eval()
    direct.load_state_dict(train.state_dict(), strict=True)
    x = torch.randn(2, 3, 67, 93)
    for a, b in zip(direct(x), train(x)):
        assert torch.equal(a, b)
    assert direct.stem[1].weight.shape == (8, 1, 9, 9)  # act_num 4: 9x9 depthwise


def test_switch_to_deploy_refuses_unless_act_learn_is_one():
    model = randomize_all(VanillaNet(arch=TINY, act_learn=0.5), seed=2).eval()
    x = torch.randn(1, 3, 67, 93)
    with pytest.raises(RuntimeError, match=r'act_learn is 0\.5, not 1.*VanillaNetActLearnHook'):
        model.switch_to_deploy()
    assert not model.deploy and model.stem[2].conv.weight is not None  # nothing changed
    # ... and rightly so: at 0.5 the merged model would compute something else.
    reference = model(x)
    model.act_learn = 1.0
    at_one = model(x)
    model.switch_to_deploy()
    assert not torch.allclose(reference[-1], model(x)[-1], atol=1e-3)
    torch.testing.assert_close(at_one[-1], model(x)[-1], rtol=1e-4, atol=1e-5)


def test_act_learn_is_the_leaky_relu_slope():
    model = randomize_all(VanillaNet(arch=TINY, out_indices=(0, ), channels_last=False),
                          seed=5).eval()
    x = torch.randn(1, 3, 35, 39)
    block = model.stages[0]
    for slope in (0.0, 0.3, 1.0):
        model.act_learn = slope
        h = model.stem[3](model.stem[2](nn.functional.leaky_relu(model.stem[0](x), slope)))
        h = block.conv2(nn.functional.leaky_relu(block.conv1(h), slope))
        torch.testing.assert_close(model(x)[0], block.act(block.pool(h)), rtol=0, atol=0)
    assert model.act_learn == 1.0
    with pytest.raises(ValueError, match=r'act_learn=1\.5 must be a number in \[0, 1\]'):
        model.act_learn = 1.5
    model.switch_to_deploy()
    with pytest.raises(ValueError, match='cannot be set on a deploy-form model'):
        model.act_learn = 0.2


def test_switch_to_deploy_needs_batch_norm():
    model = VanillaNet(arch=TINY, norm_cfg=dict(type='GN', num_groups=4)).eval()
    with pytest.raises(TypeError, match=r'only BatchNorm layers.*got GroupNorm'):
        model.switch_to_deploy()


def test_switch_to_deploy_keeps_frozen_stages_and_channels_last():
    model = VanillaNet(arch=TINY, frozen_stages=2).train()
    model.switch_to_deploy()
    assert not model.stem.training and not model.stages[1].training and model.stages[2].training
    assert all(not p.requires_grad for p in model.stages[1].parameters())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    assert model.stages[0].conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_stage_indices_for_detection_strides():
    expected = {'vanillanet_5': None, 'vanillanet_6': None, 'vanillanet_7': (0, 1, 2, 4),
                'vanillanet_8': (0, 1, 3, 5), 'vanillanet_9': (0, 1, 4, 6),
                'vanillanet_10': (0, 1, 5, 7), 'vanillanet_11': (0, 1, 6, 8),
                'vanillanet_12': (0, 1, 7, 9), 'vanillanet_13': (0, 1, 8, 10),
                'vanillanet_13_x1_5': (0, 1, 8, 10)}
    for arch, indices in expected.items():
        if indices is None:
            with pytest.raises(ValueError, match=r'no block at stride\(s\) \[4\]'):
                VanillaNet.out_indices_for_strides(arch)
        else:
            assert VanillaNet.out_indices_for_strides(arch) == indices
    # the official RetinaNet: strides 8/16/32 of vanillanet_13
    assert VanillaNet.out_indices_for_strides('vanillanet_13', (8, 16, 32)) == (1, 8, 10)
    assert VanillaNet.out_indices_for_strides('vanillanet_5', (8, 16, 32)) == (0, 1, 2)
    assert VanillaNet.out_indices_for_strides('vanillanet_13_x1_5_ada_pool', (3, 6, 12, 24)) == \
        (0, 1, 8, 10)
    with torch.device('meta'):
        model = VanillaNet(arch='vanillanet_13')
    assert model.out_indices == (0, 1, 8, 10) and model.out_strides == (4, 8, 16, 32)
    assert model.out_channels == (512, 1024, 2048, 4096)


def test_documented_stage_table_matches_the_helper():
    """The docstring's stride table is what out_indices_for_strides computes."""
    doc = VanillaNet.__doc__
    for arch in VANILLANET_ARCHS:
        if 'ada_pool' in arch:
            continue
        row = re.search(rf'^\s*{arch}\b[^\n]*\((\d[\d, ]*)\)\s*$', doc, re.M)
        if arch == 'vanillanet_13_x1_5':
            row = re.search(r'^\s*vanillanet_13, 13_x1_5[^\n]*\((\d[\d, ]*)\)\s*$', doc, re.M)
        assert row, arch
        with torch.device('meta'):
            model = VanillaNet(arch=arch)
        assert tuple(int(v) for v in row[1].split(',')) == model.out_indices, arch


def test_measured_strides_match_out_strides():
    model = VanillaNet(arch=dict(dims=[8, 8, 16, 16, 24, 24], strides=[1, 2, 1, 2, 2]),
                       out_indices=(0, 1, 2, 3, 4)).eval()
    outs = model(torch.randn(1, 3, 128, 96))
    assert [128 // o.shape[2] for o in outs] == list(model.out_strides) == [4, 8, 8, 16, 32]


def test_ada_pool_stem_and_pools():
    arch = dict(dims=[8, 16, 24], strides=[2, 2], ada_pool=[10, 0])
    model = VanillaNet(arch=arch, out_indices=(0, 1)).eval()
    assert model.stem[0].conv.stride == (3, 3) and model.stem[0].conv.padding == (1, 1)
    assert isinstance(model.stages[0].pool, nn.AdaptiveMaxPool2d)
    assert isinstance(model.stages[1].pool, nn.MaxPool2d)
    outs = model(torch.randn(1, 3, 91, 61))
    assert outs[0].shape[-2:] == (10, 10) and outs[1].shape[-2:] == (5, 5)


def test_act_num_override_and_registry():
    with torch.device('meta'):
        model = MODELS.build(dict(type='VanillaNet', arch='vanillanet_5', act_num=4,
                                  num_stages=1, out_indices=(0, )))
    assert model.arch['act_num'] == 4 and model.stages[0].act.weight.shape[-1] == 9


@pytest.mark.parametrize('arch, match', [
    ('vanillanet_99', r"arch 'vanillanet_99' is unknown; choose one of vanillanet_5, "),
    (dict(dims=[8, 16]), r'arch dict has missing strides'),
    (dict(dims=[8, 16], strides=[3]), r"'strides' must be a list of 1 value in \(1, 2\) \(one per"),
    (dict(dims=[8, 16, 32], strides=[2]), r'i\.e\. 2 values for dims=\[8, 16, 32\]'),
    (dict(dims=[8, 16], strides=[2], act_num=0), r"'act_num' must be a positive int, got 0"),
    (dict(dims=[8, 16], strides=[2], ada_pool=[1, 2]), r"'ada_pool' must be None or a list of 1"),
])
def test_arch_errors(arch, match):
    with pytest.raises(ValueError, match=match):
        VanillaNet(arch=arch)
