"""YOLOv8CSPDarknet: exactness against ultralytics for every scale, scaling rules, stems."""
import pytest
import torch
from ultralytics.nn.tasks import DetectionModel

from mmbackbones.converters import convert_ultralytics_yolov8
from mmbackbones.models import YOLOv8CSPDarknet, get_feature_info
from mmbackbones.models.layers import Focus, bn_folding
from tests.numerics import (assert_parity, max_abs_diff, num_params, parity_tolerance,
                            randomize)

# Reference table (architectures.md section 5): widths stem/P2..P5, C2f repeats, params of
# layers 0-9.
REFERENCE = {
    'n': ((16, 32, 64, 128, 256), (1, 2, 2, 1), 1_272_656),
    's': ((32, 64, 128, 256, 512), (1, 2, 2, 1), 5_079_712),
    'm': ((48, 96, 192, 384, 576), (2, 4, 4, 2), 11_855_856),
    'l': ((64, 128, 256, 512, 512), (3, 6, 6, 3), 19_808_576),
    'x': ((80, 160, 320, 640, 640), (3, 6, 6, 3), 30_943_120),
}


def ultralytics_p3_p4_p5(detector: DetectionModel, x: torch.Tensor):
    """Layers 0-9 of a DetectionModel; the neck reads layers 4, 6 and 9."""
    outs = []
    for i, layer in enumerate(detector.model[:10]):
        x = layer(x)
        if i in (4, 6, 9):
            outs.append(x)
    return outs


@pytest.mark.parametrize('scale', list(REFERENCE))
def test_parity_with_ultralytics(scale):
    detector = randomize(DetectionModel(f'yolov8{scale}.yaml', verbose=False), seed=3).eval()
    result = convert_ultralytics_yolov8(detector.state_dict()).check('ultralytics')
    assert result.dropped and all(int(k.split('.')[1]) >= 10 for k in result.dropped)
    # NCHW, the reference's layout: the same kernels, so the diff measures the architecture.
    model = YOLOv8CSPDarknet(arch=scale, channels_last=False).eval()
    model.load_state_dict(result.state_dict, strict=True)
    assert num_params(model) == num_params(detector.model[:10]) == REFERENCE[scale][2]
    x = torch.randn(1, 3, 67, 93, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours, ref = model(x), ultralytics_p3_p4_p5(detector, x)
        assert [o.shape[1] for o in ours] == list(REFERENCE[scale][0][2:])
        assert_parity(model, x, ref)
    # The default channels-last layout sums in another order: float32 rounding relative to the
    # activations, which grow to O(100) through l/x with random weights (parity_tolerance).
    fast = YOLOv8CSPDarknet(arch=scale).eval()
    fast.load_state_dict(result.state_dict, strict=True)
    with torch.no_grad():
        assert max_abs_diff(fast(x), ref) < parity_tolerance(fast, x)


@pytest.mark.parametrize('scale', list(REFERENCE))
def test_widths_repeats_and_params_match_the_reference_table(scale):
    widths, repeats, params = REFERENCE[scale]
    with torch.device('meta'):
        model = YOLOv8CSPDarknet(arch=scale, out_indices=(0, 1, 2, 3))
    assert (model.stem_channels, *model.stage_channels) == widths
    assert tuple(model.stage_blocks) == repeats
    assert [len(stage[1].blocks) for stage in model.stages] == list(repeats)
    assert num_params(model) == params
    assert model.out_strides == (4, 8, 16, 32)


def test_default_out_indices_are_p3_p4_p5_and_bn_follows_ultralytics():
    model = YOLOv8CSPDarknet(arch='n')
    assert model.out_indices == (1, 2, 3) and model.out_strides == (8, 16, 32)
    assert get_feature_info(dict(type='YOLOv8CSPDarknet', arch='m')) == ((192, 384, 576),
                                                                         (8, 16, 32))
    bn = model.stem[0].bn
    assert (bn.eps, bn.momentum) == (1e-3, 0.03)
    assert isinstance(model.stages[3][2].pool, torch.nn.MaxPool2d)
    assert model.stages[3][2].pool.kernel_size == 5


def test_custom_dict_takes_the_scale_path():
    named = YOLOv8CSPDarknet(arch='m')
    custom = YOLOv8CSPDarknet(arch=dict(deepen_factor=0.67, widen_factor=0.75,
                                        last_stage_channels=768, stage_blocks=[3, 6, 6, 3]))
    assert {k: v.shape for k, v in named.state_dict().items()} == \
        {k: v.shape for k, v in custom.state_dict().items()}
    # a narrower, shallower variant: widths make_divisible(c * 0.1, 8), repeats round(n * 0.5)
    small = YOLOv8CSPDarknet(arch=dict(deepen_factor=0.5, widen_factor=0.1,
                                       last_stage_channels=1024, stage_blocks=[2, 5, 1, 4]),
                             out_indices=(0, 1, 2, 3))
    assert (small.stem_channels, *small.stage_channels) == (8, 16, 32, 56, 104)
    assert small.stage_blocks == [1, 2, 1, 2]  # round(2.5) == 2: Python's banker's rounding


def test_focus_stem_slices_in_yolov5_order():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 14)
    focus = randomize(Focus(3, 8, 3, norm_cfg=dict(type='BN'), act_cfg=dict(type='SiLU')),
                      seed=1).eval()
    # YOLOv5's Focus, written out: top-left, bottom-left, top-right, bottom-right pixels
    expected = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                          x[..., 1::2, 1::2]], dim=1)
    assert torch.equal(Focus.space_to_depth(x), expected)
    assert torch.equal(Focus.space_to_depth(x)[0, 3:6, 2, 3], x[0, :, 5, 6])  # row 1::2, col ::2
    odd = torch.randn(1, 3, 5, 7)  # zero-padded at the bottom / right: ceil(5/2) x ceil(7/2)
    padded = torch.nn.functional.pad(odd, (0, 1, 0, 1))
    assert torch.equal(Focus.space_to_depth(odd), Focus.space_to_depth(padded))
    assert Focus.space_to_depth(odd).shape == (1, 12, 3, 4)
    with torch.no_grad(), bn_folding(False):  # the unfolded conv -> BN -> SiLU, bit for bit
        conv = focus.conv
        direct = torch.nn.functional.silu(conv.bn(conv.conv(expected)))
        assert torch.equal(focus(x), direct)


