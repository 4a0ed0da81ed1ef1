"""ShuffleNetV2 from mmpretrain checkpoints: parity with torchvision through mmpretrain's names."""
import re
import subprocess
import sys

import pytest
import torch
import torchvision

from mmbackbones.converters import ConversionError, convert_mmpretrain_shufflenetv2
from mmbackbones.models import ShuffleNetV2
from tests.models.backbones.test_shufflenet_v2 import torchvision_features
from tests.numerics import assert_parity, randomize
from tests.paths import REPO

# torchvision -> mmpretrain names (architectures.md section 4, read off both codebases):
# Sequential indices of each branch -> mmpretrain's ConvModules.
BRANCH1 = {'0': '0.conv', '1': '0.bn', '2': '1.conv', '3': '1.bn'}
BRANCH2 = {'0': '0.conv', '1': '0.bn', '3': '1.conv', '4': '1.bn', '5': '2.conv', '6': '2.bn'}


def to_mmpretrain_key(key: str) -> str:
    if key.startswith('fc.'):
        return 'head.' + key
    if key.startswith('conv1.'):
        _, idx, tail = key.split('.', 2)
        return f'backbone.conv1.{"conv" if idx == "0" else "bn"}.{tail}'
    if key.startswith('conv5.'):
        _, idx, tail = key.split('.', 2)
        return f'backbone.layers.3.{"conv" if idx == "0" else "bn"}.{tail}'
    stage, unit, branch, idx, tail = key.split('.', 4)
    table = BRANCH1 if branch == 'branch1' else BRANCH2
    return f'backbone.layers.{int(stage[-1]) - 2}.{unit}.{branch}.{table[idx]}.{tail}'


@pytest.mark.parametrize('widen_factor, name', [(0.5, 'shufflenet_v2_x0_5'),
                                                (1.0, 'shufflenet_v2_x1_0'),
                                                (2.0, 'shufflenet_v2_x2_0')])
def test_mmpretrain_checkpoint_parity_with_torchvision(widen_factor, name):
    ref = randomize(getattr(torchvision.models, name)(), seed=8).eval()
    mmpretrain_state = {to_mmpretrain_key(k): v for k, v in ref.state_dict().items()}
    result = convert_mmpretrain_shufflenetv2(mmpretrain_state).check('mmpretrain')
    assert result.dropped == ['head.fc.weight', 'head.fc.bias']
    model = ShuffleNetV2(widen_factor=widen_factor, out_indices=(0, 1, 2, 3),
                         channels_last=False).eval()
    model.load_state_dict(result.state_dict, strict=True)
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert_parity(model, x, torchvision_features(ref, x))


def test_mmpretrain_checkpoint_via_cli(tmp_path):
    ref = randomize(torchvision.models.shufflenet_v2_x1_5(), seed=10)
    src, dst = tmp_path / 'mmpretrain.pth', tmp_path / 'ours.pth'
    torch.save({'state_dict': {to_mmpretrain_key(k): v for k, v in ref.state_dict().items()},
                'meta': {}}, src)
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'model_converters' /
                                               'mmpretrain_shufflenetv2.py'), str(src), str(dst)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r'stage_channels.: \[176, 352, 704\]', proc.stdout)
    converted = torch.load(dst, weights_only=True)['state_dict']
    ShuffleNetV2(widen_factor=1.5).load_state_dict(converted, strict=True)


def test_a_torchvision_checkpoint_is_not_taken_for_mmpretrain():
    state = torchvision.models.shufflenet_v2_x0_5().state_dict()
    with pytest.raises(ConversionError, match=r'checkpoint keys match no conversion rule, e\.g\. '
                                              r'conv1\.0\.weight'):
        convert_mmpretrain_shufflenetv2(state).check('mmpretrain')
