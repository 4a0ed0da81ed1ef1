"""tools/analysis/get_flops.py against an independent count.

The reference counts come from forward hooks, not from mmengine: a conv costs
``output elements * in_channels / groups * kh * kw`` multiply-adds, a BatchNorm (eval) one
operation per input element for the normalisation and one for the affine transform, and the
parameter count is ``sum(p.numel())``.
"""
import re

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.models.layers import bn_folding

from tests.models.backbones.test_conventions import TINY_VOVNET


def hook_counts(model: nn.Module, run) -> dict:
    counts = dict(conv=0, batch_norm=0)

    def conv_hook(module, inputs, output):
        kh, kw = module.kernel_size
        counts['conv'] += output.numel() * (module.in_channels // module.groups) * kh * kw

    def bn_hook(module, inputs, output):
        counts['batch_norm'] += inputs[0].numel() * (2 if module.affine else 1)

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(bn_hook) for m in model.modules()
              if isinstance(m, _BatchNorm)]
    with torch.no_grad(), bn_folding(False):  # count the conv and BN modules as written
        run()
    for hook in hooks:
        hook.remove()
    return counts


@pytest.fixture(scope='module')
def get_flops(load_tool):
    return load_tool('analysis/get_flops')


def test_backbone_counts_match_hooks(get_flops):
    result = get_flops.backbone_complexity('VoVNet', TINY_VOVNET, (3, 67, 93))
    init_default_scope('mmdet')
    model = MODELS.build(dict(type='VoVNet', arch=TINY_VOVNET)).eval()
    expected = hook_counts(model, lambda: model(torch.zeros(1, 3, 67, 93)))
    assert result['params'] == sum(p.numel() for p in model.parameters())
    assert result['by_operator']['conv'] == expected['conv']
    assert result['by_operator']['batch_norm'] == expected['batch_norm']
    assert result['flops'] == sum(result['by_operator'].values())
    assert result['out_channels'] == model.out_channels


def _printed(text: str, what: str) -> int:
    match = re.search(rf'^{what}: .*\(([\d,]+)\)', text, re.M)
    assert match, text
    return int(match.group(1).replace(',', ''))


def test_backbone_arch_command_line(get_flops, capsys):
    assert get_flops.main(['--backbone', 'ShuffleNetV2', '--arch', 'x0_5', '--shape', '3', '67',
                           '93']) == 0
    out = capsys.readouterr().out
    init_default_scope('mmdet')
    model = MODELS.build(dict(type='ShuffleNetV2', arch='x0_5')).eval()
    expected = hook_counts(model, lambda: model(torch.zeros(1, 3, 67, 93)))
    assert _printed(out, 'Params') == sum(p.numel() for p in model.parameters())
    # ShuffleNetV2 has max-pooling and channel shuffles too, which mmengine counts as zero.
    assert _printed(out, 'FLOPs') == expected['conv'] + expected['batch_norm']
    assert 'Input shape: (1, 3, 67, 93)' in out


def test_detector_config_without_a_dataset(get_flops, tiny_config, capsys):
    assert get_flops.main([tiny_config, '--shape', '96', '128']) == 0
    out = capsys.readouterr().out
    cfg = Config.fromfile(tiny_config)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model).eval()
    x = torch.zeros(1, 3, 96, 128)  # 96x128 is already a multiple of the size divisor
    expected = hook_counts(model, lambda: model(x, mode='tensor'))
    assert _printed(out, 'Params') == sum(p.numel() for p in model.parameters())
    assert 'Input shape: (1, 3, 96, 128)' in out
    conv = re.search(r'FLOPs by operator: .*conv ([\d.]+) M', out)
    assert conv and abs(float(conv.group(1)) * 1e6 - expected['conv']) < 0.006e6, out
    assert _printed(out, 'FLOPs') >= expected['conv'] + expected['batch_norm']


def test_argument_errors(get_flops, capsys):
    with pytest.raises(SystemExit):
        get_flops.main([])
    assert 'give either a config file or --backbone' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        get_flops.main(['--backbone', 'VoVNet', '--shape', '1', '2', '3', '4'])
    assert '--shape for a backbone takes C H W' in capsys.readouterr().err


def test_rtdetr_detector_counts_match_hooks(get_flops, tiny_rtdetr_config, capsys):
    """A DETR head: convs and BN as above; linear layers as ``output elements * in_features``,
    plus the input and output projections of every ``nn.MultiheadAttention`` call (run through
    ``F.linear`` inside it, so no module hook sees them): ``elements of q, k, v and output *
    embed_dim``."""
    result = get_flops.detector_complexity(tiny_rtdetr_config, (96, 128))
    assert result['input_shape'] == (1, 3, 96, 128)
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(tiny_rtdetr_config).model).eval()
    linear = dict(total=0)

    def linear_hook(module, inputs, output):
        linear['total'] += output.numel() * module.in_features

    def attention_hook(module, args, kwargs, output):
        named = dict(zip(('query', 'key', 'value'), args), **kwargs)
        query, key, value = named['query'], named['key'], named['value']
        linear['total'] += (2 * query.numel() + key.numel() + value.numel()) * module.embed_dim

    hooks = [m.register_forward_hook(linear_hook) for m in model.modules()
             if isinstance(m, nn.Linear)]
    hooks += [m.register_forward_hook(attention_hook, with_kwargs=True) for m in model.modules()
              if isinstance(m, nn.MultiheadAttention)]
    expected = hook_counts(model, lambda: model(torch.zeros(1, 3, 96, 128), mode='tensor'))
    for hook in hooks:
        hook.remove()
    assert result['params'] == sum(p.numel() for p in model.parameters())
    assert result['by_operator']['conv'] == expected['conv']
    assert result['by_operator']['batch_norm'] == expected['batch_norm']
    assert result['by_operator']['linear'] == linear['total']
    assert result['flops'] == sum(result['by_operator'].values())
