"""ShuffleNetV2: exactness against torchvision for every width, converter, specifics."""
import subprocess
import sys

import pytest
import torch
import torchvision

from mmbackbones.converters import convert_torchvision_shufflenetv2
from mmbackbones.models import ShuffleNetV2
from tests.numerics import assert_parity, num_params, randomize
from tests.paths import REPO

WIDTHS = {0.5: 'shufflenet_v2_x0_5', 1.0: 'shufflenet_v2_x1_0', 1.5: 'shufflenet_v2_x1_5',
          2.0: 'shufflenet_v2_x2_0'}
# torchvision parameter counts without the classifier (reference, verified there numerically)
PARAMS = {0.5: 341_792, 1.0: 1_253_604, 1.5: 2_478_624, 2.0: 5_344_996}


def torchvision_features(model, x):
    x = model.maxpool(model.conv1(x))
    outs = []
    for stage in (model.stage2, model.stage3, model.stage4, model.conv5):
        x = stage(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize('widen_factor', list(WIDTHS))
def test_parity_with_torchvision(widen_factor):
    ref = randomize(getattr(torchvision.models, WIDTHS[widen_factor])(), seed=5).eval()
    result = convert_torchvision_shufflenetv2(ref.state_dict()).check('torchvision')
    assert result.dropped == ['fc.weight', 'fc.bias']
    # NCHW, the reference's layout: the same kernels, so the diff measures the architecture.
    model = ShuffleNetV2(widen_factor=widen_factor, out_indices=(0, 1, 2, 3),
                         channels_last=False).eval()
    model.load_state_dict(result.state_dict, strict=True)
    assert num_params(model) == PARAMS[widen_factor]
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert_parity(model, x, torchvision_features(ref, x))


def test_x2_0_conv5_is_2048_wide():
    assert ShuffleNetV2(widen_factor=2.0, out_indices=(3, )).out_channels == (2048, )
    assert ShuffleNetV2(widen_factor=0.5, out_indices=(0, 1, 2, 3)).out_strides == (8, 16, 32, 32)


def test_frozen_stem_is_really_in_eval_mode():
    model = ShuffleNetV2(frozen_stages=0).train()
    assert not model.stem.training and not model.stem[0].bn.training
    assert all(not p.requires_grad for p in model.stem.parameters())
    assert model.stages[0].training


def test_widen_factor_and_arch_errors():
    with pytest.raises(ValueError, match=r'widen_factor 0.75 is not supported; choose one of '
                                         r'0.5, 1.0, 1.5, 2.0'):
        ShuffleNetV2(widen_factor=0.75)
    with pytest.raises(ValueError, match=r"arch 'x3_0' is unknown; choose one of x0_5, x1_0"):
        ShuffleNetV2(arch='x3_0')
    with pytest.raises(ValueError, match="'stage_channels' must be a list of 3 positive even ints"):
        ShuffleNetV2(arch=dict(stem_channels=8, stage_channels=[16, 25, 32], conv5_channels=48,
                               stage_blocks=[1, 1, 1]))


def test_torchvision_checkpoint_via_cli(tmp_path):
    ref = randomize(torchvision.models.shufflenet_v2_x0_5(), seed=7).eval()
    src, dst = tmp_path / 'tv.pth', tmp_path / 'ours.pth'
    torch.save(ref.state_dict(), src)
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'model_converters' /
                                               'torchvision_shufflenetv2.py'), str(src), str(dst)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert 'dropped 2 non-backbone keys' in proc.stdout
    model = ShuffleNetV2(widen_factor=0.5, out_indices=(0, 1, 2, 3), channels_last=False,
                         init_cfg=dict(type='Pretrained', checkpoint=str(dst), min_loaded_ratio=1.0))
    model.init_weights()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert_parity(model.eval(), x, torchvision_features(ref, x))
