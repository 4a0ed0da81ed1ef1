"""The shared mmdet-conventions contract, checked for every mmbackbones backbone.

Each entry of ``CASES`` is a small but complete config of one backbone family; a new family
joins the contract by adding its entry.
"""
import copy
import inspect
import re

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.models import get_feature_info
from mmbackbones.models.layers import bn_folding

init_default_scope('mmdet')

TINY_VOVNET = dict(stem=[8, 8, 16], stage_conv_ch=[8, 12, 16, 16],
                   stage_out_ch=[16, 24, 32, 40], layer_per_block=2, block_per_stage=[1, 2, 2, 1])
TINY_VOVNET_DW = dict(TINY_VOVNET, stem=[8, 8, 8], dw=True)

CASES = {
    'vovnet': dict(type='VoVNet', arch=TINY_VOVNET),
    'vovnet-dw': dict(type='VoVNet', arch=TINY_VOVNET_DW),
    'vovnet-v1': dict(type='VoVNet', arch=dict(TINY_VOVNET, eSE=False, identity=False)),
    'shufflenetv2': dict(type='ShuffleNetV2', out_indices=(0, 1, 2, 3),
                         arch=dict(stem_channels=8, stage_channels=[16, 24, 32],
                                   conv5_channels=48, stage_blocks=[2, 2, 1])),
    'moganet': dict(type='MogaNet', arch=dict(embed_dims=[16, 16, 24, 32], depths=[1, 1, 2, 1],
                                              ffn_ratios=[2, 2, 2, 2])),
    'vanillanet': dict(type='VanillaNet', out_indices=(0, 1, 2, 3), act_learn=0.5,
                       arch=dict(dims=[8, 16, 24, 24, 32], strides=[2, 2, 1, 2])),
    'presnet': dict(type='PResNet', arch=dict(block='bottleneck', stage_blocks=[1, 2, 1, 1],
                                              stem_channels=[8, 8, 16],
                                              base_channels=[4, 8, 8, 8])),
    'hgnetv2': dict(type='HGNetV2', arch=dict(stem_channels=[8, 8], layer_num=2,
                                              stage_mid_channels=[8, 8, 12, 12],
                                              stage_out_channels=[16, 24, 32, 40],
                                              stage_blocks=[1, 2, 2, 1], use_lab=True)),
    'yolov8': dict(type='YOLOv8CSPDarknet', out_indices=(0, 1, 2, 3),
                   arch=dict(deepen_factor=0.33, widen_factor=0.125, last_stage_channels=256,
                             stage_blocks=[1, 2, 2, 1])),
    'yolov8-dw': dict(type='YOLOv8CSPDarknet', out_indices=(0, 1, 2, 3), use_depthwise=True,
                      arch=dict(deepen_factor=0.33, widen_factor=0.125, last_stage_channels=256,
                                stage_blocks=[1, 2, 2, 1])),
    # A timm BN model with 4 feature stages, made tiny through timm kwargs; TimmBackbone has no
    # plugins or norm_cfg.
    'timm-inception-next': dict(type='TimmBackbone', model_name='inception_next_atto',
                                depths=(1, 1, 2, 1), dims=(8, 16, 24, 32)),
}
# A ContextBlock per backbone family at each documented position is in test_plugins_positions.
IMG = (2, 3, 67, 93)


def build(cfg: dict, **kwargs):
    cfg = copy.deepcopy(cfg)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def image(seed: int = 0) -> torch.Tensor:
    return torch.randn(*IMG, generator=torch.Generator().manual_seed(seed))


def _takes_norm_cfg(cfg) -> bool:
    return 'norm_cfg' in inspect.signature(MODELS.get(cfg['type'])).parameters


def _assert_refuses(cfg, arg: str, **kwargs) -> None:
    """A family without this option (TimmBackbone: timm builds the layers) must refuse it."""
    with pytest.raises((ValueError, TypeError), match=arg):
        build(cfg, **kwargs)


@pytest.fixture(params=list(CASES), ids=list(CASES))
def cfg(request):
    return CASES[request.param]


def test_outputs_match_out_indices_channels_and_strides(cfg):
    model = build(cfg, out_indices=(0, 2, 3)).eval()
    outs = model(image())
    assert len(outs) == 3
    assert tuple(o.shape[1] for o in outs) == model.out_channels
    for out, stride in zip(outs, model.out_strides):
        assert abs(out.shape[-2] - IMG[2] / stride) < 1 and abs(out.shape[-1] - IMG[3] / stride) < 1
    assert get_feature_info(dict(cfg, out_indices=(0, 2, 3))) == (model.out_channels,
                                                                   model.out_strides)


