# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RT-DETR encoder, decoder, post-processing and losses against the official test vector.

``rtdetr_tiny.pt`` holds the official ``HybridEncoder`` + ``RTDETRTransformer`` weights, backbone
features of two 128x96 images and what the official code computed from them (eval outputs,
post-processed detections, every loss term of a train-mode forward with denoising off).
Everything here goes through our converter.

The vector's ``state_dict`` was captured after its train-mode loss forward (every BatchNorm has
``num_batches_tracked == 1``), while its eval outputs were computed before it: its running
statistics are one BatchNorm update (momentum 0.1) past the ones the eval outputs used. The eval
test undoes that update: a train-mode forward on the vector's features gives the batch
statistics (they depend on the weights and the input only, not on the running statistics),
and ``old = (saved - 0.1 * batch) / 0.9``. The losses use batch statistics and need no such step.
"""
import json

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.converters.rtdetr_detector import (convert_rtdetr_detector,
                                                    rtdetr_arch_from_state_dict)
from mmbackbones.models.rtdetr import HybridEncoder, RTDETRHead
from tests.paths import REPO

# the vectors copied into the repository (tests.paths.OFFICIAL once it points there)
OFFICIAL = REPO / 'tests' / 'data' / 'official'

VECTOR = OFFICIAL / 'rtdetr_tiny.pt'
SPEC = OFFICIAL / 'rtdetr_tiny.json'

# official loss key -> ours: the last decoder layer, the first two layers, the encoder top-k
OFFICIAL_LOSS_PREFIX = {'': '', '_aux_0': 'd0.', '_aux_1': 'd1.', '_aux_2': 'enc.'}


@pytest.fixture(scope='module')
def vector():
    return torch.load(VECTOR, map_location='cpu', weights_only=True)


def build(vector):
    """Neck and head built from the json spec and filled, strictly, by the converter."""
    spec = json.loads(SPEC.read_text())
    enc, dec = spec['encoder'], spec['decoder']
    neck = HybridEncoder(in_channels=enc['in_channels'], feat_strides=enc['feat_strides'],
                         hidden_dim=enc['hidden_dim'], nhead=enc['nhead'],
                         dim_feedforward=enc['dim_feedforward'], dropout=enc['dropout'],
                         enc_act=enc['enc_act'], use_encoder_idx=enc['use_encoder_idx'],
                         num_encoder_layers=enc['num_encoder_layers'],
                         pe_temperature=enc['pe_temperature'], expansion=enc['expansion'],
                         depth_mult=enc['depth_mult'], act=enc['act'])
    head = RTDETRHead(num_classes=dec['num_classes'], in_channels=dec['feat_channels'],
                      num_levels=dec['num_levels'], embed_dims=dec['hidden_dim'],
                      num_heads=dec['nhead'], num_points=dec['num_decoder_points'],
                      num_queries=dec['num_queries'],
                      num_decoder_layers=dec['num_decoder_layers'],
                      feedforward_channels=dec['dim_feedforward'], dropout=dec['dropout'],
                      num_denoising=dec['num_denoising'],
                      label_noise_ratio=dec['label_noise_ratio'],
                      box_noise_scale=dec['box_noise_scale'], eval_idx=dec['eval_idx'])
    result = convert_rtdetr_detector(vector['state_dict']).check('test')
    state = result.state_dict
    for prefix, module in (('neck.', neck), ('bbox_head.', head)):
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                if k.startswith(prefix)}, strict=True)
    return neck, head, state


def rewind_batch_norm_update(neck, head, feats):
    """Undo the one running-statistics update of the vector's train forward (see above)."""
    norms = [m for m in [*neck.modules(), *head.modules()] if isinstance(m, _BatchNorm)]
    assert norms and all(int(m.num_batches_tracked) == 1 and m.momentum == 0.1 for m in norms)
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    neck.train(), head.train()
    with torch.no_grad():  # the official train forward: encoder, then the decoder's input_proj
        head.forward_transformer(neck(feats))
    for m, (mean, var) in zip(norms, saved):
        batch_mean = (m.running_mean - 0.9 * mean) / 0.1
        batch_var = (m.running_var - 0.9 * var) / 0.1
        m.running_mean.copy_((mean - 0.1 * batch_mean) / 0.9)
        m.running_var.copy_((var - 0.1 * batch_var) / 0.9)
    neck.eval(), head.eval()


