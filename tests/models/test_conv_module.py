"""The folding ConvModule: in eval mode with gradients off, conv + BN (+ act) runs as one conv.

The reference is mmcv's own ConvModule holding the same state dict, so every check compares
the folded path against the unfolded computation it replaces.
"""
import copy

import pytest
import torch
from mmcv.cnn import ConvModule as MMCVConvModule
from torch import nn

from mmbackbones.models import PResNet, YOLOv8CSPDarknet
from mmbackbones.models.layers import ConvModule, FrozenBatchNorm2d, bn_folding
from tests.numerics import randomize


def pair(**kwargs):
    """Our ConvModule with random weights and BN statistics, and mmcv's with the same state."""
    kwargs.setdefault('norm_cfg', dict(type='BN'))
    ours = randomize(ConvModule(8, 16, 3, padding=1, **kwargs), seed=1)
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
    ours = randomize(ConvModule(8, 16, 3, norm_cfg=dict(type='BN'), **{'padding': 1, **kwargs}))
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
        module = ConvModule(8, 8, 3, padding=1, **kwargs).eval()
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


def test_cache_follows_weight_changes():
    """An optimizer step, load_state_dict, a swapped tensor (EMA) or .to() rebuild the fold."""
    ours, ref = pair()

    def check():
        ref.load_state_dict(ours.state_dict())
        with torch.no_grad():
            assert rel_diff(ours(X), ref(X)) < 1e-5

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
    convs_on = [m for m in on.modules() if isinstance(m, ConvModule)]
    convs_off = [m for m in off.modules() if isinstance(m, ConvModule)]
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
        stem = [m for m in model.stem.modules() if isinstance(m, ConvModule)]
        trainable = [m for m in model.stages[1].modules() if isinstance(m, ConvModule)]
        assert all(folded(m) == enabled for m in stem) and not any(map(folded, trainable))
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-5)