def test_num_stages_builds_only_those_stages(cfg):
    model = build(cfg, num_stages=2, out_indices=(0, 1)).eval()
    assert len(model.stages) == 2
    assert len(model(image())) == 2
    with pytest.raises(ValueError, match=r'out_indices=.*outside the valid range 0\.\.1'):
        build(cfg, num_stages=2, out_indices=(0, 2))
    with pytest.raises(ValueError, match=r'num_stages=9 is out of range.*1\.\.4'):
        build(cfg, num_stages=9)


@pytest.mark.parametrize('bad', [(3, 1), (1, 1), (), (0, 7), (-1, ), 'x'])
def test_out_indices_validation(cfg, bad):
    with pytest.raises((ValueError, TypeError), match='out_indices'):
        build(cfg, out_indices=bad)


@pytest.mark.parametrize('bad', [-2, 5, 1.5, True])
def test_frozen_stages_out_of_range(cfg, bad):
    with pytest.raises(ValueError, match=r'frozen_stages=.* use -1 \(nothing\), 0 \(the stem\)'):
        build(cfg, frozen_stages=bad)


def _bn_stats(module):
    return {n: b.clone() for n, b in module.named_buffers()}


@pytest.mark.parametrize('frozen', [-1, 0, 1, 2, 4])
def test_frozen_stages_do_not_change_under_sgd(cfg, frozen):
    """Weight decay + momentum steps leave frozen params and BN statistics bit-identical."""
    torch.manual_seed(0)
    model = build(cfg, frozen_stages=frozen, norm_eval=False)
    model.train()
    frozen_modules = ([model.stem] if frozen >= 0 else []) + list(model.stages[:max(frozen, 0)])
    trainable_modules = list(model.stages[max(frozen, 0):])
    if frozen < 0:
        trainable_modules.insert(0, model.stem)
    for module in frozen_modules:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in trainable_modules:
        assert all(p.requires_grad for p in module.parameters())
    before = [copy.deepcopy(m.state_dict()) for m in frozen_modules + trainable_modules]
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1) if params else None
    for step in range(2):
        outs = model(image(step))
        if optim:  # everything frozen: forward passes in train mode must still change nothing
            optim.zero_grad()
            sum(o.square().mean() for o in outs).backward()
            optim.step()
        model.train()  # re-applied every call, as the runner does
    after = [m.state_dict() for m in frozen_modules + trainable_modules]
    for i, module in enumerate(frozen_modules):
        for key, value in before[i].items():
            assert torch.equal(value, after[i][key]), f'frozen {key} changed'
    for j, module in enumerate(trainable_modules, start=len(frozen_modules)):
        changed = [k for k, v in before[j].items() if not torch.equal(v, after[j][k])]
        assert changed, 'a trainable stage did not change'


def test_frozen_stages_record_no_autograd_graph(cfg):
    """Frozen stages run without a graph: fewer saved tensors, and no grad_fn on their outputs."""
    def saved_tensors(frozen):
        model = build(cfg, frozen_stages=frozen, out_indices=(0, 1, 2, 3)).train()
        count = 0

        def pack(t):
            nonlocal count
            count += 1
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs = model(image())
        return count, outs

    counts = {}
    for frozen in (-1, 0, 2, 4):
        counts[frozen], outs = saved_tensors(frozen)
        for i, out in enumerate(outs):
            assert (out.grad_fn is None) == (i < frozen), (frozen, i)
    assert counts[-1] > counts[0] > counts[2] > counts[4] == 0


def test_frozen_gradients_equal_unfrozen_computation(cfg):
    """Trainable-part gradients with frozen stages equal those of the fully recorded graph.

    BN folding is off: frozen stages run in eval mode without grad, where their convs would
    otherwise fold BN (tests/models/test_conv_module.py covers that path)."""
    frozen = build(cfg, frozen_stages=1).train()
    reference = build(cfg, frozen_stages=-1).train()
    reference.load_state_dict(frozen.state_dict())
    for name, module in reference.named_modules():  # same BN modes as the frozen model
        module.train(dict(frozen.named_modules())[name].training)
    with bn_folding(False):
        sum(o.sum() for o in frozen(image())).backward()
        sum(o.sum() for o in reference(image())).backward()
    ref_params = dict(reference.named_parameters())
    checked = 0
    for name, param in frozen.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, ref_params[name].grad, rtol=1e-5, atol=1e-6)
            checked += 1
        else:
            assert param.grad is None
    assert checked


