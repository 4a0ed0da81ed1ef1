"""MogaNet: the reference parameter counts, the mmdet arguments the official code ignored,
attn_force_fp32, drop_path, the optimiser settings of the configs, and clear errors.

Official numerical parity (through the converter) is in tests/converters/test_moganet_converter.py.
"""
import re

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.models import MogaNet
from mmbackbones.models.layers import MogaBlock, MultiOrderDWConv
from tests.paths import REPO

init_default_scope('mmdet')

TINY = dict(embed_dims=[16, 16, 24, 32], depths=[1, 1, 2, 1], ffn_ratios=[2, 2, 2, 2])
IMG = (1, 3, 67, 93)

#: Backbone-only parameter counts (millions, two decimals) from
#: shared/reference/architectures.md section 3(e), "Backbone-only"; the same section's
#: classification-model counts add the 1000-class head (Linear(C_last, 1000)).
REFERENCE_M = {'xtiny': (2.76, 2.96), 'tiny': (4.94, 5.20), 'small': (24.82, 25.34),
               'base': (43.21, 43.72), 'large': (81.84, 82.48), 'xlarge': (180.03, 180.99)}


def image(seed: int = 0) -> torch.Tensor:
    return torch.randn(*IMG, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('arch', list(REFERENCE_M))
def test_param_counts_match_the_reference(arch):
    with torch.device('meta'):
        model = MogaNet(arch=arch)
    count = sum(p.numel() for p in model.parameters())
    head = model.arch['embed_dims'][-1] * 1000 + 1000
    backbone_m, classifier_m = REFERENCE_M[arch]
    assert round(count / 1e6, 2) == backbone_m
    assert round((count + head) / 1e6, 2) == classifier_m
    assert model.out_channels == tuple(model.arch['embed_dims'])
    assert model.out_strides == (4, 8, 16, 32)


def test_official_arch_names_are_accepted():
    with torch.device('meta'):
        for alias, name in [('x-tiny', 'xtiny'), ('xt', 'xtiny'), ('t', 'tiny'), ('S', 'small')]:
            assert MogaNet(arch=alias).arch == MogaNet(arch=name).arch


def test_official_detection_config_arguments_are_honoured():
    """The official base config's intent: frozen_stages=1, norm_eval=True, and (ours) strides
    8/16/32 only. Every one changes the model."""
    model = MODELS.build(dict(type='MogaNet', arch=TINY, out_indices=(1, 2, 3), frozen_stages=1,
                              norm_eval=True)).train()
    outs = model(image())
    assert [o.shape[1] for o in outs] == [16, 24, 32] and model.out_strides == (8, 16, 32)
    frozen = list(model.stem.parameters()) + list(model.stages[0].parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in model.stages[1].parameters())
    assert not model.stem.training and not model.stages[0].training
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    # The official configs' own key names are not silently swallowed.
    for key in ('stem_norm_cfg', 'conv_norm_cfg'):
        with pytest.raises(TypeError, match=key):
            MODELS.build(dict(type='MogaNet', arch=TINY, **{key: dict(type='BN')}))


def _norm_types(model):
    convs = [m.norm for m in model.modules() if hasattr(m, 'norm') and hasattr(m, 'conv')]
    blocks = [n for b in model.modules() if isinstance(b, MogaBlock) for n in (b.norm1, b.norm2)]
    outs = [stage.norm for stage in model.stages]
    return ({type(n) for n in convs}, {type(n) for n in blocks}, {type(n) for n in outs})


def test_norm_cfg_and_out_norm_cfg():
    """norm_cfg covers the conv and block norms (official conv_norm_type); out_norm_cfg the
    stage-output norms (official stem_norm_type), defaulting to norm_cfg."""
    gn = dict(type='GN', num_groups=4)
    model = MogaNet(arch=TINY, norm_cfg=gn)
    assert _norm_types(model) == ({nn.GroupNorm}, {nn.GroupNorm}, {nn.GroupNorm})
    model = MogaNet(arch=TINY, norm_cfg=gn, out_norm_cfg=dict(type='BN'))
    assert _norm_types(model) == ({nn.GroupNorm}, {nn.GroupNorm}, {nn.BatchNorm2d})
    model = MogaNet(arch=TINY, out_norm_cfg=dict(type='GN', num_groups=8)).eval()
    assert _norm_types(model) == ({nn.BatchNorm2d}, {nn.BatchNorm2d}, {nn.GroupNorm})
    assert len(model(image())) == 4
    with pytest.raises(ValueError,
                       match=r"MogaNet: out_norm_cfg type 'LNx' is not a registered"):
        MogaNet(arch=TINY, out_norm_cfg=dict(type='LNx'))


def _proj_2_dtypes(model, x, **autocast):
    dtypes = []
    hooks = [m.attn.proj_2.register_forward_hook(lambda mod, i, o: dtypes.append(o.dtype))
             for m in model.modules() if isinstance(m, MogaBlock)]
    with torch.autocast('cpu', **autocast):
        outs = model(x)
    for hook in hooks:
        hook.remove()
    return outs, set(dtypes)


def test_attn_force_fp32_under_bf16_autocast():
    plain = MogaNet(arch=TINY, channels_last=False).eval()
    forced = MogaNet(arch=TINY, channels_last=False, attn_force_fp32=True).eval()
    forced.load_state_dict(plain.state_dict())
    x = image()
    with torch.no_grad():
        _, dtypes = _proj_2_dtypes(plain, x, dtype=torch.bfloat16)
        assert dtypes == {torch.bfloat16}
        outs_bf16, dtypes = _proj_2_dtypes(forced, x, dtype=torch.bfloat16)
        assert dtypes == {torch.float32}
        assert all(torch.isfinite(o).all() for o in outs_bf16)
        # Without autocast the option does not change the function.
        for a, b in zip(plain(x), forced(x)):
            assert torch.equal(a, b)
    # It trains under autocast too (gradients reach the gated projection).
    forced.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        sum(o.float().mean() for o in forced(x)).backward()
    assert forced.stages[3].blocks[0].attn.proj_2.weight.grad is not None


def test_drop_path_rates_rise_linearly_over_all_blocks():
    model = MogaNet(arch=TINY, drop_path_rate=0.3, num_stages=2, out_indices=(0, 1))
    blocks = [b for b in model.modules() if isinstance(b, MogaBlock)]
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for b in blocks]
    assert rates == pytest.approx([0., 0.3 / 4])  # 5 blocks in the arch, 2 built
    model = MogaNet(arch=TINY, drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for b in model.modules()
             if isinstance(b, MogaBlock)]
    assert rates == pytest.approx([0., 0.075, 0.15, 0.225, 0.3])
    # Stochastic in training, deterministic in eval.
    model.train()
    torch.manual_seed(0)
    a = model(image())[-1]
    b = model(image())[-1]
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model(image())[-1], model(image())[-1])


