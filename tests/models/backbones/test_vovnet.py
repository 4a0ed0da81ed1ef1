"""VoVNet: architecture exactness against the official test vectors and timm, arch handling."""
import json
import re

import pytest
import timm
import torch
from timm.layers import create_attn
from timm.models.vovnet import VovNet, model_cfgs

from mmbackbones.converters import convert_timm_vovnet, convert_vovnet_official
from mmbackbones.models import VoVNet
from mmbackbones.models.backbones.vovnet import VOVNET_ARCHS
from tests.numerics import (assert_parity, max_abs_diff, num_params, parity_tolerance,
                            randomize)

from tests.paths import OFFICIAL

# Backbone parameter counts from the reference (official vovnet-detectron2 code and timm 1.0.31).
PARAMS_ALL = {  # eSE on every OSA module (official layout)
    'V-19-slim-dw-eSE': 1_384_752, 'V-19-dw-eSE': 5_518_080, 'V-19-slim-eSE': 2_653_136,
    'V-19-eSE': 10_180_416, 'V-39-eSE': 25_184_128, 'V-57-eSE': 41_454_912,
    'V-99-eSE': 69_523_520}
PARAMS_LAST = dict(PARAMS_ALL, **{  # eSE on the last block of each stage (timm layout)
    'V-39-eSE': 23_543_936, 'V-57-eSE': 37_583_936, 'V-99-eSE': 62_174_272})

# (our arch, timm model name or model_cfgs key) for every VoVNet timm ships.
TIMM_MODELS = [
    ('V-19-slim-dw-eSE', 'ese_vovnet19b_slim_dw'), ('V-19-dw-eSE', 'ese_vovnet19b_dw'),
    ('V-19-slim-eSE', 'ese_vovnet19b_slim'), ('V-19-eSE', 'ese_vovnet19b'),
    ('V-39-eSE', 'ese_vovnet39b'), ('V-57-eSE', 'ese_vovnet57b'), ('V-99-eSE', 'ese_vovnet99b'),
    ('V-39', 'vovnet39a'), ('V-57', 'vovnet57a')]
ODD_INPUT = (1, 3, 97, 131)
# Parity runs in NCHW, the reference's layout, so both sides use the same kernels and the
# comparison measures the architecture, not float summation order. channels_last (the default)
# is checked against NCHW in test_conventions.py.
NCHW = dict(channels_last=False)


def timm_vovnet(name: str, ese_everywhere: bool = False) -> torch.nn.Module:
    # ese_vovnet19b has a model_cfgs entry but no registered entrypoint.
    model = VovNet(cfg=model_cfgs[name], num_classes=0)
    if ese_everywhere:  # the official layout: eSE on every OSA module
        for stage in model.stages:
            for block in stage.blocks:
                if block.attn is None:
                    block.attn = create_attn('ese', block.conv_concat.conv.out_channels)
    return model


def timm_stage_features(model, x):
    x = model.stem(x)
    outs = []
    for stage in model.stages:
        x = stage(x)
        outs.append(x)
    return outs


def test_official_test_vector_through_converter():
    vec = torch.load(OFFICIAL / 'vovnet_tiny_spec.pt', weights_only=True)
    spec = json.loads((OFFICIAL / 'vovnet_tiny_spec.json').read_text())['spec']
    result = convert_vovnet_official(vec['state_dict']).check('official')
    arch, layout = VoVNet.arch_from_state_dict(result.state_dict)
    assert arch == dict(spec, identity=True) and layout == 'all'
    model = VoVNet(arch=arch, **NCHW).eval()
    missing, unexpected = model.load_state_dict(result.state_dict, strict=True)
    assert not missing and not unexpected
    with torch.no_grad():
        outs = model(vec['input'])
    assert max_abs_diff(outs, vec['outputs']) < parity_tolerance(model, vec['input'])


