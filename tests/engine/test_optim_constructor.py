# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RTDETROptimWrapperConstructor on a hand-made module: custom keys and norm_decay_mult
compose on norms, biases under a key keep the key's decay, frozen parameters stay out, and
mmengine's default constructor (which this one fixes) gives a keyed norm the full decay."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper
from torch import nn

import mmbackbones  # noqa: F401  (registers the constructor)

LR, WD = 1e-3, 1e-2


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.SyncBatchNorm(4), nn.Conv2d(4, 4, 1))
        self.backbone.scale = nn.Parameter(torch.ones(4))
        self.backbone[3].requires_grad_(False)  # a frozen stage
        self.head = nn.Sequential(nn.Linear(4, 2), nn.GroupNorm(1, 2), nn.LayerNorm(2))


def groups_by_name(model, constructor):
    cfg = dict(type='OptimWrapper', constructor=constructor,
               optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
               paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1),
                                               'backbone.2.': dict(lr_mult=0.1, decay_mult=0.2),
                                               'backbone.scale': dict(decay_mult=0.0)},
                                  norm_decay_mult=0.5, bias_decay_mult=0.0))
    optim = build_optim_wrapper(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g['lr'], g['weight_decay'])
            for g in optim.optimizer.param_groups for p in g['params']}


def test_custom_keys_and_norm_decay_compose():
    got = groups_by_name(Tiny(), 'RTDETROptimWrapperConstructor')
    expected = {
        'backbone.0.weight': (LR * 0.1, WD),  # conv under 'backbone'
        'backbone.0.bias': (LR * 0.1, WD),  # bias under a key: the key's decay
        'backbone.1.weight': (LR * 0.1, WD * 0.5),  # BN under 'backbone': x norm_decay_mult
        'backbone.1.bias': (LR * 0.1, WD * 0.5),
        'backbone.2.weight': (LR * 0.1, WD * 0.2 * 0.5),  # SyncBN: key decay_mult x norm mult
        'backbone.2.bias': (LR * 0.1, WD * 0.2 * 0.5),
        'backbone.scale': (LR, 0.0),  # its own key (no lr_mult), not a norm
        'head.0.weight': (LR, WD),
        'head.0.bias': (LR, 0.0),  # no key: bias_decay_mult
        'head.1.weight': (LR, WD * 0.5),  # GroupNorm, no key: norm_decay_mult
        'head.1.bias': (LR, WD * 0.5),
        'head.2.weight': (LR, WD * 0.5),  # LayerNorm, no key
        'head.2.bias': (LR, WD * 0.5),
    }  # backbone.3 is frozen: not in the optimizer
    assert got.keys() == expected.keys()
    for name, (lr, wd) in expected.items():
        assert got[name] == (pytest.approx(lr), pytest.approx(wd)), name


def test_default_constructor_decays_keyed_norms():
    """What the constructor is for: mmengine's default lets the 'backbone' key replace
    norm_decay_mult, so the backbone's BN gets the full weight decay."""
    got = groups_by_name(Tiny(), 'DefaultOptimWrapperConstructor')
    assert got['backbone.1.weight'] == (pytest.approx(LR * 0.1), pytest.approx(WD))
    assert got['backbone.2.weight'] == (pytest.approx(LR * 0.1), pytest.approx(WD * 0.2))
    assert got['head.1.weight'] == (pytest.approx(LR), pytest.approx(WD * 0.5))
