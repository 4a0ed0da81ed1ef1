# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RTDETRHead pieces the test vector does not reach: the anchor valid mask at a real input size,
extra levels, eval_idx, learned queries."""
import math

import pytest
import torch

from mmbackbones.models.rtdetr import RTDETRHead


def tiny_head(**kwargs):
    args = dict(num_classes=3, in_channels=[16, 16], num_levels=2, embed_dims=16, num_heads=2,
                num_queries=5, num_decoder_layers=3, feedforward_channels=32, num_denoising=0)
    args.update(kwargs)
    torch.manual_seed(0)
    head = RTDETRHead(**args)
    head.init_weights()
    return head


def test_anchor_valid_mask_at_640():
    # 640 input: cell centres 0.5 / 80 = 0.00625 < eps 0.01 at stride 8, so its border ring
    # (80^2 - 78^2 = 316 cells) is invalid; at stride 16 (0.5 / 40 = 0.0125) and 32 all valid
    head = tiny_head()
    anchors, valid = head.anchors([(80, 80), (40, 40), (20, 20)])
    assert anchors.shape == (1, 6400 + 1600 + 400, 4)
    assert (~valid).sum() == 316 and not (~valid[0, 6400:]).any()
    assert torch.isinf(anchors[~valid[..., 0]]).all()
    # a valid anchor is the logit of (centre, 0.05 * 2 ** level)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert torch.allclose(anchors[0, 6400], torch.tensor(
        [logit(0.5 / 40), logit(0.5 / 40), logit(0.1), logit(0.1)]), atol=1e-6)


def test_extra_level_eval_idx_and_learnt_queries():
    head = tiny_head(num_levels=3, eval_idx=1, learnt_init_query=True).eval()
    assert len(head.input_proj) == 3 and head.input_proj[2].conv.stride == (2, 2)
    feats = [torch.randn(2, 16, 8, 6), torch.randn(2, 16, 4, 3)]
    with torch.no_grad():
        out = head.forward_transformer(feats)
    assert out['logits'].shape == (1, 2, 5, 3)  # only the eval_idx layer in eval mode
    head.train()
    out = head.forward_transformer(feats)
    assert out['logits'].shape == (3, 2, 5, 3) and out['enc_boxes'].shape == (2, 5, 4)
    # the learned query embedding is used: it receives a gradient
    out['logits'].sum().backward()
    assert head.tgt_embed.weight.grad is not None


def test_eval_idx_selects_that_layer():
    head = tiny_head(eval_idx=0)
    feats = [torch.randn(1, 16, 8, 6), torch.randn(1, 16, 4, 3)]
    head.train()
    for proj in head.input_proj:  # the same BatchNorm statistics in both runs
        proj.eval()
    with torch.no_grad():
        all_layers = head.forward_transformer(feats)
        head.eval()
        first = head.forward_transformer(feats)
    assert torch.allclose(first['logits'][0], all_layers['logits'][0], atol=1e-6)
    assert torch.allclose(first['boxes'][0], all_layers['boxes'][0], atol=1e-6)


def test_wrong_number_of_features():
    with pytest.raises(ValueError, match='got 1 feature maps'):
        tiny_head()([torch.randn(1, 16, 8, 8)])
