# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
# The tiny tool-test config with an RT-DETR in place of RetinaNet: a 32-wide encoder and decoder,
# 10 queries, 2 decoder layers and contrastive denoising on, so training draws random numbers
# every iteration (the denoising noise). Data paths as in tiny_retinanet.py.
_base_ = './tiny_retinanet.py'

model = dict(
    _delete_=True,
    type='RTDETR',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[0., 0., 0.],
                           std=[255., 255., 255.], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        type='VoVNet',
        arch=dict(stem=[8, 8, 16], stage_conv_ch=[8, 12, 16, 16],
                  stage_out_ch=[16, 24, 32, 32], layer_per_block=2,
                  block_per_stage=[1, 1, 1, 1], eSE=True, dw=False),
        out_indices=(1, 2, 3),
        norm_eval=False),
    neck=dict(type='HybridEncoder', in_channels=[24, 32, 32], hidden_dim=32, nhead=2,
              dim_feedforward=64, expansion=0.5, depth_mult=0.34),
    bbox_head=dict(type='RTDETRHead', num_classes=6, in_channels=[32, 32, 32], embed_dims=32,
                   num_heads=2, num_queries=10, num_decoder_layers=2, feedforward_channels=64,
                   num_denoising=8),
    test_cfg=dict(max_per_img=10))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2))
