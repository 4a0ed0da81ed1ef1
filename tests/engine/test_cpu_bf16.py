# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""bf16 autocast on the CPU (mmbackbones/engine/amp.py).

Backbone numerics: under ``torch.autocast('cpu', dtype=torch.bfloat16)`` the outputs of five
backbones stay within :func:`bf16_tolerance` of their float32 outputs, on every path the
backbones have: eval with BN folded and unfolded, channels-last, the VanillaNet deploy form, and
train mode with frozen (folded-under-grad) stages; a model with every conv 5% off fails the bound.

The bound is tests/numerics.py's form with bfloat16's unit roundoff (2**-8) in place of
float32's: ``BF16_ROUNDING_PER_LAYER * 2**-8 * depth * scale`` (depth and scale from
:func:`tests.numerics.path_stats`). Measured at 1 thread (max abs diff / (2**-8 * depth *
scale)): 0.012 (VanillaNet deploy) .. 0.090 (PResNet-18, train) across the models and paths
here with PyTorch's reference kernels (an AVX2 CPU), 0.015 .. 0.090 with oneDNN's AMX kernels (a
Xeon with AMX), so BF16_ROUNDING_PER_LAYER = 0.25 leaves 2.8x headroom; the perturbed models are 27-34
bounds off. It is below the float32 constant (8) because that one bounds a worst case of
reordered sums, while here the error is the rounding of each conv's inputs (activations and
weights) to 8 mantissa bits: independent per element, so it largely cancels in a conv's sum over
its fan-in and stays a fraction of u per layer. Train mode is checked with ``norm_eval=True``
(detection fine-tuning): batch-statistics BN on the 2x2 maps a 64x64 input leaves at stride 32
divides by the std of 2-8 values, which amplifies any rounding (measured up to 0.8 u per
layer), a property of that input, not of the model; the tiny RetinaNet run in
tests/tools/test_amp_tools.py trains BN in batch mode end to end.

