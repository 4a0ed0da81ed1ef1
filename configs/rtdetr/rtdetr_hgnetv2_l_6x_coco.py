# RT-DETR-L: PP-HGNetV2-L (frozen stem, frozen BN), hybrid encoder 256 wide (feed-forward 1024,
# CSP expansion 1.0), 6 decoder layers; the official setting (rtdetr_paddle
# rtdetr_hgnetv2_l_6x_coco.yml, and RT-DETRv2's rtdetrv2_hgnetv2_l_6x_coco.yml:
# arch L, return_idx [1, 2, 3], freeze_at 0 (stem), freeze_norm, backbone lr 5e-6 = 0.05 x).
# Otherwise the R50 recipe (_base_/rtdetr_6x_coco.py).
# Published (lyuwenyu/RT-DETR README, COCO val2017, 640x640): AP 53.0, AP50 71.6, 32M params,
# 110 GFLOPs, 114 FPS (T4, TensorRT FP16).
#
# Backbone weights: mmbackbones://hgnetv2/L (lyuwenyu/RT-DETR, Apache-2.0; PaddleClas SSLD
# ImageNet weights), downloaded once, checked and converted on first use (`python
# tools/fetch_weights.py hgnetv2/L` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='HGNetV2', arch='L', out_indices=(1, 2, 3), frozen_stages=0,
        freeze_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://hgnetv2/L')),
    neck=dict(in_channels=[512, 1024, 2048]))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.05)}))
