"""Every registered mmbackbones backbone on every path: sizes, channels, layouts, precision, export.

The families are read from mmdet's ``MODELS`` registry (every class defined in the mmbackbones
package), so a new backbone enters this matrix by being registered. Each takes its tiny 4-stage
config from ``CASES`` in ``tests/models/backbones/test_conventions.py``; a registered family
without one fails here, asking for it. Named variants (``arch_settings``) get the cheap checks
only: built on the ``meta`` device, their outputs' channels and strides against
``out_channels`` / ``out_strides``, their parameter counts.

Choices and tolerances, per check:

=========================  =========================================================================
check                      what is asserted
=========================  =========================================================================
odd input 97x131           every map has ``out_channels`` channels and ``size / stride`` (+-1)
input 16x16                runs with finite outputs, or raises ``ValueError`` naming the minimum
                           size (the total stride, see ``BaseBackbone._explain_forward_error``), and
                           runs at exactly that size
batch 1 (eval)             equal to the same image inside a batch of 2 (1e-5)
batch 1, train mode,       forward and backward run (53x75), BN statistics move; at 16x16 (a 1x1
``norm_eval=False``        map) it runs or raises ``ValueError`` saying BN got one value per channel
``in_channels`` 1 and 4    builds and runs; a 3-channel checkpoint loads with the input conv
                           adapted (1: summed over RGB, so a grey image gives what the RGB model
                           gives on it repeated 3 times; 4: RGB repeated and scaled by 3/4)
channels_last input        same outputs as contiguous input (1e-5 abs + 1e-4 rel: kernel order)
bf16 autocast (CPU)        no NaN/Inf; ``max|bf16 - fp32| <= BF16_REL_TOL * max|fp32|`` per map,
                           on the tiny configs and on the official test vectors
``attn_force_fp32``        families with the option (MogaNet): under bf16 autocast the gating
                           projection of every attention block runs in fp32 (none without it); in
                           fp32 it is the same function, bit for bit
ONNX (opset 17)            TorchScript-based exporter, onnxruntime CPU, max abs diff < 1e-4; both
                           forms of families with ``switch_to_deploy`` (VanillaNet)
``torch.jit.trace``        traced module equals eager on a new input (1e-6)
``torch.compile``          inductor, eval, equals eager (1e-4); one compile per family
determinism                ``use_deterministic_algorithms(True)``: two seeded train-mode forward and
                           backward passes give bitwise-equal outputs and gradients
state dict round trip      mmengine ``save_checkpoint`` / ``load_checkpoint`` (our weights-only
                           loader) give bitwise-equal outputs
=========================  =========================================================================

The dynamo-based ONNX exporter is not used: for opset 17 it exports opset 18 and down-converts,
which produced an invalid ``Split`` node (ShuffleNetV2) under onnxruntime 1.32.

``torch.compile`` uses the real default backend (inductor) once per family on its tiny config.
Inductor generates and compiles C++ kernels on the first run: 20-60 s per family on 2 idle cores
(2-3 min each on the shared, overloaded test machine), and it keeps them in its on-disk cache
(``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_$USER``), so later runs take 4-10 s per
family (45 s of CPU for all eight families, measured). A changed backbone recompiles only its
own graph.
"""
import copy
import inspect
import json
import re
import warnings
from typing import List, Sequence, Tuple

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmbackbones  # noqa: F401
from mmbackbones.models import get_feature_info, registered_backbones
from mmbackbones.models.backbones.base import BaseBackbone
from tests.models.backbones.test_conventions import CASES
from tests.paths import OFFICIAL

init_default_scope('mmdet')

#: bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op). Measured on the tiny configs and
#: the official vectors: max |bf16 - fp32| is 0.2-1.2% of max |fp32| per map; 3% leaves margin.
BF16_REL_TOL = 3e-2
ODD = (97, 131)
SMALL = (53, 75)  # for backward passes: odd too, and 2.5x cheaper (dilated depthwise backward)


FAMILIES = registered_backbones()


def tiny_config(family: str) -> dict:
    for case in CASES.values():
        if case['type'] == family:
            return copy.deepcopy(case)
    pytest.fail(f'{family} is registered but has no tiny config: add a 4-stage entry with '
                f"type='{family}' to CASES in tests/models/backbones/test_conventions.py (it joins "
                f'the conventions contract and this matrix).')


