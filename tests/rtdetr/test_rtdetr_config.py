# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The tiny RT-DETR demo config runs a training step (denoising on) and inference through
mmdet's data structures; inconsistent configs fail with clear errors. (Every config in
configs/rtdetr/ trains a step in test_rtdetr_configs.py.)"""
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmbackbones  # noqa: F401
from mmbackbones.engine.launch import UsageError, check_neck_in_channels
from tests.paths import REPO

CONFIGS = REPO / 'configs' / 'rtdetr'
DEMO = CONFIGS / 'rtdetr_vovnet-19-slim-dw-ese_demo.py'


def samples(n=2, hw=(128, 96), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        s = DetDataSample(metainfo=dict(img_shape=hw, ori_shape=hw, scale_factor=(1.0, 1.0),
                                        pad_shape=hw, batch_input_shape=hw))
        xy = torch.rand(i + 2, 2, generator=g) * 40
        s.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + 20 + 20 * torch.rand(
            i + 2, 2, generator=g)], 1), labels=torch.randint(0, 6, (i + 2, ), generator=g))
        out.append(s)
    return out


def build(cfg):
    init_default_scope('mmdet')
    return MODELS.build(cfg)


def test_demo_config_trains_one_step_and_predicts():
    torch.manual_seed(0)
    cfg = Config.fromfile(str(DEMO))
    model = build(cfg.model)
    model.init_weights()
    model.train()
    inputs = torch.rand(2, 3, 128, 96) * 255
    data = model.data_preprocessor(dict(inputs=list(inputs), data_samples=samples()), True)
    losses = model(**data, mode='loss')
    assert any(k.startswith('dn.d2.') for k in losses) and 'enc.loss_vfl' in losses
    assert 'd1.loss_giou' in losses and 'loss_vfl' in losses
    parsed, _ = model.parse_losses(losses)
    parsed.backward()
    assert all(torch.isfinite(v).all() for v in losses.values())
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(inputs), data_samples=samples()), False)
        results = model(**data, mode='predict')
    assert len(results[0].pred_instances) == 50
    assert results[0].pred_instances.bboxes.shape == (50, 4)


def test_encoder_in_channels_checked_at_config_load():
    cfg = Config.fromfile(str(DEMO))
    cfg.model.neck.in_channels = [64, 128, 256]
    with pytest.raises(UsageError, match=r'in_channels=\[256, 384, 512\]'):
        check_neck_in_channels(cfg)
    with pytest.raises(ValueError, match=r'set model.neck.in_channels=\[256, 384, 512\]'):
        build(cfg.model)


@pytest.mark.parametrize('change,words', [
    (dict(neck=dict(hidden_dim=66)), ['hidden_dim=66', 'nhead=4']),
    (dict(bbox_head=dict(num_heads=6)), ['embed_dims=64', 'num_heads=6']),
    (dict(bbox_head=dict(eval_idx=3)), ['eval_idx=3', '-3..2']),
    (dict(bbox_head=dict(num_levels=2)), ['3 input levels', 'num_levels=2']),
    (dict(bbox_head=dict(in_channels=[64, 64, 32])), ['bbox_head in_channels=[64, 64, 32]']),
])
def test_inconsistent_configs_fail_clearly(change, words):
    cfg = copy.deepcopy(Config.fromfile(str(DEMO)).model)
    for part, values in change.items():
        cfg[part].update(values)
    with pytest.raises(ValueError) as err:
        build(cfg)
    for word in words:
        assert word in str(err.value)
