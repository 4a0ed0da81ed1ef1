# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The whole-detector converter on a release-style file: ``ema.module`` holding official-named
PResNet backbone keys plus the official test vector's encoder and decoder."""
import os
import subprocess
import sys

import pytest
import torch

from mmbackbones.converters.rtdetr_detector import build_detector, main
from mmbackbones.models import HGNetV2, PResNet
from tests.converters.test_rtdetr_converters import (HGNETV2_TO_OFFICIAL, PRESNET_TO_OFFICIAL,
                                                     to_official)
from tests.numerics import randomize
from tests.paths import REPO
from tests.rtdetr.test_rtdetr_parity import OFFICIAL, rewind_batch_norm_update

# a PResNet whose stride-8/16/32 channels (16, 32, 64) are those of the vector's encoder
TINY_PRESNET = dict(block='basic', stage_blocks=[1, 1, 1, 1], stem_channels=[8, 8, 16],
                    base_channels=[8, 16, 32, 64])
TINY_HGNET = dict(stem_channels=[8, 8], stage_mid_channels=[8, 8, 12, 12],
                  stage_out_channels=[8, 16, 32, 64], stage_blocks=[1, 1, 1, 1], layer_num=2,
                  use_lab=False)
BACKBONES = {'PResNet': (lambda: PResNet(arch=TINY_PRESNET, out_indices=(1, 2, 3)),
                         PRESNET_TO_OFFICIAL),
             'HGNetV2': (lambda: HGNetV2(arch=TINY_HGNET, out_indices=(1, 2, 3)),
                         HGNETV2_TO_OFFICIAL)}


def make_release(directory, family):
    vector = torch.load(OFFICIAL / 'rtdetr_tiny.pt', map_location='cpu', weights_only=True)
    make, table = BACKBONES[family]
    backbone = randomize(make(), seed=3).eval()
    weights = {f'backbone.{k}': v for k, v in
               to_official(backbone.state_dict(), table).items()}
    weights.update(vector['state_dict'])
    path = directory / 'rtdetr_tiny_from_paddle.pth'
    torch.save({'ema': {'module': weights, 'updates': 1000}, 'last_epoch': 71}, path)
    return path, vector, backbone


@pytest.fixture(scope='module', params=['PResNet', 'HGNetV2'])
def release(request, tmp_path_factory):
    return make_release(tmp_path_factory.mktemp('release'), request.param)


def test_release_file_converts_to_a_detector_with_official_outputs(release, tmp_path, capsys):
    path, vector, backbone = release
    out = tmp_path / 'converted.pth'
    assert main([str(path), str(out), '--nhead', '4', '--num-heads', '4',
                 '--num-queries', '20']) == 0
    assert 'RT-DETR detector: converted' in capsys.readouterr().out
    ckpt = torch.load(out, map_location='cpu', weights_only=True)
    model = build_detector(ckpt['meta']['model'])
    model.load_state_dict(ckpt['state_dict'], strict=True)
    model.eval()
    model.bbox_head.dn.num_denoising = 0
    rewind_batch_norm_update(model.neck, model.bbox_head, vector['feats'])  # see test_rtdetr_parity
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for ours, ref in zip(model.backbone(x), backbone(x)):
            assert (ours - ref).abs().max() < 1e-5
        feats = model.neck(vector['feats'])
        for ours, ref in zip(feats, vector['encoder_outputs']):
            assert (ours - ref).abs().max() < 1e-4
        logits, boxes = model.bbox_head(feats)
    assert (logits - vector['pred_logits']).abs().max() < 1e-4
    assert (boxes - vector['pred_boxes']).abs().max() < 1e-4


def test_unknown_keys_are_refused_and_nothing_is_written(release, tmp_path, capsys):
    path, _, _ = release
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    ckpt['ema']['module']['decoder.extra_head.weight'] = torch.zeros(3)
    bad = tmp_path / 'bad.pth'
    torch.save(ckpt, bad)
    out = tmp_path / 'never.pth'
    assert main([str(bad), str(out), '--nhead', '4', '--num-heads', '4']) == 1
    assert 'decoder.extra_head.weight' in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob('.tmp-*')) == []


def test_wrong_head_count_is_refused(release, tmp_path, capsys):
    path, _, _ = release
    out = tmp_path / 'never.pth'
    # 48 attention weights per query and layer do not split into 5 heads x 3 levels
    assert main([str(path), str(out), '--num-heads', '5']) == 1
    assert 'num_heads=5' in capsys.readouterr().err
    assert not out.exists()


def test_cli_script(tmp_path):
    path, _, _ = make_release(tmp_path, 'PResNet')
    out = tmp_path / 'cli.pth'
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'model_converters' /
                                                 'rtdetr_official_detector.py'),
                           str(path), str(out), '--nhead', '4', '--num-heads', '4'],
                          capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and ' + HybridEncoder(in_channels=[16, 32, 64])' in proc.stdout
