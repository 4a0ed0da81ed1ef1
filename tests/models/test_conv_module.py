"""FoldableConvModule: in eval mode with gradients off, conv + BN (+ act) runs as one conv.

The reference is mmcv's own ConvModule (DepthwiseSeparableConvModule) holding the same state
dict, so every check compares the folded path against the unfolded computation it replaces.
"""
import copy

import pytest
import torch
from mmcv.cnn import ConvModule as MMCVConvModule
from mmcv.cnn import DepthwiseSeparableConvModule as MMCVDepthwiseSeparableConvModule
from mmdet.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.models import PResNet, VoVNet, YOLOv8CSPDarknet
from mmbackbones.models.layers import (FoldableConvModule, FoldableDepthwiseSeparableConvModule,
                                       FrozenBatchNorm2d, bn_folding, csp, osa)
from tests.models.backbones.test_conventions import CASES
from tests.numerics import randomize


def pair(**kwargs):
    """A FoldableConvModule with random weights and BN statistics, and mmcv's with the same
    state."""
    kwargs.setdefault('norm_cfg', dict(type='BN'))
    ours = randomize(FoldableConvModule(8, 16, 3, padding=1, **kwargs), seed=1)
    ref = MMCVConvModule(8, 16, 3, padding=1, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours.eval(), ref.eval()


def folded(module: nn.Module) -> bool:
    return '_fold_cache' in module.__dict__


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


X = torch.randn(2, 8, 13, 17, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('act', [dict(type='ReLU'), dict(type='SiLU'), dict(type='Swish'), None,
                                 dict(type='LeakyReLU', negative_slope=0.1), dict(type='GELU')])
@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_folded_equals_conv_bn_act(act, layout):
    ours, ref = pair(act_cfg=act, stride=2)
    x = X
    if layout == 'channels_last':
        ours.to(memory_format=torch.channels_last)
        x = X.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out, expected = ours(x), ref(X)
    assert folded(ours)
    assert rel_diff(out, expected) < 1e-5


@pytest.mark.parametrize('kwargs', [dict(groups=8, bias=True), dict(bias=True, dilation=2,
                                                                    padding=2)])
def test_folded_grouped_biased_dilated(kwargs):
    ours = randomize(FoldableConvModule(8, 16, 3, norm_cfg=dict(type='BN'),
                                        **{'padding': 1, **kwargs}))
    ref = MMCVConvModule(8, 16, 3, norm_cfg=dict(type='BN'), **{'padding': 1, **kwargs})
    ref.load_state_dict(ours.state_dict())
    ours.eval(), ref.eval()
    with torch.inference_mode():
        assert rel_diff(ours(X), ref(X)) < 1e-5
    assert folded(ours)


def test_frozen_batch_norm_folds():
    ours, ref = pair()
    frozen = FrozenBatchNorm2d.from_batch_norm(ours.norm)
    setattr(ours, ours.norm_name, frozen)
    ours.train()  # a frozen BN has nothing to train, yet the module is in train mode: no fold
    with torch.no_grad():
        ours(X)
    assert not folded(ours)
    ours.eval()
    with torch.no_grad():
        assert rel_diff(ours(X), ref(X)) < 1e-5
    assert folded(ours)


def test_unfolded_cases_run_mmcv_forward():
    ours, ref = pair()
    # gradients on (eval-mode fine-tuning, feature attribution): the graph must reach BN
    out = ours(X)
    assert not folded(ours)
    out.sum().backward()
    assert ours.norm.weight.grad is not None and ours.conv.weight.grad is not None
    # train mode, a BN left training in an eval module, norm=False / activate=False
    with torch.no_grad():
        ours.train()
        ours(X)
        ours.eval()
        ours.norm.train()
        ours(X)
        ours.norm.eval()
        ref.load_state_dict(ours.state_dict())  # the train-mode calls moved the statistics
        assert rel_diff(ours(X, norm=False), ref(X, norm=False)) < 1e-6
        assert rel_diff(ours(X, activate=False), ref(X, activate=False)) < 1e-6
    assert not folded(ours)
    # a norm without running statistics, and a different layer order
    for kwargs in (dict(norm_cfg=dict(type='GN', num_groups=4)),
                   dict(order=('norm', 'conv', 'act'))):
        module = FoldableConvModule(8, 8, 3, padding=1, **kwargs).eval()
        with torch.no_grad():
            module(X)
        assert not folded(module)
    # switched off
    ours.fuse_bn_eval = False
    with torch.no_grad():
        ours(X)
    assert not folded(ours)


def test_trace_sees_the_unfolded_graph():
    ours, ref = pair()
    with torch.no_grad():
        traced = torch.jit.trace(ours, X, check_trace=False)
    assert not folded(ours)
    assert 'name="forward"](%bn' in str(traced.graph)  # the BN module is called
    with torch.no_grad():
        assert rel_diff(traced(X), ref(X)) < 1e-6


def assert_matches_reloaded(ours, ref):
    """``ref`` given ``ours``' current weights computes what ``ours`` (folded) computes."""
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert rel_diff(ours(X), ref(X)) < 1e-5


def test_cache_follows_weight_changes():
    """An optimizer step, load_state_dict, a swapped tensor (EMA) or .to() rebuild the fold."""
    ours, ref = pair()

    def check():
        assert_matches_reloaded(ours, ref)

    check()
    with torch.no_grad():
        ours.conv.weight.mul_(1.5)  # in place, like an optimizer step
    check()
    ours.norm.running_var.add_(0.5)
    check()
    state = copy.deepcopy(ours.state_dict())
    state['bn.bias'] += 1.0
    ours.load_state_dict(state)
    check()
    ours.conv.weight.data = ours.conv.weight.data * -1.0  # new storage (EMA parameter swap)
    check()
    ours.double()
    ref.double()
    with torch.no_grad():
        assert rel_diff(ours(X.double()), ref(X.double())) < 1e-12
    assert not any('fold' in k for k in ours.state_dict())


def test_train_drops_the_cache_and_deepcopy_is_independent():
    ours, _ = pair()
    with torch.no_grad():
        ours(X)
    clone = copy.deepcopy(ours)
    with torch.no_grad():
        clone.conv.weight.zero_()
        assert clone(X).abs().max() > 0  # bias and BN shift only: not ours' cached weights
        assert rel_diff(ours(X), pair()[1](X)) < 1e-5
    ours.train()
    assert not folded(ours)


def test_mmengine_ema_swap_before_validation():
    """mmengine's EMAHook swaps in the averaged weights through ``.data`` (no version bump),
    then the val loop calls ``model.eval()``: the fold must follow."""
    from mmengine.hooks import EMAHook
    from mmengine.model import ExponentialMovingAverage
    model = randomize(YOLOv8CSPDarknet(arch='n', norm_eval=False), seed=2).eval()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model(x)  # folds the current weights
    hook = EMAHook()
    hook.src_model = model
    hook.ema_model = ExponentialMovingAverage(model)
    with torch.no_grad():
        for p in hook.ema_model.module.parameters():
            p.mul_(0.5)  # the averaged weights differ from the live ones
    hook._swap_ema_parameters()  # what before_val_epoch does
    model.eval()  # what ValLoop.run does next
    with torch.no_grad():
        outs = model(x)
        with bn_folding(False):
            expected = model(x)
    for a, b in zip(outs, expected):
        assert rel_diff(a, b) < 1e-5


@pytest.mark.parametrize('build', [lambda **kw: YOLOv8CSPDarknet(arch='n', **kw),
                                   lambda **kw: PResNet(depth=18, freeze_norm=True, **kw)])
def test_backbone_switch(build):
    x = torch.randn(1, 3, 67, 93)
    on = randomize(build()).eval()
    off = build(fuse_bn_eval=False).eval()
    off.load_state_dict(on.state_dict())
    with torch.no_grad():
        outs_on, outs_off = on(x), off(x)
    convs_on = [m for m in on.modules() if isinstance(m, FoldableConvModule)]
    convs_off = [m for m in off.modules() if isinstance(m, FoldableConvModule)]
    assert convs_on and all(folded(m) for m in convs_on)
    assert not any(folded(m) for m in convs_off)
    for a, b in zip(outs_on, outs_off):
        assert rel_diff(a, b) < 1e-5


def test_bn_folding_context_switches_every_module_off():
    ours, ref = pair()
    with torch.no_grad(), bn_folding(False):
        exact = ours(X)
        with bn_folding(True):
            ours(X)
            assert folded(ours)
    ours.train()  # drop the cache
    ours.eval()
    with torch.no_grad(), bn_folding(False):
        assert not folded(ours) and torch.equal(exact, ref(X))


def test_frozen_stages_fold_during_training():
    """Frozen stages run in eval mode under no_grad inside a training forward: folded, and the
    trainable stages' gradients match the unfolded computation to float rounding."""
    x = torch.randn(2, 3, 67, 93, generator=torch.Generator().manual_seed(2))
    grads = []
    for enabled in (True, False):
        model = randomize(PResNet(depth=18, frozen_stages=1, norm_eval=False), seed=5).train()
        with bn_folding(enabled):
            sum(o.square().mean() for o in model(x)).backward()
        stem = [m for m in model.stem.modules() if isinstance(m, FoldableConvModule)]
        trainable = [m for m in model.stages[1].modules() if isinstance(m, FoldableConvModule)]
        assert all(folded(m) == enabled for m in stem) and not any(map(folded, trainable))
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- depthwise-separable convs
# VoVNet's dw 3x3 (plain depthwise conv straight into pointwise conv + BN + ReLU) and YOLOv8's
# use_depthwise (BN + SiLU after both), as osa.vovnet_conv3x3 and csp.yolo_conv build them.
DW_CASES = {
    'vovnet': dict(norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'), dw_norm_cfg=None,
                   dw_act_cfg=None, bias=False),
    'yolov8': dict(norm_cfg=dict(type='BN', momentum=0.03, eps=0.001), act_cfg=dict(type='SiLU')),
    'pw-only-act': dict(norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'), dw_act_cfg=None),
}


def dw_pair(case: str, stride: int = 1):
    """A FoldableDepthwiseSeparableConvModule with random weights and statistics, and mmcv's
    DepthwiseSeparableConvModule with the same state."""
    kwargs = dict(DW_CASES[case], stride=stride, padding=1)
    ours = randomize(FoldableDepthwiseSeparableConvModule(8, 16, 3, **kwargs), seed=3)
    ref = MMCVDepthwiseSeparableConvModule(8, 16, 3, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours.eval(), ref.eval()


@pytest.mark.parametrize('case', list(DW_CASES))
def test_depthwise_separable_has_mmcvs_state_and_init(case):
    """Same keys, shapes and submodule types; a seeded build initialises the same values."""
    torch.manual_seed(0)
    ours = FoldableDepthwiseSeparableConvModule(8, 16, 3, padding=1, **DW_CASES[case])
    torch.manual_seed(0)
    ref = MMCVDepthwiseSeparableConvModule(8, 16, 3, padding=1, **DW_CASES[case])
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert isinstance(ours.depthwise_conv, FoldableConvModule)
    assert isinstance(ours.pointwise_conv, FoldableConvModule)
    assert ours.depthwise_conv.conv.groups == 8 and ours.pointwise_conv.conv.groups == 1


@pytest.mark.parametrize('case', list(DW_CASES))
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_depthwise_separable_folds_both_convs(case, stride, layout):
    ours, ref = dw_pair(case, stride)
    x = X
    if layout == 'channels_last':
        ours.to(memory_format=torch.channels_last)
        x = X.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out, expected = ours(x), ref(X)
        with bn_folding(False):
            exact = ours(x)
    assert folded(ours.pointwise_conv)
    assert folded(ours.depthwise_conv) == ours.depthwise_conv.with_norm  # nothing to fold without
    assert rel_diff(out, expected) < 1e-5
    assert rel_diff(exact, expected) < 1e-6


def test_depthwise_separable_fall_backs():
    ours, ref = dw_pair('yolov8')
    out = ours(X)  # gradients on: mmcv's forward, the graph reaches both BNs
    out.sum().backward()
    assert not folded(ours.depthwise_conv) and not folded(ours.pointwise_conv)
    for conv in (ours.depthwise_conv, ours.pointwise_conv):
        assert conv.norm.weight.grad is not None and conv.conv.weight.grad is not None
    with torch.no_grad():
        ours.train()
        ours(X)  # train mode: batch statistics, no fold
        assert not folded(ours.depthwise_conv) and not folded(ours.pointwise_conv)
        ours.eval()
        ours.pointwise_conv.fuse_bn_eval = False  # switched off for one conv only
        ref.load_state_dict(ours.state_dict())  # the train-mode call moved the statistics
        assert rel_diff(ours(X), ref(X)) < 1e-5
    assert folded(ours.depthwise_conv) and not folded(ours.pointwise_conv)
    with pytest.raises(ValueError, match=r'groups=4 cannot be set; the depthwise conv has '
                                         r'groups=in_channels'):
        FoldableDepthwiseSeparableConvModule(8, 16, 3, groups=4)


def test_depthwise_separable_cache_follows_weight_changes():
    ours, ref = dw_pair('yolov8')

    def check():
        assert_matches_reloaded(ours, ref)

    check()
    with torch.no_grad():
        ours.depthwise_conv.conv.weight.mul_(-2.0)  # in place (an optimizer step)
        ours.pointwise_conv.norm.running_mean.add_(0.3)
    check()
    state = copy.deepcopy(ours.state_dict())
    state['pointwise_conv.conv.weight'] *= 0.5
    ours.load_state_dict(state)
    check()
    ours.pointwise_conv.conv.weight.data = ours.pointwise_conv.conv.weight.data + 1.0  # EMA swap
    ours.eval()  # what mmengine's val loop does after the swap
    check()
    ours.train()
    assert not folded(ours.depthwise_conv) and not folded(ours.pointwise_conv)


def _main_construction(monkeypatch) -> None:
    """Build VoVNet / YOLOv8 dw layers with mmcv's DepthwiseSeparableConvModule (never folds)."""
    monkeypatch.setattr(osa, 'FoldableDepthwiseSeparableConvModule',
                        MMCVDepthwiseSeparableConvModule)
    monkeypatch.setattr(csp, 'FoldableDepthwiseSeparableConvModule',
                        MMCVDepthwiseSeparableConvModule)


DW_BACKBONES = {
    'V-19-slim-dw-eSE': lambda **kw: VoVNet(arch='V-19-slim-dw-eSE', **kw),
    'V-19-dw-eSE': lambda **kw: VoVNet(arch='V-19-dw-eSE', **kw),
    'yolov8-n-dw': lambda **kw: YOLOv8CSPDarknet(arch='n', use_depthwise=True, **kw),
}


@pytest.mark.parametrize('name', list(DW_BACKBONES))
def test_every_conv_bn_pair_folds_in_depthwise_backbones(name, monkeypatch):
    """In eval mode under no_grad no BatchNorm runs on its own: each one is folded into its conv.
    The state dict (keys, shapes, seeded initial values) is that of the mmcv-built layers."""
    build = DW_BACKBONES[name]
    torch.manual_seed(0)
    model = build()
    with monkeypatch.context() as patch:
        _main_construction(patch)
        torch.manual_seed(0)
        unfoldable = build()
    assert any(isinstance(m, MMCVDepthwiseSeparableConvModule) for m in unfoldable.modules())
    mine, theirs = model.state_dict(), unfoldable.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)

    model = randomize(model, seed=4).eval()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    bn_calls = []
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    handles = [m.register_forward_hook(lambda mod, inp, out: bn_calls.append(mod)) for m in norms]
    try:
        with torch.no_grad():
            with bn_folding(False):
                exact = model(x)
            assert len(bn_calls) == len(norms)  # the hooks see every BN of the unfolded path
            bn_calls.clear()
            outs = model(x)
    finally:
        for handle in handles:
            handle.remove()
    assert bn_calls == []
    for a, b in zip(outs, exact):
        assert rel_diff(a, b) < 1e-5


# ---------------------------------------------------------------- NaN propagation
def nan_inputs(shape):
    """An all-NaN input and one with a NaN patch (and an Inf) in an otherwise random image."""
    partial = torch.randn(*shape, generator=torch.Generator().manual_seed(6))
    partial[..., 5:9, 7:12] = float('nan')
    partial[0, 0, -2, -3] = float('inf')
    return {'all-nan': torch.full(shape, float('nan')), 'partial-nan': partial}


# ReLU is left out: oneDNN's fused ReLU maps NaN to 0, so BaseBackbone.forward sends a
# non-finite input through the exact path (test_every_family_folded_propagates_nan_like_unfolded)
@pytest.mark.parametrize('act', [dict(type='SiLU'), None,
                                 dict(type='LeakyReLU', negative_slope=0.1)])
@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_folded_propagates_nan_like_mmcv(act, layout):
    ours, ref = pair(act_cfg=act)
    if layout == 'channels_last':
        ours.to(memory_format=torch.channels_last)
    for what, x in nan_inputs(X.shape).items():
        with torch.no_grad():
            expected = ref(x)
            out = ours(x.contiguous(memory_format=torch.channels_last)
                       if layout == 'channels_last' else x)
        assert folded(ours)
        assert expected.isnan().any(), what
        assert torch.equal(out.isnan(), expected.isnan()), what
        finite = ~expected.isnan()
        assert torch.equal(out[finite].isinf(), expected[finite].isinf()), what


@pytest.mark.parametrize('family', list(CASES))
def test_every_family_folded_propagates_nan_like_unfolded(family):
    """All-NaN and partly-NaN images: the folded forward has NaN exactly where the exact conv ->
    BN -> act forward has NaN, in every map."""
    model = randomize(MODELS.build(copy.deepcopy(CASES[family])), seed=7).eval()
    for what, x in nan_inputs((1, 3, 67, 93)).items():
        with torch.no_grad():
            outs = model(x)
            with bn_folding(False):
                exact = model(x)
        assert any(e.isnan().any() for e in exact), (family, what)
        for i, (a, b) in enumerate(zip(outs, exact)):
            assert torch.equal(a.isnan(), b.isnan()), (family, what, i)


@pytest.mark.parametrize('family', ['vovnet', 'presnet'])
def test_frozen_stages_in_training_propagate_nan(family):
    """Frozen stages fold inside a training forward (they run under no_grad): a NaN image
    still reaches the outputs as NaN, as it does with folding off."""
    cfg = dict(copy.deepcopy(CASES[family]), frozen_stages=1, norm_eval=True)
    model = randomize(MODELS.build(cfg), seed=7).train()
    for what, x in nan_inputs((1, 3, 67, 93)).items():
        outs = model(x)
        with bn_folding(False):
            exact = model(x)
        for i, (a, b) in enumerate(zip(outs, exact)):
            assert torch.equal(a.isnan(), b.isnan()), (family, what, i)