def test_norm_eval(cfg):
    model = build(cfg, norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    model = build(cfg, norm_eval=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    model.eval()
    assert all(not m.training for m in model.modules())


def test_norm_cfg_requires_grad_false_freezes_affine_only(cfg):
    if not _takes_norm_cfg(cfg):
        _assert_refuses(cfg, 'norm_cfg', norm_cfg=dict(type='BN', requires_grad=False))
        return
    model = build(cfg, norm_cfg=dict(type='BN', requires_grad=False))
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            assert not module.weight.requires_grad and not module.bias.requires_grad
        if isinstance(module, torch.nn.Conv2d):
            assert module.weight.requires_grad


def test_norm_cfg_variants_build(cfg):
    if not _takes_norm_cfg(cfg):
        _assert_refuses(cfg, 'norm_cfg', norm_cfg=dict(type='SyncBN'))
        return
    model = build(cfg, norm_cfg=dict(type='SyncBN'))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    model = build(cfg, norm_cfg=dict(type='GN', num_groups=4)).train()
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert len(model(image())) == 4
    with pytest.raises(ValueError, match=r"norm_cfg type 'BatchNormz' is not a registered.*BN"):
        build(cfg, norm_cfg=dict(type='BatchNormz'))


def test_with_cp_gives_identical_gradients(cfg):
    torch.manual_seed(0)
    plain = build(cfg, with_cp=False, norm_eval=True).train()
    ckpt = build(cfg, with_cp=True, norm_eval=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = image()
    sum(o.square().sum() for o in plain(x)).backward()
    sum(o.square().sum() for o in ckpt(x)).backward()
    cp_params = dict(ckpt.named_parameters())
    for name, param in plain.named_parameters():
        assert torch.equal(param.grad, cp_params[name].grad), name


def _positions(cfg):
    return MODELS.get(cfg['type']).plugin_positions


def _refuses_plugins_if_it_has_none(cfg) -> bool:
    if _positions(cfg):
        return False
    _assert_refuses(cfg, 'plugins', plugins=[dict(cfg=dict(type='ContextBlock', ratio=0.25),
                                                  position='after_block')])
    return True


def test_plugins_positions(cfg):
    """A ContextBlock at every documented position builds, runs and changes the output."""
    if _refuses_plugins_if_it_has_none(cfg):
        return
    base = build(cfg).eval()
    for position in _positions(cfg):
        plugins = [dict(cfg=dict(type='ContextBlock', ratio=1. / 4), position=position,
                        stages=(False, True, True, True))]
        model = build(cfg, plugins=plugins).eval()
        names = [n for n, _ in model.named_modules() if n.endswith('context_block')]
        assert names and not any(n.startswith('stages.0.') for n in names), position
        state = model.state_dict()
        state.update(base.state_dict())
        model.load_state_dict(state)
        torch.manual_seed(1)
        for name, module in model.named_modules():
            if name.endswith('context_block'):  # make the plugin non-trivial
                for p in module.parameters():
                    torch.nn.init.normal_(p, std=0.5)
        outs, ref = model(image()), base(image())
        assert torch.equal(outs[0], ref[0]), 'stage 1 has no plugin and must be unchanged'
        assert not torch.allclose(outs[-1], ref[-1]), position


def test_other_plugin_types(cfg):
    if _refuses_plugins_if_it_has_none(cfg):
        return
    position = _positions(cfg)[0]
    plugins = [
        dict(cfg=dict(type='GeneralizedAttention', spatial_range=-1, num_heads=2,
                      attention_type='0010', kv_stride=2), position=position,
             stages=(False, False, True, True)),
        dict(cfg=dict(type='NonLocal2d', reduction=2), position=position,
             stages=(False, False, False, True)),
    ]
    model = build(cfg, plugins=plugins).train()
    assert sum(o.sum() for o in model(image())).requires_grad


def test_plugin_errors(cfg):
    if _refuses_plugins_if_it_has_none(cfg):
        return
    with pytest.raises(ValueError, match=r"plugin position 'after_conv9' does not exist; choose "
                                         r"one of " + re.escape(', '.join(_positions(cfg)))):
        build(cfg, plugins=[dict(cfg=dict(type='ContextBlock', ratio=0.25),
                                 position='after_conv9')])
    with pytest.raises(ValueError, match=r'plugin stages=\(True, True\) must have one bool per'):
        build(cfg, plugins=[dict(cfg=dict(type='ContextBlock', ratio=0.25),
                                 position=_positions(cfg)[0], stages=(True, True))])
    twice = dict(cfg=dict(type='ContextBlock', ratio=0.25), position=_positions(cfg)[0])
    with pytest.raises(ValueError, match="give each config of the same type a distinct 'postfix'"):
        build(cfg, plugins=[twice, twice])


def test_pretrained_init_cfg_loads_and_reports(cfg, tmp_path):
    source = build(cfg).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # differ from any fresh init
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / 'detector.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()},
                'meta': {}}, path)
    model = build(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    model.eval()
    for a, b in zip(model(image()), source(image())):
        assert torch.equal(a, b)

    # Without the prefix nothing matches: an error that suggests the prefix, not silent scratch.
    model = build(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match=r"loaded 0/.*below min_loaded_ratio=0\.9.*"
                                           r"prefix='backbone\.'"):
        model.init_weights()


def test_pretrained_partial_checkpoint_threshold(cfg, tmp_path):
    model = build(cfg)
    source = model.state_dict()

    def param_names(part):  # the backbone's names of a stem's / stage's parameters
        ids = {id(p) for p in part.parameters()}
        return [n for n, p in model.named_parameters() if id(p) in ids]
    stem_keys, stage0_keys = param_names(model.stem), param_names(model.stages[0])
    stem_only = {k: v for k, v in source.items() if k in stem_keys}
    path = tmp_path / 'stem.pth'
    torch.save(stem_only, path)
    model = build(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match=r'missing \(\d+\): ') as err:
        model.init_weights()
    assert any(repr(k) in str(err.value) for k in stage0_keys), str(err.value)
    model = build(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path), min_loaded_ratio=0.0))
    model.init_weights()
    assert torch.equal(model.state_dict()[stem_keys[0]], source[stem_keys[0]])


