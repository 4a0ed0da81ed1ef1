# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The eval-mode encoder + decoder exports to ONNX (opset 17) and onnxruntime reproduces the
official test vector's outputs."""
import warnings

import onnxruntime as ort
import torch
from torch import nn

from tests.rtdetr.test_rtdetr_parity import OFFICIAL, build, rewind_batch_norm_update


class EncoderDecoder(nn.Module):

    def __init__(self, neck, head):
        super().__init__()
        self.neck, self.head = neck, head

    def forward(self, c3, c4, c5):
        return self.head(self.neck([c3, c4, c5]))


def test_onnx_export_matches_official(tmp_path):
    vector = torch.load(OFFICIAL / 'rtdetr_tiny.pt', map_location='cpu', weights_only=True)
    neck, head, _ = build(vector)
    head.dn.num_denoising = 0
    rewind_batch_norm_update(neck, head, vector['feats'])  # see test_rtdetr_parity
    model = EncoderDecoder(neck, head).eval()
    path = tmp_path / 'rtdetr_tiny.onnx'
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, tuple(vector['feats']), str(path), opset_version=17,
                          input_names=['c3', 'c4', 'c5'], output_names=['logits', 'boxes'],
                          dynamo=False)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    logits, boxes = session.run(None, {n: f.numpy() for n, f in
                                       zip(['c3', 'c4', 'c5'], vector['feats'])})
    assert abs(torch.from_numpy(logits) - vector['pred_logits']).max() < 1e-4
    assert abs(torch.from_numpy(boxes) - vector['pred_boxes']).max() < 1e-4
