"""Official VanillaNet checkpoints, train and deploy form, through the converter and its CLI.

The references are the official implementation's own outputs (tests/data/official): the
stem output, then every block's.
"""
import contextlib
import importlib.util
import io
import os
import subprocess
import sys

import pytest
import torch

from mmbackbones.converters import ConversionError, convert_vanillanet_official
from mmbackbones.converters.vanillanet_official import select_weights
from mmbackbones.models import VanillaNet
from mmbackbones.models.layers import fuse_conv_bn
from tests.numerics import max_abs_diff, parity_tolerance
from tests.paths import OFFICIAL, REPO

ARCH = dict(dims=[32, 64, 128, 256], strides=[2, 2, 2], act_num=3)


TOOL = REPO / 'tools' / 'model_converters' / 'vanillanet_official.py'


def run_tool(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


@pytest.fixture(scope='module')
def cli():
    """The CLI's ``main`` in-process (no interpreter start-up): returns (rc, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location('vanillanet_official_cli', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = module.main([str(a) for a in args])
        return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())
    return run


@pytest.fixture(scope='module')
def official():
    return torch.load(OFFICIAL / 'vanillanet_tiny.pt', weights_only=True)


@pytest.fixture(scope='module')
def official_deploy():
    return torch.load(OFFICIAL / 'vanillanet_tiny_deploy.pt', weights_only=True)


def features(model: VanillaNet, x: torch.Tensor):
    """Stem output, then every block's: the order of the official test vectors."""
    with torch.no_grad():
        return [model.stem(x).contiguous()] + list(model(x))


def classifier(deploy: bool):
    if deploy:
        return {'cls.2.weight': torch.randn(10, 256, 1, 1), 'cls.2.bias': torch.randn(10)}
    return {'cls1.2.weight': torch.randn(10, 256, 1, 1), 'cls1.2.bias': torch.randn(10),
            'cls1.3.weight': torch.rand(10), 'cls1.3.bias': torch.rand(10),
            'cls1.3.running_mean': torch.rand(10), 'cls1.3.running_var': torch.rand(10),
            'cls1.3.num_batches_tracked': torch.tensor(3),
            'cls2.0.weight': torch.randn(10, 10, 1, 1),
            'cls2.0.bias': torch.randn(10)}


def test_train_form_checkpoint_via_cli(official, tmp_path):
    """An official training checkpoint: model_ema is taken over model, the classifier dropped."""
    ema = dict(official['state_dict'], **classifier(deploy=False))
    src, dst = tmp_path / 'checkpoint-best-ema.pth', tmp_path / 'converted.pth'
    torch.save({'model': {k: torch.zeros_like(v) for k, v in ema.items()}, 'model_ema': ema,
                'epoch': 299}, src)
    proc = run_tool(src, dst, '--strides', 2, 2, 2)
    assert proc.returncode == 0, proc.stderr
    assert "from the 'model_ema' entry" in proc.stdout
    assert 'dropped 9 classifier keys' in proc.stdout
    ckpt = torch.load(dst, weights_only=True)
    backbone = dict(ckpt['meta']['backbone'])
    assert backbone == dict(type='VanillaNet', arch=ARCH, deploy=False)
    model = VanillaNet(arch=backbone['arch'], out_indices=(0, 1, 2),
                       init_cfg=dict(type='Pretrained', checkpoint=str(dst), min_loaded_ratio=1.0))
    model.init_weights()
    diff = max_abs_diff(features(model.eval(), official['input']), official['outputs'])
    assert diff < parity_tolerance(model, official['input']), diff


def test_deploy_form_checkpoint_into_a_deploy_model(official_deploy):
    result = convert_vanillanet_official(dict(official_deploy['state_dict'],
                                              **classifier(deploy=True))).check('official')
    assert result.dropped == ['cls.2.weight', 'cls.2.bias']
    model = VanillaNet(arch=ARCH, deploy=True, out_indices=(0, 1, 2)).eval()
    model.load_state_dict(result.state_dict, strict=True)
    diff = max_abs_diff(features(model, official_deploy['input']), official_deploy['outputs'])
    assert diff < parity_tolerance(model, official_deploy['input']), diff


def test_deploy_form_checkpoint_loads_directly_with_its_official_names(official_deploy, tmp_path):
    """Deploy-form key names are the official ones: init_cfg loads the raw official file."""
    path = tmp_path / 'vanillanet_deploy.pth'
    torch.save({'model': dict(official_deploy['state_dict'], **classifier(deploy=True))}, path)
    model = VanillaNet(arch=ARCH, deploy=True, out_indices=(0, 1, 2))
    report = model.load_pretrained(str(path), min_loaded_ratio=1.0)  # what init_cfg calls
    assert report['unexpected'] == ['cls.2.bias', 'cls.2.weight'] and not report['missing']
    diff = max_abs_diff(features(model.eval(), official_deploy['input']),
                        official_deploy['outputs'])
    assert diff < parity_tolerance(model, official_deploy['input']), diff


def test_older_deploy_form_with_a_split_stem_is_merged(official):
    """An earlier official switch_to_deploy kept stem.0 (4x4) and stem.1 (1x1) apart."""
    sd = official['state_dict']

    def bn(prefix):
        norm = torch.nn.BatchNorm2d(sd[prefix + '.weight'].numel(), eps=1e-6)
        norm.load_state_dict({k[len(prefix) + 1:]: v for k, v in sd.items()
                              if k.startswith(prefix + '.')})
        return norm

    def act(prefix):
        return fuse_conv_bn(sd[prefix + '.weight'], None, bn(prefix + '.bn'))

    def conv(prefix):
        return fuse_conv_bn(sd[prefix + '.0.weight'], sd[prefix + '.0.bias'], bn(prefix + '.1'))

    old = {}
    old['stem.0.weight'], old['stem.0.bias'] = conv('stem1')
    old['stem.1.weight'], old['stem.1.bias'] = conv('stem2')
    old['stem.2.weight'], old['stem.2.bias'] = act('stem2.2')
    for i in range(3):
        first, second = conv(f'stages.{i}.conv1'), conv(f'stages.{i}.conv2')
        old[f'stages.{i}.conv.weight'] = torch.einsum('om,mi->oi', second[0][:, :, 0, 0],
                                                      first[0][:, :, 0, 0])[:, :, None, None]
        old[f'stages.{i}.conv.bias'] = second[0][:, :, 0, 0] @ first[1] + second[1]
        old[f'stages.{i}.act.weight'], old[f'stages.{i}.act.bias'] = act(f'stages.{i}.act')
    result = convert_vanillanet_official(old).check('official')
    model = VanillaNet(arch=ARCH, deploy=True, out_indices=(0, 1, 2)).eval()
    model.load_state_dict(result.state_dict, strict=True)
    diff = max_abs_diff(features(model, official['input']), official['outputs'])
    assert diff < parity_tolerance(model, official['input']), diff


def test_cli_deploy_option_reparameterises_a_train_form_source(official, official_deploy,
                                                               tmp_path, cli):
    src, dst = tmp_path / 'src.pth', tmp_path / 'deploy.pth'
    torch.save({'model': official['state_dict']}, src)
    proc = cli(src, dst, '--strides', 2, 2, 2, '--deploy')
    assert proc.returncode == 0, proc.stderr
    assert '(train form) ->' in proc.stdout and '(deploy form)' in proc.stdout
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['backbone']['deploy'] is True
    assert sorted(ckpt['state_dict']) == sorted(official_deploy['state_dict'])
    for key, value in official_deploy['state_dict'].items():  # the official switch_to_deploy's
        torch.testing.assert_close(ckpt['state_dict'][key], value, rtol=1e-5, atol=1e-6)
    model = VanillaNet(arch=ARCH, deploy=True, out_indices=(0, 1, 2),
                       init_cfg=dict(type='Pretrained', checkpoint=str(dst), min_loaded_ratio=1.0))
    model.init_weights()
    assert max_abs_diff(features(model.eval(), official['input']),
                        official['outputs']) < parity_tolerance(model, official['input'])


def test_named_arch_is_inferred_from_the_widths(tmp_path, cli):
    """No --arch/--strides: widths of vanillanet_5 give its strides; the act_num is read off."""
    with torch.device('meta'):
        ours = VanillaNet(arch='vanillanet_5', act_num=4, deploy=True)
    state = {k: torch.zeros(v.shape) for k, v in ours.state_dict().items()}
    src, dst = tmp_path / 'v5.pth', tmp_path / 'out.pth'
    torch.save({'model': state}, src)
    proc = cli(src, dst)
    assert proc.returncode == 0, proc.stderr
    assert 'strides of vanillanet_5 assumed' in proc.stdout
    backbone = torch.load(dst, weights_only=True)['meta']['backbone']
    assert backbone['arch'] == dict(dims=[512, 1024, 2048, 4096], strides=[2, 2, 2], act_num=4)
    proc = cli(src, tmp_path / 'x.pth', '--arch', 'vanillanet_7')
    assert proc.returncode == 1
    assert "widths [512, 1024, 2048, 4096], arch 'vanillanet_7' has [512, 512" in proc.stderr


def test_unused_or_missing_keys_are_refused_and_nothing_is_written(official, tmp_path, cli):
    state = dict(official['state_dict'])
    state['stages.1.mystery.weight'] = torch.zeros(3)
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save(state, src)
    proc = cli(src, dst, '--strides', 2, 2, 2)
    assert proc.returncode == 1
    assert '1 checkpoint keys match no conversion rule, e.g. stages.1.mystery.weight' in proc.stderr
    assert not dst.exists() and os.listdir(tmp_path) == ['src.pth']

    state = dict(official['state_dict'])
    del state['stages.2.conv2.1.running_var']
    torch.save(state, src)
    proc = cli(src, dst, '--strides', 2, 2, 2)
    assert proc.returncode == 1
    assert 'do not fill the target model exactly: missing (1): stages.2.conv2.bn.running_var' \
        in proc.stderr
    assert not dst.exists()
    proc = cli(src, dst, '--strides', 2, 2, 2, '--allow-partial')
    assert proc.returncode == 0, proc.stderr


def test_weight_entry_selection(official):
    sd = official['state_dict']
    assert select_weights({'model': sd, 'model_ema': {}})[1] == 'model_ema'
    assert select_weights({'model': sd})[1] == 'model'
    assert select_weights(sd)[1] == 'state dict'
    with pytest.raises(ConversionError, match=r"no 'model_ema' entry; it has \['model'\]"):
        select_weights({'model': sd}, 'model_ema')
