# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""HybridEncoder: RepVGG deploy fusion, the position embedding's layout, bad arguments."""
import math

import pytest
import torch

from mmbackbones.models.rtdetr import HybridEncoder, RepVGGBlock, sincos_position_embedding
from tests.numerics import randomize


def test_switch_to_deploy_keeps_outputs():
    neck = HybridEncoder(in_channels=[8, 16, 32], hidden_dim=16, nhead=2, dim_feedforward=32,
                         expansion=1.0, depth_mult=0.67)
    randomize(neck, seed=1)
    neck.eval()
    feats = [torch.randn(2, c, 16 // 2 ** i, 12 // 2 ** i) for i, c in enumerate([8, 16, 32])]
    with torch.no_grad():
        before = neck(feats)
        neck.switch_to_deploy()
        after = neck(feats)
    blocks = [m for m in neck.modules() if isinstance(m, RepVGGBlock)]
    assert len(blocks) == 4 * 2
    assert all(b.conv is not None and not hasattr(b, 'conv1') for b in blocks)
    for x, y in zip(before, after):  # float32 rounding of O(1-10) activations
        assert (x - y).abs().max() < 1e-5 * x.abs().max().clamp(min=1)


def test_position_embedding_follows_the_official_w_major_grid():
    # token k of a row-major (h, w) map: column coordinate k // h, row coordinate k % h
    h, w, dims = 4, 3, 8
    pe = sincos_position_embedding(h, w, dims)[0]
    omega = [1 / 10000 ** (i / 2) for i in range(2)]
    for k in range(h * w):
        a, b = k // h, k % h
        expected = ([math.sin(a * o) for o in omega] + [math.cos(a * o) for o in omega]
                    + [math.sin(b * o) for o in omega] + [math.cos(b * o) for o in omega])
        assert torch.allclose(pe[k], torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize('kwargs,words', [
    (dict(hidden_dim=30, nhead=4), ['hidden_dim=30', 'nhead=4']),
    (dict(use_encoder_idx=[3]), ['use_encoder_idx=[3]', '0..2']),
    (dict(act='swish'), ["act='swish'", 'silu']),
    (dict(feat_strides=[8, 16]), ['feat_strides']),
])
def test_bad_arguments(kwargs, words):
    args = dict(in_channels=[8, 16, 32], hidden_dim=16, nhead=2)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        HybridEncoder(**args)
    for word in words:
        assert word in str(err.value)


def test_wrong_number_of_features():
    neck = HybridEncoder(in_channels=[8, 16, 32], hidden_dim=16, nhead=2)
    with pytest.raises(ValueError, match='got 2 feature maps'):
        neck([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])