def test_focus_stem_keeps_strides_and_channels():
    conv = YOLOv8CSPDarknet(arch='n', out_indices=(0, 1, 2, 3)).eval()
    focus = YOLOv8CSPDarknet(arch='n', stem_type='focus', out_indices=(0, 1, 2, 3)).eval()
    assert focus.stem[0].conv.conv.weight.shape == (16, 12, 3, 3)
    x = torch.randn(1, 3, 67, 93)
    with torch.no_grad():
        for a, b in zip(conv(x), focus(x)):
            assert a.shape == b.shape


def test_use_depthwise_makes_3x3_convs_separable():
    dense = YOLOv8CSPDarknet(arch='n')
    light = YOLOv8CSPDarknet(arch='n', use_depthwise=True)
    assert num_params(light) < 0.5 * num_params(dense)
    down = light.stages[1][0]
    assert down.depthwise_conv.conv.groups == 32 and down.depthwise_conv.conv.stride == (2, 2)
    block = light.stages[1][1].blocks[0]
    assert block.conv1.depthwise_conv.conv.groups == block.conv1.pointwise_conv.conv.in_channels
    assert light.stem[0].conv.groups == 1  # the stem stays dense
    outs = light.eval()(torch.randn(1, 3, 67, 93))
    assert [o.shape[1] for o in outs] == [64, 128, 256]


def test_errors_name_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"arch 'xl' is unknown; choose one of n, s, m, l, x, or "
                                         r'pass a dict with keys deepen_factor, widen_factor'):
        YOLOv8CSPDarknet(arch='xl')
    with pytest.raises(ValueError, match=r'arch dict has missing last_stage_channels'):
        YOLOv8CSPDarknet(arch=dict(deepen_factor=0.33, widen_factor=0.25))
    with pytest.raises(ValueError, match=r"'stage_blocks' must be a list of 4 positive.*6, 6\]"):
        YOLOv8CSPDarknet(arch=dict(deepen_factor=1.0, widen_factor=1.0, last_stage_channels=512,
                                   stage_blocks=[3, 6, 6]))
    with pytest.raises(ValueError, match=r"'widen_factor' must be a positive number, got -1"):
        YOLOv8CSPDarknet(arch=dict(deepen_factor=1.0, widen_factor=-1, last_stage_channels=512))
    with pytest.raises(ValueError, match=r"stem_type 'space' is unknown; choose one of conv, "
                                         r'focus'):
        YOLOv8CSPDarknet(stem_type='space')
    with pytest.raises(ValueError, match=r"norm_cfg type 'BatchNorm9d' is not a registered"):
        YOLOv8CSPDarknet(norm_cfg=dict(type='BatchNorm9d'))
