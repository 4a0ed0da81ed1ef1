"""HGNetV2: parity with timm's hgnetv2_b0-b6 (RT-DETR's L/X/H are b4/b5/b6), frozen norms, archs."""
import re

import pytest
import timm
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.converters import convert_timm_hgnetv2
from mmbackbones.models import HGNetV2
from mmbackbones.models.backbones.hgnetv2 import HGNETV2_ARCHS
from mmbackbones.models.layers import FrozenBatchNorm2d, LearnableAffine
from tests.numerics import assert_parity, num_params, randomize

# Backbone parameter counts: L/X/H from the reference (official RT-DETR code = timm b4/b5/b6);
# b0-b3 are timm 1.0.31's hgnetv2_b* without the classifier head.
PARAMS = {'L': 13_553_376, 'X': 33_325_760, 'H': 69_013_472, 'b0': 1_850_396, 'b1': 2_197_004,
          'b2': 6_026_626, 'b3': 10_048_910}
TIMM_NAME = {'L': 'hgnetv2_b4', 'X': 'hgnetv2_b5', 'H': 'hgnetv2_b6', 'b0': 'hgnetv2_b0',
             'b1': 'hgnetv2_b1', 'b2': 'hgnetv2_b2', 'b3': 'hgnetv2_b3'}
ODD_INPUT = (1, 3, 97, 131)
SMALL_ODD_INPUT = (1, 3, 67, 93)  # for X and H
NCHW = dict(channels_last=False)  # timm's layout: compare the architecture, not float order


def randomize_hgnet(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random convs and BN (statistics included), and random learnable affine blocks."""
    randomize(model, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ in ('LearnableAffineBlock', 'LearnableAffine'):
                module.scale.copy_(torch.rand(1, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(1, generator=gen) * 0.1)
    return model


def timm_hgnet(arch: str) -> torch.nn.Module:
    return randomize_hgnet(timm.create_model(TIMM_NAME[arch], pretrained=False), seed=5).eval()


@pytest.mark.parametrize('arch,shape', [('L', ODD_INPUT), ('X', SMALL_ODD_INPUT),
                                        ('H', SMALL_ODD_INPUT), ('b0', ODD_INPUT),
                                        ('b1', ODD_INPUT), ('b2', ODD_INPUT), ('b3', ODD_INPUT)])
def test_parity_with_timm(arch, shape):
    """L/X/H equal hgnetv2_b4/b5/b6; b0-b3 (learnable affine blocks) equal timm's too."""
    ref = timm_hgnet(arch)
    result = convert_timm_hgnetv2(ref.state_dict()).check('timm')
    assert result.dropped and all(k.startswith('head.') for k in result.dropped)
    model = HGNetV2(arch=arch, **NCHW).eval()
    model.load_state_dict(result.state_dict, strict=True)
    assert num_params(model) == PARAMS[arch]
    assert HGNetV2.arch_from_state_dict(result.state_dict) == arch
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref_outs = ref.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
        assert_parity(model, x, ref_outs)


def test_timm_features_only_keys_convert_too():
    ref = timm_hgnet('b0')
    feats = timm.create_model('hgnetv2_b0', pretrained=False, features_only=True,
                              out_indices=(0, 1, 2, 3)).eval()  # stage indices, no stem
    flat = {re.sub(r'^stages\.(\d+)\.', r'stages_\1.', k): v for k, v in ref.state_dict().items()
            if not k.startswith('head.')}
    feats.load_state_dict(flat, strict=True)  # features_only flattens stages.N -> stages_N
    state = convert_timm_hgnetv2(feats.state_dict()).check('timm').state_dict
    model = HGNetV2(arch='b0', **NCHW).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(*ODD_INPUT)
    with torch.no_grad():
        assert_parity(model, x, feats(x))


def test_named_archs_param_counts_and_layout():
    with torch.device('meta'):
        for arch, count in PARAMS.items():
            model = HGNetV2(arch=arch)
            assert num_params(model) == count, arch
            labs = [m for m in model.modules() if isinstance(m, LearnableAffine)]
            assert bool(labs) == arch.startswith('b'), arch  # b0-b3 use_lab
            # identity from the second block of a stage on; depthwise downsample in stages 1-3
            for i, stage in enumerate(model.stages):
                blocks = stage.blocks
                assert [b.identity for b in blocks] == [i > 0 for i in range(len(blocks))]
                assert (stage.downsample is not None) == (i > 0)
                if stage.downsample is not None:
                    assert stage.downsample.conv.groups == stage.downsample.conv.in_channels
                    assert not stage.downsample.with_activation
    for alias, arch in (('b4', 'L'), ('b5', 'X'), ('b6', 'H')):
        assert HGNETV2_ARCHS[alias] == HGNETV2_ARCHS[arch]
    model = HGNetV2(arch='L', out_indices=(1, 2, 3))
    assert (model.out_channels, model.out_strides) == ((512, 1024, 2048), (8, 16, 32))


def test_freeze_norm():
    plain = randomize_hgnet(HGNetV2(arch='b0', **NCHW), seed=7).eval()
    frozen = HGNetV2(arch='b0', freeze_norm=True, norm_eval=False, **NCHW)
    assert not any(isinstance(m, _BatchNorm) for m in frozen.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    assert list(frozen.state_dict()) == list(plain.state_dict())
    frozen.load_state_dict(plain.state_dict(), strict=True)
    frozen.train()
    x = torch.randn(*ODD_INPUT)
    with torch.no_grad():
        assert_parity(plain, x, frozen(x))
    assert num_params(frozen) < num_params(plain)
    with pytest.raises(ValueError, match="freeze_norm=True freezes BatchNorm layers"):
        HGNetV2(arch='b0', freeze_norm=True, norm_cfg=dict(type='GN', num_groups=4))


def test_arch_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"arch 'M' is unknown; choose one of L, X, H, b0, .*b6, "
                                         r"or pass a dict with keys stem_channels"):
        HGNetV2(arch='M')
    base = dict(stem_channels=[8, 8], stage_mid_channels=[8, 8], stage_out_channels=[16, 16],
                stage_blocks=[1, 1], layer_num=2)
    with pytest.raises(ValueError, match=r"'kernel_size' must be a list of 2 positive ints \(one "
                                         r"per stage, i\.e\. 2 values for stage_out_channels"):
        HGNetV2(arch=base)  # the 4-stage defaults do not fit a 2-stage arch
    with pytest.raises(ValueError, match=r"'downsample' must be a list of 2 bools \(one per stage"):
        HGNetV2(arch=dict(base, kernel_size=[3, 5]))
    fixed = dict(base, downsample=[False, True], light_block=[False, True], kernel_size=[3, 5])
    model = HGNetV2(arch=fixed, num_stages=2, out_indices=(0, 1))
    assert model.out_strides == (4, 8)
    assert HGNetV2.arch_from_state_dict(model.state_dict()) == dict(fixed, use_lab=False)
    with pytest.raises(ValueError, match=r"'stage_blocks' must be a list of 2 positive ints \(one "
                                         r"per stage"):
        HGNetV2(arch=dict(fixed, stage_blocks=[1, 0]), num_stages=2)