def test_multi_order_split_matches_the_paper():
    conv = MultiOrderDWConv(64)
    assert conv.split_channels == [8, 24, 32]
    assert (conv.dw_conv1.dilation, conv.dw_conv1.padding, conv.dw_conv1.kernel_size) == \
        ((2, 2), (4, 4), (5, 5))
    assert (conv.dw_conv2.dilation, conv.dw_conv2.padding, conv.dw_conv2.kernel_size) == \
        ((3, 3), (9, 9), (7, 7))


def test_errors_name_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"arch 'huge' is unknown; choose one of xtiny, tiny, "
                                         r"small, base, large, xlarge"):
        MogaNet(arch='huge')
    with pytest.raises(ValueError, match=r'embed_dims \[12\] are not multiples of '
                                         r'sum\(attn_channel_split\)=8'):
        MogaNet(arch=dict(TINY, embed_dims=[16, 12, 24, 32]))
    with pytest.raises(ValueError, match=r"'ffn_ratios' must be a list of 4 positive numbers"):
        MogaNet(arch=dict(TINY, ffn_ratios=[2, 2, 2]))
    with pytest.raises(ValueError, match='arch dict has missing ffn_ratios'):
        MogaNet(arch=dict(embed_dims=[16], depths=[1]))
    with pytest.raises(ValueError, match=r'dilations must be 3 ints in 1\.\.3'):
        MogaNet(arch=TINY, attn_dilations=(1, 2, 4))
    with pytest.raises(ValueError, match=r'drop_path_rate=1\.5 must be in \[0, 1\)'):
        MogaNet(arch=TINY, drop_path_rate=1.5)


@pytest.mark.parametrize('config', ['retinanet_moganet-xtiny_fpn_1x_coco.py',
                                    'mask-rcnn_moganet-small_fpn_1x_coco.py'])
def test_configs_use_the_official_optimiser_settings(config):
    """AdamW, wd 0.05, and no decay on layer scales, scales and every norm (the stem's BNs,
    named 'bn' by ConvModule, included)."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'moganet' / config))
    lr = 1e-4 if config.startswith('retinanet') else 2e-4
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=lr, betas=(0.9, 0.999),
                                               weight_decay=0.05)
    with torch.device('meta'):
        backbone = MODELS.build(dict(cfg.model.backbone, init_cfg=None))
    wrapper = build_optim_wrapper(nn.ModuleDict(dict(backbone=backbone)), cfg.optim_wrapper)
    decay = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[id(p)] = group['weight_decay']
    checked = 0
    for name, param in backbone.named_parameters():
        if not param.requires_grad:  # frozen_stages=1: not handed to the optimiser at all
            assert name.startswith(('stem.', 'stages.0.')), name
            continue
        module = backbone.get_submodule(name.rsplit('.', 1)[0]) if '.' in name else backbone
        no_decay = (re.search(r'layer_scale_\d$|\.scale$', name)
                    or isinstance(module, (_BatchNorm, nn.GroupNorm)))
        assert decay[id(param)] == (0. if no_decay else 0.05), name
        checked += bool(no_decay)
    assert checked > 0