@pytest.mark.parametrize('arch,name', TIMM_MODELS, ids=[n for _, n in TIMM_MODELS])
def test_parity_with_timm(arch, name):
    ref = randomize(timm_vovnet(name), seed=1).eval()
    result = convert_timm_vovnet(ref.state_dict()).check('timm')
    v2 = arch.endswith('eSE')
    model = VoVNet(arch=arch, ese_layout='last', **NCHW).eval()
    model.load_state_dict(result.state_dict, strict=True)
    assert VoVNet.arch_from_state_dict(result.state_dict, identity=v2) == (
        dict(VOVNET_ARCHS[arch]), 'last' if arch in ('V-39-eSE', 'V-57-eSE', 'V-99-eSE') else 'all')
    x = torch.randn(*ODD_INPUT, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_parity(model, x, timm_stage_features(ref, x))
    if name in timm.list_models('*vovnet*'):  # the registered model's features_only agrees too
        feats = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
        flat = {re.sub(r'^(stem|stages)\.(\d+)\.', r'\1_\2.', k): v
                for k, v in ref.state_dict().items() if not k.startswith('head.')}
        feats.load_state_dict(flat, strict=True)  # features_only flattens stem.N -> stem_N
        with torch.no_grad():
            assert_parity(model, x, feats.eval()(x))
        from_features = convert_timm_vovnet(feats.state_dict()).check('timm').state_dict
        assert all(torch.equal(from_features[k], v) for k, v in result.state_dict.items())


@pytest.mark.parametrize('arch,name', TIMM_MODELS[4:7], ids=[n for _, n in TIMM_MODELS[4:7]])
def test_official_layout_equals_patched_timm(arch, name):
    ref = randomize(timm_vovnet(name, ese_everywhere=True), seed=3).eval()
    model = VoVNet(arch=arch, ese_layout='all', **NCHW).eval()
    model.load_state_dict(convert_timm_vovnet(ref.state_dict()).check('timm').state_dict)
    x = torch.randn(*ODD_INPUT)
    with torch.no_grad():
        assert_parity(model, x, timm_stage_features(ref, x))
    assert num_params(model) == num_params(ref) == PARAMS_ALL[arch]


@pytest.mark.parametrize('arch', list(PARAMS_ALL))
def test_param_counts(arch):
    assert num_params(VoVNet(arch=arch, ese_layout='all')) == PARAMS_ALL[arch]
    assert num_params(VoVNet(arch=arch, ese_layout='last')) == PARAMS_LAST[arch]


def test_v1_archs_have_no_ese_nor_identity():
    model = VoVNet(arch='V-27-slim')
    assert model.out_channels == (128, 256, 384, 512)
    blocks = [b for s in model.stages for b in s.blocks]
    assert all(b.ese is None and not b.identity for b in blocks)
    assert VoVNet.arch_depth(VOVNET_ARCHS['V-27-slim']) == 27


def test_depth_selects_default_variant_and_checks_consistency():
    assert VoVNet(depth=39).arch == VOVNET_ARCHS['V-39-eSE']
    assert VoVNet(depth=19, arch='V-19-slim-dw-eSE').arch == VOVNET_ARCHS['V-19-slim-dw-eSE']
    with pytest.raises(ValueError, match=r'depth=57 disagrees with arch .V-39-eSE., which has '
                                         r'depth 39'):
        VoVNet(depth=57, arch='V-39-eSE')
    with pytest.raises(ValueError, match=r'depth 50 is not supported; choose one of 19, 27, 39, '
                                         r'57, 99'):
        VoVNet(depth=50)
    with pytest.raises(ValueError, match='pass arch= .* or depth='):
        VoVNet()


def test_arch_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"arch 'V-40-eSE' is unknown; choose one of "
                                         r"V-19-slim-dw-eSE, .*V-57, or pass a dict with keys "
                                         r"stem, stage_conv_ch"):
        VoVNet(arch='V-40-eSE')
    with pytest.raises(ValueError, match=r'arch dict has missing layer_per_block; unknown '
                                         r'layers\. Required keys'):
        VoVNet(arch=dict(stem=[8, 8, 8], stage_conv_ch=[8], stage_out_ch=[8],
                         block_per_stage=[1], layers=3))
    with pytest.raises(ValueError, match=r"'stage_out_ch' must be a list of 2 positive ints"):
        VoVNet(arch=dict(stem=[8, 8, 8], stage_conv_ch=[8, 8], stage_out_ch=[8],
                         layer_per_block=1, block_per_stage=[1, 1]))
    with pytest.raises(ValueError, match=r"ese_layout 'first' is unknown; choose one of all, last"):
        VoVNet(depth=19, ese_layout='first')
    with pytest.raises(TypeError, match='arch must be a str'):
        VoVNet(arch=39)


def test_custom_dict_takes_the_named_path():
    named = VoVNet(arch='V-19-slim-eSE')
    custom = VoVNet(arch=dict(VOVNET_ARCHS['V-19-slim-eSE']))
    assert list(named.state_dict()) == list(custom.state_dict())
    assert named.out_channels == custom.out_channels == (112, 256, 384, 512)
    assert named.out_strides == (4, 8, 16, 32)


def test_depthwise_keeps_unreduced_identity_in_concat():
    model = VoVNet(arch='V-19-slim-dw-eSE')
    block = model.stages[1].blocks[0]  # 112 -> 80: reduced
    assert block.reduction is not None
    assert block.concat.conv.in_channels == 112 + 3 * 80


@pytest.mark.parametrize('arch', list(VOVNET_ARCHS))
def test_named_arch_conventions(arch):
    """The frozen_stages / norm_eval / with_cp contract on every named arch (small input)."""
    torch.manual_seed(0)
    model = VoVNet(arch=arch, frozen_stages=2, norm_eval=False, with_cp=True).train()
    reference = VoVNet(arch=arch, frozen_stages=2, norm_eval=False, with_cp=False).train()
    reference.load_state_dict(model.state_dict())
    frozen = [model.stem, *model.stages[:2]]
    assert all(not m.training and not p.requires_grad for m in frozen for p in m.parameters())
    before = {k: v.clone() for m in frozen for k, v in m.state_dict().items()}
    x = torch.randn(2, 3, 64, 80)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    outs = model(x)
    assert [o.shape[1] for o in outs] == list(model.out_channels)
    assert outs[0].grad_fn is None and outs[1].grad_fn is None and outs[2].grad_fn is not None
    sum(o.square().mean() for o in outs).backward()
    sum(o.square().mean() for o in reference(x)).backward()
    ref_params = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.equal(param.grad, ref_params[name].grad), name
    optim.step()
    after = {k: v for m in frozen for k, v in m.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)