On a CPU without bf16 kernels (an AVX2 machine, as this project's CI had before) autocast runs
PyTorch's reference bf16 kernels: the same rounding, only slow; the tests that go through our entry points
set MMBACKBONES_ALLOW_EMULATED_BF16=1 for that. Inputs are 64x64 to keep those kernels fast.
"""
import copy
import logging
from typing import Callable, Dict, List

import pytest
import torch
from torch import nn

from mmbackbones.engine import amp
from mmbackbones.engine.amp import (ALLOW_EMULATED_ENV, CPUBF16AmpOptimWrapper,
                                    CPUBF16UnsupportedError, cpu_autocast)
from mmbackbones.models import PResNet, ShuffleNetV2, VanillaNet, VoVNet, YOLOv8CSPDarknet
from mmbackbones.models.layers import bn_folding
from tests.numerics import max_abs_diff, path_stats, randomize

#: bfloat16 unit roundoff: 8 significand bits (7 stored), the relative error of one rounding
BF16_UNIT_ROUNDOFF = 2.0 ** -8
#: How many bf16 roundings of the activation scale each conv layer may add (see the docstring).
BF16_ROUNDING_PER_LAYER = 0.25


def bf16_tolerance(depth: int, scale: float) -> float:
    return BF16_ROUNDING_PER_LAYER * BF16_UNIT_ROUNDOFF * max(depth, 1) * scale


@pytest.fixture(autouse=True)
def allow_emulated_bf16(monkeypatch):
    monkeypatch.setenv(ALLOW_EMULATED_ENV, '1')


def _vanillanet(**kwargs) -> nn.Module:
    model = VanillaNet(arch=dict(dims=[32, 64, 128, 256], strides=[2, 2, 2]), **kwargs)
    return model


BACKBONES: Dict[str, Callable[..., nn.Module]] = {
    'vovnet19-slim-dw': lambda **kw: VoVNet(arch='V-19-slim-dw-eSE', **kw),
    'yolov8-n': lambda **kw: YOLOv8CSPDarknet(arch='n', **kw),
    'presnet18': lambda **kw: PResNet(depth=18, **kw),
    'shufflenetv2-x0.5': lambda **kw: ShuffleNetV2(widen_factor=0.5, **kw),
    'vanillanet-deploy': _vanillanet,
}
INPUT = (1, 3, 64, 64)


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)  # tensors randomize() leaves alone (e.g. VanillaNet's activation)
    model = randomize(BACKBONES[name](frozen_stages=1, norm_eval=True, **kwargs), seed=3).eval()
    if name == 'vanillanet-deploy':
        model.switch_to_deploy()
    return model


def _bf16(outs: List[torch.Tensor]) -> List[torch.Tensor]:
    # bf16 outputs prove autocast ran (float32 ones would pass any bound trivially)
    assert all(o.dtype == torch.bfloat16 for o in outs), [o.dtype for o in outs]
    return [o.float() for o in outs]


@pytest.mark.parametrize('name', list(BACKBONES))
def test_bf16_autocast_stays_within_bf16_rounding(name):
    x = torch.randn(*INPUT, generator=torch.Generator().manual_seed(1))
    model = _build(name, channels_last=False)
    depth, scale = path_stats(model, x)
    bound = bf16_tolerance(depth, scale)
    with torch.no_grad(), bn_folding(False):
        expected = list(model(x))  # float32, exact conv -> BN -> act

    lanes = copy.deepcopy(model)
    lanes_cl = _build(name, channels_last=True)
    lanes_cl.load_state_dict(model.state_dict())
    diffs = {}
    with torch.no_grad(), cpu_autocast():
        with bn_folding(False):
            diffs['eval, unfolded'] = max_abs_diff(_bf16(lanes(x)), expected)
        diffs['eval, folded'] = max_abs_diff(_bf16(lanes(x)), expected)
        diffs['eval, channels_last'] = max_abs_diff(_bf16(lanes_cl(x)), expected)

    # train mode: stem + stage 1 frozen (folded under grad), the rest trains, BN in norm_eval
    train = copy.deepcopy(model).train()
    frozen = [p for m in train.frozen_modules() for p in m.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    stats = {k: v.clone() for k, v in train.state_dict().items() if 'running' in k}
    with cpu_autocast():
        outs = train(x)
    diffs['train, frozen_stages=1'] = max_abs_diff(_bf16(list(outs)), expected)
    sum(o.float().square().mean() for o in outs).backward()
    grads = [p.grad for p in train.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)
    assert all(p.grad is None for p in frozen)
    assert all(p.dtype == torch.float32 for p in train.parameters())
    for key, value in train.state_dict().items():
        if key in stats:
            assert torch.equal(value, stats[key]), f'{key} moved under norm_eval'

    ratios = {k: round(d / (BF16_UNIT_ROUNDOFF * depth * scale), 3) for k, d in diffs.items()}
    print(f'{name}: depth {depth}, scale {scale:.3g}, bound {bound:.3g}, max abs diff '
          f'{ {k: float(f"{d:.3g}") for k, d in diffs.items()} }, per-layer u {ratios}')
    for lane, diff in diffs.items():
        assert diff < bound, f'{name} {lane}: max abs diff {diff:.3g} >= bound {bound:.3g}'


@pytest.mark.parametrize('name', ['vovnet19-slim-dw', 'yolov8-n', 'presnet18'])
def test_a_perturbed_model_fails_the_bound(name):
    x = torch.randn(*INPUT, generator=torch.Generator().manual_seed(1))
    model = _build(name, channels_last=False)
    depth, scale = path_stats(model, x)
    with torch.no_grad(), bn_folding(False):
        expected = list(model(x))
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        for module in wrong.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(1.05)  # e.g. BN folded with a var ~10% off, in every layer
        with cpu_autocast():
            diff = max_abs_diff(_bf16(list(wrong(x))), expected)
    bound = bf16_tolerance(depth, scale)
    print(f'{name}: convs x1.05: max abs diff {diff:.3g} = {diff / bound:.2f} bounds')
    assert diff > bound, f'{name}: max abs diff {diff:.3g} <= bound {bound:.3g}'


# --------------------------------------------------------------------------- optim wrapper


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 2))


def _loss(model: nn.Module) -> torch.Tensor:
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return model(x).float().square().mean()


def _wrapper(model: nn.Module, **kwargs) -> CPUBF16AmpOptimWrapper:
    from mmengine.optim import build_optim_wrapper
    kwargs.setdefault('optimizer', dict(type='SGD', lr=0.1, momentum=0.9))
    return build_optim_wrapper(model, dict(type='CPUBF16AmpOptimWrapper', **kwargs))


def test_wrapper_autocasts_the_forward_and_keeps_fp32_master_weights():
    model = _tiny_model()
    wrapper = _wrapper(model, clip_grad=dict(max_norm=1e-3))
    assert type(wrapper) is CPUBF16AmpOptimWrapper
    before = [p.detach().clone() for p in model.parameters()]
    with wrapper.optim_context(model):
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
        assert model[0](torch.zeros(1, 3, 8, 8)).dtype == torch.bfloat16
        loss = _loss(model)
    assert not torch.is_autocast_enabled('cpu')
    wrapper.update_params(loss)
    assert 'train/grad_norm' in wrapper.message_hub.log_scalars  # clip_grad ran
    for p, b in zip(model.parameters(), before):
        assert p.dtype == torch.float32 and not torch.equal(p, b)
        # clip_grad max_norm=1e-3 with lr 0.1: no parameter moves more than 1e-4
        assert (p - b).abs().max() <= 1e-4 + 1e-7


def test_accumulation_paramwise_cfg_and_resume():
    model = _tiny_model()
    wrapper = _wrapper(model, accumulative_counts=2,
                       paramwise_cfg=dict(norm_decay_mult=0.0),
                       optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.1))
    bn_ids = {id(p) for p in model[1].parameters()}
    for group in wrapper.param_groups:
        expected = 0.0 if id(group['params'][0]) in bn_ids else 0.1
        assert group['weight_decay'] == expected
    wrapper.initialize_count_status(model, 0, 4)
    start = [p.detach().clone() for p in model.parameters()]
    with wrapper.optim_context(model):
        loss = _loss(model)
    wrapper.update_params(loss)
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), start))  # accumulating
    with wrapper.optim_context(model):
        loss = _loss(model)
    wrapper.update_params(loss)
    assert all(not torch.equal(p, s) for p, s in zip(model.parameters(), start))

    state = copy.deepcopy(wrapper.state_dict())
    assert 'loss_scaler' not in state and state['state']  # momentum buffers, fp32
    assert all(v['momentum_buffer'].dtype == torch.float32 for v in state['state'].values())
    other = _wrapper(copy.deepcopy(model), accumulative_counts=2,
                     paramwise_cfg=dict(norm_decay_mult=0.0),
                     optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.1))
    other.load_state_dict(dict(state, loss_scaler={'scale': 65536.0}))  # an fp16 AMP checkpoint
    for a, b in zip(other.state_dict()['state'].values(), state['state'].values()):
        assert torch.equal(a['momentum_buffer'], b['momentum_buffer'])


@pytest.mark.parametrize('kwargs, message', [
    (dict(dtype='float16'), "dtype='float16' is not supported; CPU autocast here is bfloat16"),
    (dict(loss_scale='dynamic'), "loss_scale='dynamic' is not used: bfloat16 has the exponent"),
])
def test_wrapper_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _wrapper(_tiny_model(), **kwargs)


def test_wrapper_refuses_non_fp32_parameters():
    with pytest.raises(ValueError, match=r'a parameter is torch.bfloat16 on .cpu.; it needs '
                       'float32 parameters'):
        _wrapper(_tiny_model().bfloat16())


def test_a_cpu_without_bf16_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: False)
    monkeypatch.delenv(ALLOW_EMULATED_ENV)
    with pytest.raises(CPUBF16UnsupportedError) as info:
        _wrapper(_tiny_model())
    message = str(info.value)
    assert message.startswith('CPUBF16AmpOptimWrapper: bfloat16 autocast on the CPU needs bf16 '
                              'kernels (x86 with AVX-512 or AMX), but this CPU is ')
    assert f'{ALLOW_EMULATED_ENV}=1' in message and 'Drop CPUBF16AmpOptimWrapper' in message
    with pytest.raises(CPUBF16UnsupportedError, match=r'cpu_autocast\(\): bfloat16 autocast'):
        with cpu_autocast():
            pass
    with cpu_autocast(enabled=False):  # the off switch needs no bf16
        assert not torch.is_autocast_enabled('cpu')
    monkeypatch.setenv(ALLOW_EMULATED_ENV, 'yes')
    with pytest.raises(CPUBF16UnsupportedError, match=f"{ALLOW_EMULATED_ENV}='yes': use '1'"):
        _wrapper(_tiny_model())
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: True)
    _wrapper(_tiny_model())  # a bf16 CPU takes any value of the switch


def test_bf16_without_amx_warns_once_that_it_is_likely_slower(monkeypatch):
    """bf16 instructions without AMX tiles: allowed, with one warning per process that names
    the switch and the CPU and says float32 is likely faster; none with AMX."""
    logged = []
    monkeypatch.setattr(amp, 'print_log', lambda msg, **kw: logged.append((msg, kw['level'])))
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: True)
    monkeypatch.setattr(amp, '_WARNED_NO_AMX', [])
    monkeypatch.setattr(amp, 'cpu_has_amx', lambda: True)
    amp.check_cpu_bf16('--amp')
    assert logged == []
    monkeypatch.setattr(amp, 'cpu_has_amx', lambda: False)
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: True, raising=False)
    amp.check_cpu_bf16('--amp')
    amp.check_cpu_bf16('--amp')
    (msg, level), = logged
    assert level == logging.WARNING
    assert msg.startswith('--amp: this CPU computes bf16 with AVX512-BF16 (native bf16) and has '
                          'no AMX tiles, so bf16 autocast is likely slower than float32 here')
    assert 'Drop --amp on this machine' in msg


# --------------------------------------------------------------------------- inference


def test_cpu_autocast_of_a_detector_keeps_post_processing_fp32(tiny_config):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    cfg = Config.fromfile(tiny_config)
    torch.manual_seed(0)
    detector = MODELS.build(cfg.model).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1.0, 1.0))

    def predict():
        data = detector.data_preprocessor(dict(inputs=[x[0]], data_samples=[
            DetDataSample(metainfo=meta)]), False)
        return detector.predict(data['inputs'], data['data_samples'])[0].pred_instances

    seen = []
    detector.backbone.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    with torch.no_grad():
        expected = predict()
        with cpu_autocast(detector):
            got = predict()
    assert seen == [torch.float32, torch.bfloat16]  # the backbone ran under autocast
    assert got.bboxes.dtype == got.scores.dtype == torch.float32
    assert len(got) == len(expected) == 20
    # the patched methods are gone again
    assert 'extract_feat' not in detector.__dict__ and 'forward' not in detector.bbox_head.__dict__
    # the scores are sigmoid outputs near the focal-loss prior: bf16 moves them by a few u
    assert (got.scores.max() - expected.scores.max()).abs() < 8 * BF16_UNIT_ROUNDOFF
