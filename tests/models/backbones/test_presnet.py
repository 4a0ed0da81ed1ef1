"""PResNet: parity with timm's ResNet-D, the R18/R34 stage-1 projection, frozen norms, archs."""
import pytest
import timm
import torch
from timm.models.resnet import downsample_avg
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.converters import convert_timm_resnetd
from mmbackbones.models import PResNet
from mmbackbones.models.layers import FrozenBatchNorm2d
from tests.numerics import assert_parity, num_params, randomize

# Backbone parameter counts from the reference (official RT-DETR code and timm 1.0.31): official
# PResNet, its freeze_norm=True form, and timm's resnet*d without the classifier.
PARAMS = {18: 11_199_968, 34: 21_308_128, 50: 23_527_264, 101: 42_519_392}
PARAMS_FROZEN_R50 = 23_474_016
TIMM_PARAMS = {18: 11_195_744, 34: 21_303_904}
ODD_INPUT = (1, 3, 97, 131)
SMALL_ODD_INPUT = (1, 3, 67, 93)  # for R101
# Parity runs in NCHW, timm's layout: the comparison measures the architecture, not the float
# summation order of channels-last kernels (checked in test_conventions.py).
NCHW = dict(channels_last=False)


def timm_resnetd(depth: int, patched: bool) -> torch.nn.Module:
    """timm's resnet{depth}d; ``patched`` adds the stage-1 projection RT-DETR's R18/R34 have."""
    model = timm.create_model(f'resnet{depth}d', pretrained=False, num_classes=0)
    if patched and depth < 50:
        model.layer1[0].downsample = downsample_avg(64, 64, 1, stride=1)
    return randomize(model, seed=depth).eval()


def timm_features(model, x):
    return model.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)


@pytest.mark.parametrize('depth,shape', [(18, ODD_INPUT), (34, ODD_INPUT), (50, ODD_INPUT),
                                         (101, SMALL_ODD_INPUT)])
def test_parity_with_timm_resnetd(depth, shape):
    """R50/R101 equal resnet50d/101d; R18/R34 equal resnet18d/34d patched with the projection."""
    ref = timm_resnetd(depth, patched=True)
    if depth < 50:
        assert num_params(ref) == PARAMS[depth]
    result = convert_timm_resnetd(ref.state_dict()).check('timm')
    assert not result.unused
    model = PResNet(depth=depth, **NCHW).eval()
    model.load_state_dict(result.state_dict, strict=True)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_parity(model, x, timm_features(ref, x))


