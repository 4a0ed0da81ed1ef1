# RT-DETR-X: PP-HGNetV2-X (frozen stem, frozen BN), hybrid encoder 384 wide with feed-forward
# 2048 (CSP expansion 1.0), 6 decoder layers at 256; the official setting (rtdetr_paddle
# rtdetr_hgnetv2_x_6x_coco.yml, and RT-DETRv2's rtdetrv2_hgnetv2_x_6x_coco.yml:
# arch X, return_idx [1, 2, 3], freeze_at 0 (stem), freeze_norm, encoder hidden_dim 384 and
# dim_feedforward 2048, decoder feat_channels 384, backbone lr 1e-6 = 0.01 x). Otherwise the
# R50 recipe (_base_/rtdetr_6x_coco.py).
# Published (lyuwenyu/RT-DETR README, COCO val2017, 640x640): AP 54.8, AP50 73.1, 67M params,
# 234 GFLOPs, 74 FPS (T4, TensorRT FP16).
#
# Backbone weights: mmbackbones://hgnetv2/X (lyuwenyu/RT-DETR, Apache-2.0; PaddleClas SSLD
# ImageNet weights), downloaded once, checked and converted on first use (`python
# tools/fetch_weights.py hgnetv2/X` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='HGNetV2', arch='X', out_indices=(1, 2, 3), frozen_stages=0,
        freeze_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://hgnetv2/X')),
    neck=dict(in_channels=[512, 1024, 2048], hidden_dim=384, dim_feedforward=2048),
    bbox_head=dict(in_channels=[384, 384, 384]))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.01)}))