def test_deprecated_pretrained_argument(cfg, tmp_path):
    with pytest.raises(ValueError, match='pass either pretrained= or init_cfg='):
        build(cfg, pretrained='x.pth', init_cfg=dict(type='Pretrained', checkpoint='x.pth'))
    with pytest.raises(TypeError, match='pretrained must be a checkpoint path'):
        build(cfg, pretrained=3)


def test_channels_last_backward_stays_channels_last(cfg):
    """The NCHW gradient a neck or loss sends back is converted once, at the output: the last
    stage's backward sees a channels-last gradient, not a mix of layouts."""
    model = build(cfg, norm_eval=False, channels_last=True).train()
    outs = model(image())
    assert all(o.is_contiguous() for o in outs)
    grads = []  # what the output's grad_fn passes on to the last stage's backward
    outs[-1].grad_fn.register_hook(lambda grad_inputs, grad_outputs: grads.append(grad_inputs))
    sum(o.square().mean() for o in outs).backward()
    assert outs[-1].grad_fn.next_functions[0][0] is not None
    assert len(grads) == 1 and grads[0][0].is_contiguous(memory_format=torch.channels_last)


def test_channels_last_gives_the_same_outputs_and_gradients(cfg):
    plugins = [dict(cfg=dict(type='ContextBlock', ratio=0.25), position=_positions(cfg)[0],
                    stages=(False, False, True, True))] if _positions(cfg) else None
    plain = build(cfg, plugins=plugins, norm_eval=False).train()
    fast = build(cfg, plugins=plugins, norm_eval=False, channels_last=True).train()
    fast.load_state_dict(plain.state_dict())
    stem_conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem_conv.weight.is_contiguous(memory_format=torch.channels_last)
    outs_plain, outs_fast = plain(image()), fast(image())
    for a, b in zip(outs_plain, outs_fast):
        assert b.is_contiguous()  # handed back in NCHW for necks, heads and mmcv ops
        # oneDNN's channels-last kernels sum in another order: float32 rounding, not a bug.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    sum(o.square().mean() for o in outs_plain).backward()
    sum(o.square().mean() for o in outs_fast).backward()
    fast_params = dict(fast.named_parameters())
    for name, param in plain.named_parameters():  # relative to each gradient tensor's scale
        scale = param.grad.abs().max().item()
        assert (param.grad - fast_params[name].grad).abs().max().item() <= 1e-3 * scale + 1e-7, name
