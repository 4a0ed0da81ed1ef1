# RT-DETR with the YOLOv8-s CSPDarknet backbone (P3/P4/P5, strides 8/16/32) on the official
# recipe (_base_/rtdetr_6x_coco.py) with the RT-DETR-R18 detector setting: encoder 256 wide with
# CSP expansion 0.5, 3 decoder layers. No published RT-DETR result exists for this backbone.
#
# What to know:
# - The weights are the backbone of ultralytics' COCO-trained YOLOv8-s detector (not ImageNet
#   weights): COCO val results with them are not a clean transfer measure.
# - ultralytics trains on RGB in [0, 1], the recipe's input; no mean/std.
# - The stem is frozen and BN runs in eval mode (norm_eval), as the YOLOv8 backbone configs.
#
# Weights: mmbackbones://yolov8/s (ultralytics/ultralytics, AGPL-3.0), downloaded once, checked
# and converted on first use (`python tools/fetch_weights.py yolov8/s` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='YOLOv8CSPDarknet',
        arch='s',
        out_indices=(1, 2, 3),
        frozen_stages=0,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://yolov8/s')),
    neck=dict(in_channels=[128, 256, 512], expansion=0.5),
    bbox_head=dict(num_decoder_layers=3))