@pytest.mark.parametrize('depth', [18, 34])
def test_unpatched_timm_resnetd_gets_an_exact_identity_projection(depth):
    """timm's resnet18d/34d lack the stage-1 projection; the converter fills it with identity."""
    ref = timm_resnetd(depth, patched=False)
    assert num_params(ref) == TIMM_PARAMS[depth] == PARAMS[depth] - 4_224
    state = convert_timm_resnetd(ref.state_dict()).check('timm').state_dict
    assert torch.equal(state['stages.0.0.shortcut.conv.weight'][:, :, 0, 0], torch.eye(64))
    model = PResNet(depth=depth, **NCHW).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(*ODD_INPUT, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_parity(model, x, timm_features(ref, x))


def test_timm_features_only_keys_convert_too():
    ref = timm_resnetd(18, patched=False)
    feats = timm.create_model('resnet18d', pretrained=False, features_only=True,
                              out_indices=(1, 2, 3, 4)).eval()
    feats.load_state_dict(ref.state_dict(), strict=True)  # resnet keys are unchanged
    state = convert_timm_resnetd(feats.state_dict()).check('timm').state_dict
    model = PResNet(depth=18, **NCHW).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(*SMALL_ODD_INPUT)
    with torch.no_grad():
        assert_parity(model, x, feats(x))


def test_param_counts_and_stage_one_projection():
    with torch.device('meta'):
        for depth, count in PARAMS.items():
            model = PResNet(depth=depth)
            assert num_params(model) == count, depth
            assert PResNet.arch_depth(model.arch) == depth
            # the first block of every stage projects, stage 1 of R18/R34 (64 -> 64) included
            assert all(stage[0].shortcut is not None for stage in model.stages)
            assert all(block.shortcut is None for stage in model.stages for block in stage[1:])
            # only downsampling blocks pool before the projection
            assert [stage[0].shortcut_pool is not None for stage in model.stages] == \
                [False, True, True, True]
        assert num_params(PResNet(depth=50, freeze_norm=True)) == PARAMS_FROZEN_R50
    assert PResNet(depth=18).out_channels == (64, 128, 256, 512)
    model = PResNet(depth=50, out_indices=(1, 2, 3))
    assert (model.out_channels, model.out_strides) == ((512, 1024, 2048), (8, 16, 32))


def test_freeze_norm_turns_every_bn_into_frozen_buffers_with_the_same_keys():
    plain = randomize(PResNet(depth=18, **NCHW), seed=3).eval()
    frozen = PResNet(depth=18, freeze_norm=True, norm_eval=False, **NCHW)
    assert not any(isinstance(m, _BatchNorm) for m in frozen.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == \
        sum(isinstance(m, _BatchNorm) for m in plain.modules())
    assert list(frozen.state_dict()) == list(plain.state_dict())
    frozen.load_state_dict(plain.state_dict(), strict=True)
    # an RT-DETR frozen-BN checkpoint has no num_batches_tracked; it loads all the same
    official_style = {k: v for k, v in plain.state_dict().items()
                      if not k.endswith('num_batches_tracked')}
    frozen.load_state_dict(official_style, strict=True)

    frozen.train()
    x = torch.randn(2, 3, 67, 93, generator=torch.Generator().manual_seed(4))
    buffers = {k: v.clone() for k, v in frozen.state_dict().items() if '.bn.' in k}
    optim = torch.optim.SGD(frozen.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    outs = frozen(x)  # train mode, norm_eval=False: the frozen norms still use their statistics
    with torch.no_grad():
        assert_parity(plain, x, [o.detach() for o in outs])
    sum(o.square().mean() for o in outs).backward()
    optim.step()
    for key, value in frozen.state_dict().items():
        if key in buffers:
            assert torch.equal(value, buffers[key]), key
    assert all(p.grad is not None for p in frozen.parameters())
    assert not any('.bn.' in name for name, _ in frozen.named_parameters())


def test_freeze_norm_needs_batch_norm():
    with pytest.raises(ValueError, match=r"freeze_norm=True freezes BatchNorm layers, but norm_cfg "
                                         r"type is 'GN'; use one of BN, BN2d, SyncBN"):
        PResNet(depth=18, freeze_norm=True, norm_cfg=dict(type='GN', num_groups=8))
    with pytest.raises(TypeError, match='freeze_norm must be True or False'):
        PResNet(depth=18, freeze_norm='yes')
    frozen = PResNet(depth=18, freeze_norm=True, norm_cfg=dict(type='SyncBN'))
    assert not any(isinstance(m, _BatchNorm) for m in frozen.modules())


def test_basic_block_plugins():
    plugins = [dict(cfg=dict(type='ContextBlock', ratio=0.25), position='after_conv2',
                    stages=(False, True, True, True))]
    model = PResNet(depth=18, plugins=plugins).eval()
    assert model.stages[1][0].plugins_after_conv2 is not None
    assert model.stages[0][0].plugins_after_conv2 is None
    assert len(model(torch.randn(1, 3, 67, 93))) == 4
    with pytest.raises(ValueError, match=r"'after_conv3' needs a bottleneck block; basic blocks "
                                         r"\(depth 18/34\) offer after_conv1, after_conv2"):
        PResNet(depth=18, plugins=[dict(cfg=dict(type='ContextBlock', ratio=0.25),
                                        position='after_conv3')])


def test_arch_handling_and_errors():
    assert PResNet(arch='R34').arch == PResNet(depth=34).arch
    with pytest.raises(ValueError, match=r'depth 152 is not supported; choose one of 18, 34, 50, '
                                         r'101'):
        PResNet(depth=152)
    with pytest.raises(ValueError, match=r"arch 'R152' is unknown; choose one of R18, R34, R50, "
                                         r"R101, or pass a dict with keys block, stage_blocks"):
        PResNet(arch='R152')
    with pytest.raises(ValueError, match=r'depth=50 disagrees with arch .R101., which has depth '
                                         r'101'):
        PResNet(depth=50, arch='R101')
    with pytest.raises(ValueError, match=r"arch 'block' 'wide' is unknown; choose one of basic, "
                                         r"bottleneck"):
        PResNet(arch=dict(block='wide', stage_blocks=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"'base_channels' must be a list of 2 positive ints"):
        PResNet(arch=dict(block='basic', stage_blocks=[1, 1], base_channels=[8, 8, 8]))


def test_arch_from_state_dict():
    with torch.device('meta'):
        for depth in (18, 101):
            state = PResNet(depth=depth).state_dict()
            assert PResNet.arch_from_state_dict(state) == f'R{depth}'
        custom = dict(block='bottleneck', stage_blocks=[1, 2, 1], stem_channels=[8, 8, 16],
                      base_channels=[4, 8, 8])
        assert PResNet.arch_from_state_dict(PResNet(arch=custom, num_stages=3,
                                                    out_indices=(0, 1, 2)).state_dict()) == custom