def test_converter_infers_the_vector_arch(vector):
    spec = json.loads(SPEC.read_text())
    _, _, state = build(vector)
    neck_cfg, head_cfg = rtdetr_arch_from_state_dict(state, nhead=4, num_heads=4,
                                                     num_queries=20)
    enc, dec = spec['encoder'], spec['decoder']
    assert neck_cfg['in_channels'] == enc['in_channels']
    assert neck_cfg['hidden_dim'] == enc['hidden_dim']
    assert neck_cfg['use_encoder_idx'] == enc['use_encoder_idx']
    assert neck_cfg['expansion'] == enc['expansion']
    assert neck_cfg['depth_mult'] == enc['depth_mult']
    assert neck_cfg['dim_feedforward'] == enc['dim_feedforward']
    assert head_cfg['num_points'] == dec['num_decoder_points']
    assert head_cfg['num_decoder_layers'] == dec['num_decoder_layers']
    assert head_cfg['num_classes'] == dec['num_classes']
    assert head_cfg['num_denoising'] > 0


def test_eval_outputs_match_official(vector):
    neck, head, _ = build(vector)
    head.dn.num_denoising = 0
    rewind_batch_norm_update(neck, head, vector['feats'])
    with torch.no_grad():
        outs = neck(vector['feats'])
        for ours, ref in zip(outs, vector['encoder_outputs']):
            assert ours.shape == ref.shape
            assert (ours - ref).abs().max() < 1e-4
        logits, boxes = head(outs)
    assert (logits - vector['pred_logits']).abs().max() < 1e-4
    assert (boxes - vector['pred_boxes']).abs().max() < 1e-4

    metas = [dict(img_shape=(int(h), int(w))) for w, h in vector['orig_sizes_wh']]
    results = head.predict_by_feat(logits, boxes, metas, rescale=False)
    for ours, ref in zip(results, vector['post']):
        assert torch.equal(ours.labels, ref['labels'])
        assert (ours.scores - ref['scores']).abs().max() < 1e-4
        assert (ours.bboxes - ref['boxes']).abs().max() < 1e-4


def test_losses_match_official(vector):
    neck, head, _ = build(vector)
    head.dn.num_denoising = 0  # the vector's losses were computed with denoising off
    neck.train(), head.train()
    labels = [t['labels'] for t in vector['targets']]
    boxes = [t['boxes'] for t in vector['targets']]
    losses = head.loss_from_targets(neck(vector['feats']), labels, boxes)
    expected = {}
    for key, value in vector['losses'].items():
        term, suffix = key, ''
        for official in ('_aux_0', '_aux_1', '_aux_2'):
            if key.endswith(official):
                term, suffix = key[:-len(official)], official
        expected[OFFICIAL_LOSS_PREFIX[suffix] + term] = value
    assert set(losses) == set(expected)
    for key, ref in expected.items():
        assert abs(losses[key].item() - ref.item()) <= 1e-4 * abs(ref.item()), key
    total = sum(losses.values())
    total.backward()  # every term is differentiable
    assert head.dec_score_head[0].weight.grad is not None


def test_deploy_form_matches_official(vector):
    neck, head, _ = build(vector)
    head.dn.num_denoising = 0
    rewind_batch_norm_update(neck, head, vector['feats'])
    neck.switch_to_deploy()
    with torch.no_grad():
        for ours, ref in zip(neck(vector['feats']), vector['encoder_outputs']):
            assert (ours - ref).abs().max() < 1e-4