@pytest.fixture(params=list(FAMILIES), ids=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture
def cfg(family) -> dict:
    return tiny_config(family)


def accepts(family: str, argument: str) -> bool:
    return argument in inspect.signature(FAMILIES[family]).parameters


def build(cfg: dict, seed: int = 0, **kwargs) -> BaseBackbone:
    """The tiny config with random weights, random BN statistics and non-trivial scales."""
    cfg = dict(copy.deepcopy(cfg), **kwargs)
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # conv weights keep torch's default init: MogaNet's gating multiplies
        for module in model.modules():  # two branches, and fan-in-scaled weights blow it up
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.reset_parameters()
    model = randomize_batch_norm(model, seed)
    covered = (_BatchNorm, nn.Conv2d, nn.Linear)
    with torch.no_grad():  # layer scales start at 1e-5 and would hide whole branches
        for module in model.modules():
            if not isinstance(module, covered):
                for param in module.parameters(recurse=False):
                    if param.abs().max() < 1e-3:
                        param.copy_(torch.rand(param.shape, generator=gen) * 0.2 + 0.1)
    return model.eval()


def randomize_batch_norm(model: nn.Module, seed: int) -> nn.Module:
    """Random BN affine parameters and running statistics (convs untouched)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.affine and module.track_running_stats:
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
    return model


def image(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def run(model: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    with torch.no_grad():
        return [o.float() for o in model(x)]


def assert_equal_outputs(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
                         atol: float, rtol: float = 0.0, what: str = '') -> None:
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, f'{what} map {i}: {tuple(a.shape)} vs {tuple(e.shape)}'
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol, msg=lambda m: f'{what} map {i}: {m}')


def assert_shapes(model: BaseBackbone, outs: Sequence[torch.Tensor], batch: int,
                  size: Tuple[int, int]) -> None:
    assert len(outs) == len(model.out_channels)
    for out, channels, stride in zip(outs, model.out_channels, model.out_strides):
        assert out.shape[:2] == (batch, channels)
        for got, side in zip(out.shape[-2:], size):
            assert abs(got - side / stride) < 1, (tuple(out.shape), size, stride)


# ------------------------------------------------------------------ every named arch (meta)


#: families that have no table of named variants, and why
NO_NAMED_ARCHS = {'TimmBackbone': 'wraps any timm model, chosen by model_name'}


def test_named_archs_on_meta(family):
    cls = FAMILIES[family]
    if family in NO_NAMED_ARCHS:
        assert not cls.arch_settings, f'{family} has named variants: drop it from NO_NAMED_ARCHS'
        return
    assert cls.arch_settings, (f'{family} has no named variants in arch_settings; add them, or '
                               f'list it in NO_NAMED_ARCHS with the reason')
    for arch in cls.arch_settings:
        with torch.device('meta'):
            model = cls(arch=arch).eval()
            outs = model(torch.empty(1, 3, 224, 224))
        assert sum(p.numel() for p in model.parameters()) > 0, arch
        assert len(outs) == len(model.out_channels) == len(model.out_strides), arch
        assert tuple(o.shape[1] for o in outs) == model.out_channels, arch
        for out, stride in zip(outs, model.out_strides):
            assert abs(out.shape[-1] - 224 / stride) < 1, (arch, tuple(out.shape), stride)
        assert list(model.out_strides) == sorted(model.out_strides), arch
    # what configs use for neck in_channels (the last arch: get_feature_info builds it again)
    assert get_feature_info(dict(type=family, arch=arch)) == (model.out_channels,
                                                               model.out_strides)


# ------------------------------------------------------------------ input sizes and batches


def test_odd_input_size(cfg):
    model = build(cfg)
    outs = run(model, image(2, 3, *ODD))
    assert_shapes(model, outs, 2, ODD)
    assert all(torch.isfinite(o).all() for o in outs)


def test_input_smaller_than_total_stride(cfg):
    model = build(cfg)
    assert max(model.out_strides) > 16
    try:
        outs = run(model, image(1, 3, 16, 16))
    except ValueError as exc:
        match = re.search(r'input 16x16 is too small; .* needs inputs of at least (\d+)x\1',
                          str(exc))
        assert match, str(exc)
        side = int(match.group(1))
        outs = run(model, image(1, 3, side, side))  # the stated minimum must work
        assert all(min(o.shape[-2:]) >= 1 for o in outs)
    assert all(torch.isfinite(o).all() and o.numel() for o in outs)


def test_batch_one_equals_batched(cfg):
    model = build(cfg)
    x = image(2, 3, *ODD)
    assert_equal_outputs(run(model, x[1:]), [o[1:] for o in run(model, x)], atol=1e-5, rtol=1e-4)


def test_batch_one_in_train_mode_without_norm_eval(cfg):
    model = build(cfg, norm_eval=False).train()
    stats = {n: b.clone() for n, b in model.named_buffers() if n.endswith('running_mean')}
    outs = model(image(1, 3, *SMALL))
    assert_shapes(model, outs, 1, SMALL)
    sum(o.square().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    if stats:
        assert any(not torch.equal(b, stats[n]) for n, b in model.named_buffers() if n in stats)
    try:  # 16x16 leaves a 1x1 map: BN sees one value per channel
        model(image(1, 3, 16, 16))
    except ValueError as exc:
        assert re.search(r'one value per channel.*batch of 2 or more.*norm_eval=True|'
                         r'needs inputs of at least', str(exc)), str(exc)


# ------------------------------------------------------------------ input channels


@pytest.mark.parametrize('channels', [1, 4])
def test_in_channels_and_adapted_rgb_checkpoint(cfg, family, channels, tmp_path):
    assert accepts(family, 'in_channels'), f'{family} does not take in_channels'
    rgb = build(cfg)
    path = tmp_path / 'rgb.pth'
    torch.save({'state_dict': rgb.state_dict()}, path)
    model = build(cfg, in_channels=channels)
    x = image(2, channels, *ODD)
    assert_shapes(model, run(model, x), 2, ODD)

    model = build(cfg, seed=5, in_channels=channels,
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    own, source = model.state_dict(), rgb.state_dict()
    adapted = [k for k in own if own[k].shape != source[k].shape]
    assert len(adapted) == 1, adapted  # only the input conv differs
    key = adapted[0]
    for k in own:
        if k != key:
            assert torch.equal(own[k], source[k]), k
    if channels == 1:
        grey = x[:, :1]
        assert_equal_outputs(run(model, grey), run(rgb, grey.expand(-1, 3, -1, -1)),
                             atol=1e-4, rtol=1e-4, what='grey vs RGB')
    else:
        w = source[key]
        torch.testing.assert_close(own[key], torch.cat([w, w[:, :1]], 1) * 0.75)


# ------------------------------------------------------------------ memory format


def test_channels_last_input(cfg):
    model = build(cfg)
    x = image(2, 3, *ODD)
    assert_equal_outputs(run(model, x.contiguous(memory_format=torch.channels_last)),
                         run(model, x), atol=1e-5, rtol=1e-4, what='channels_last')


# ------------------------------------------------------------------ precision


def assert_bf16_close(outs: Sequence[torch.Tensor], ref: Sequence[torch.Tensor],
                      what: str) -> List[float]:
    errors = []
    for i, (out, r) in enumerate(zip(outs, ref)):
        assert torch.isfinite(out).all(), f'{what} map {i} has NaN/Inf under bf16'
        err = (out.float() - r.float()).abs().max().item() / r.abs().max().item()
        errors.append(err)
        assert err <= BF16_REL_TOL, f'{what} map {i}: bf16 error {err:.3g} of max|fp32|'
    return errors


def test_bf16_autocast(cfg, family):
    model = build(cfg)
    x = image(2, 3, *ODD)
    ref = run(model, x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = run(model, x)
    assert_bf16_close(outs, ref, family)


def _official_vovnet(meta: dict, state: dict) -> nn.Module:
    from mmbackbones.converters import convert_vovnet_official
    from mmbackbones.models import VoVNet
    model = VoVNet(arch=dict(meta['spec'], identity=True))
    model.load_state_dict(convert_vovnet_official(state).check('official').state_dict)
    return model


def _official_vanillanet(meta: dict, state: dict) -> nn.Module:
    from mmbackbones.converters.vanillanet_official import (arch_from_state_dict,
                                                            convert_vanillanet_official,
                                                            is_deploy_form)
    from mmbackbones.models import VanillaNet
    converted = convert_vanillanet_official(state).check('official').state_dict
    arch, _ = arch_from_state_dict(converted, strides=meta['strides'])
    model = VanillaNet(arch=arch, act_learn=meta['act_learn'], deploy=is_deploy_form(converted),
                       out_indices=tuple(range(len(meta['strides']))))
    model.load_state_dict(converted)
    return model


def _official_moganet(meta: dict, state: dict) -> nn.Module:
    from mmbackbones.converters.moganet_official import convert_moganet_official
    from mmbackbones.models import MogaNet
    model = MogaNet(arch=meta['arch'])
    model.load_state_dict(convert_moganet_official(state).check('official').state_dict)
    return model


#: official test vector -> builder of our model with the official weights
OFFICIAL_BUILDERS = {'vovnet_tiny_spec': _official_vovnet, 'vanillanet_tiny': _official_vanillanet,
                     'vanillanet_tiny_deploy': _official_vanillanet,
                     'moganet_tiny_arch': _official_moganet}
#: the backbone vectors (their json describes feature-map ``outputs``; rtdetr_tiny is a detector)
VECTORS = sorted(p.stem for p in OFFICIAL.glob('*.pt')
                 if 'outputs' in json.loads(p.with_suffix('.json').read_text()))


@pytest.mark.parametrize('vector', VECTORS)
def test_bf16_on_official_vectors(vector):
    assert vector in OFFICIAL_BUILDERS, f'add a builder for {vector} to OFFICIAL_BUILDERS'
    data = torch.load(OFFICIAL / f'{vector}.pt', weights_only=True)
    meta = json.loads((OFFICIAL / f'{vector}.json').read_text())
    model = OFFICIAL_BUILDERS[vector](meta, data['state_dict']).eval()
    outs = run(model, data['input'])
    official = [o.float() for o in data['outputs'][-len(outs):]]  # VanillaNet's lead with the stem
    assert_equal_outputs(outs, official, atol=1e-4, what=f'{vector} fp32')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = run(model, data['input'])
    assert_bf16_close(outs, official, vector)


#: fp16 keeps 11 significant bits (2^-11 relative rounding per op), 8x finer than bf16.
FP16_REL_TOL = 1e-2
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='fp16 autocast runs where a CUDA GPU is lent; bf16 on the '
                                       'CPU covers precision everywhere else')


@needs_cuda
def test_fp16_autocast_cuda(cfg, family):
    model = build(cfg).cuda()
    x = image(2, 3, *ODD).cuda()
    ref = run(model, x)
    with torch.autocast('cuda', dtype=torch.float16):
        outs = run(model, x)
    for i, (out, r) in enumerate(zip(outs, ref)):
        assert torch.isfinite(out).all(), f'{family} map {i} has NaN/Inf under fp16'
        err = (out.float() - r).abs().max().item() / r.abs().max().item()
        assert err <= FP16_REL_TOL, f'{family} map {i}: fp16 error {err:.3g} of max|fp32|'


@needs_cuda
@pytest.mark.parametrize('vector', VECTORS)
def test_fp16_on_official_vectors_cuda(vector):
    data = torch.load(OFFICIAL / f'{vector}.pt', weights_only=True)
    meta = json.loads((OFFICIAL / f'{vector}.json').read_text())
    model = OFFICIAL_BUILDERS[vector](meta, data['state_dict']).eval().cuda()
    official = [o.float().cuda() for o in data['outputs']]
    with torch.autocast('cuda', dtype=torch.float16):
        outs = run(model, data['input'].cuda())
    official = official[-len(outs):]
    for i, (out, r) in enumerate(zip(outs, official)):
        assert torch.isfinite(out).all(), f'{vector} map {i} has NaN/Inf under fp16'
        err = (out.float() - r).abs().max().item() / r.abs().max().item()
        assert err <= FP16_REL_TOL, f'{vector} map {i}: fp16 error {err:.3g} of max|fp32|'


FORCE_FP32 = [f for f in FAMILIES if accepts(f, 'attn_force_fp32')]


@pytest.mark.parametrize('family', FORCE_FP32 or ['MogaNet'])
def test_attn_force_fp32_is_honoured(family):
    assert family in FORCE_FP32, f'{family} is not registered with an attn_force_fp32 option'
    cfg = tiny_config(family)
    x = image(2, 3, *ODD)

    def fp32_convs(model):
        """Conv layers that produce float32 under bf16 autocast."""
        dtypes = []
        hooks = [m.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
                 for m in model.modules() if isinstance(m, nn.Conv2d)]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs = run(model, x)
        for hook in hooks:
            hook.remove()
        return sum(d == torch.float32 for d in dtypes), outs

    plain, forced = build(cfg, attn_force_fp32=False), build(cfg, attn_force_fp32=True)
    attention = [m for m in forced.modules() if getattr(m, 'force_fp32', False) is True]
    assert attention and not any(getattr(m, 'force_fp32', False) for m in plain.modules())
    assert fp32_convs(plain)[0] == 0
    count, outs = fp32_convs(forced)
    assert count == len(attention)  # one output projection per attention block
    ref = run(forced, x)
    assert_bf16_close(outs, ref, f'{family} attn_force_fp32')
    assert_equal_outputs(ref, run(plain, x), atol=0, what='fp32: same function')


# ------------------------------------------------------------------ export


def _onnx_max_diff(model: nn.Module, x: torch.Tensor, path: str) -> float:
    import onnx
    import onnxruntime as ort
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (x, ), path, opset_version=17, dynamo=False)
    assert onnx.load(path).opset_import[0].version == 17
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    outs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    ref = run(model, x)
    assert len(outs) == len(ref)
    return max((torch.from_numpy(o) - r).abs().max().item() for o, r in zip(outs, ref))


def test_onnx_export(cfg, family, tmp_path):
    kwargs = dict(act_learn=1.0) if accepts(family, 'act_learn') else {}  # deployable form
    model = build(cfg, **kwargs)
    x = image(1, 3, *ODD)
    assert _onnx_max_diff(model, x, str(tmp_path / 'model.onnx')) < 1e-4
    if hasattr(model, 'switch_to_deploy'):
        model.switch_to_deploy()
        assert _onnx_max_diff(model.eval(), x, str(tmp_path / 'deploy.onnx')) < 1e-4


def test_jit_trace(cfg):
    model = build(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(model, image(1, 3, *ODD), check_trace=False)
    x = image(1, 3, *ODD, seed=1)
    assert_equal_outputs(run(traced, x), run(model, x), atol=1e-6, what='trace')


def test_torch_compile(cfg):
    torch._dynamo.reset()  # fresh guards: no silent fall-back to eager at the recompile limit
    model = build(cfg)
    compiled = torch.compile(model)
    x = image(1, 3, *ODD)
    outs = run(compiled, x)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 1
    assert_equal_outputs(outs, run(model, x), atol=1e-4, rtol=1e-4, what='compile')


# ------------------------------------------------------------------ determinism and checkpoints


def test_deterministic_forward_and_backward(cfg):
    def once():
        model = build(cfg, seed=3, norm_eval=False).train()
        outs = model(image(2, 3, 37, 53, seed=4))  # bitwise equality needs no big input
        sum(o.square().mean() for o in outs).backward()
        return ([o.detach() for o in outs],
                {n: p.grad for n, p in model.named_parameters() if p.grad is not None})

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        (outs_a, grads_a), (outs_b, grads_b) = once(), once()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert all(torch.equal(a, b) for a, b in zip(outs_a, outs_b))
    assert grads_a and grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        assert torch.equal(grad, grads_b[name]), name


def test_state_dict_round_trip_through_mmengine(cfg, tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint, save_checkpoint

    from mmbackbones.engine.checkpoint import load_from_local_weights_only
    assert CheckpointLoader._schemes[''] is load_from_local_weights_only  # our safe loading
    model = build(cfg)
    path = str(tmp_path / 'backbone.pth')
    save_checkpoint({'state_dict': model.state_dict(), 'meta': {}}, path)
    fresh = build(cfg, seed=7)
    x = image(2, 3, *ODD)
    assert not torch.equal(run(fresh, x)[-1], run(model, x)[-1])
    load_checkpoint(fresh, path, map_location='cpu', strict=True)
    assert_equal_outputs(run(fresh.eval(), x), run(model, x), atol=0, what='round trip')
