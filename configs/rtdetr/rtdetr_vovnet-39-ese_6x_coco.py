# RT-DETR with a VoVNetV2-39 (eSE) backbone (stages 2-4, strides 8/16/32) on the official
# RT-DETR-R50 recipe (_base_/rtdetr_6x_coco.py: encoder 256 wide, 6 decoder layers, backbone lr
# x0.1). No published RT-DETR result exists for this backbone.
#
# What to know:
# - The weights were trained with frozen BN in detectron2; BN stays frozen here (requires_grad
#   False, norm_eval), like RT-DETR-R50's frozen BN.
# - They expect BGR images normalised with detectron2's MSRA statistics, so the preprocessor
#   keeps BGR and normalises (the RT-DETR backbones take RGB in [0, 1]).
# - Licence: the weights are CC BY-NC 4.0, non-commercial use only.
#
# Weights: mmbackbones://vovnet/V-39-eSE (youngwanLEE/vovnet-detectron2, CC BY-NC 4.0),
# downloaded once, checked and converted on first use (`python tools/fetch_weights.py
# vovnet/V-39-eSE` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    data_preprocessor=dict(
        mean=[103.530, 116.280, 123.675], std=[57.375, 57.120, 58.395], bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='VoVNet',
        arch='V-39-eSE',
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://vovnet/V-39-eSE')),
    neck=dict(in_channels=[512, 768, 1024]))
