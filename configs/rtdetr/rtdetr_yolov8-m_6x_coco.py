# RT-DETR with the YOLOv8-m CSPDarknet backbone (P3/P4/P5, strides 8/16/32) on the official
# RT-DETR-R50 recipe (_base_/rtdetr_6x_coco.py: encoder 256 wide, CSP expansion 1.0, 6 decoder
# layers). No published RT-DETR result exists for this backbone.
#
# What to know:
# - The weights are the backbone of ultralytics' COCO-trained YOLOv8-m detector (not ImageNet
#   weights): COCO val results with them are not a clean transfer measure.
# - ultralytics trains on RGB in [0, 1], the recipe's input; no mean/std.
# - The stem is frozen and BN runs in eval mode (norm_eval), as the YOLOv8 backbone configs.
#
# Weights: mmbackbones://yolov8/m (ultralytics/ultralytics, AGPL-3.0), downloaded once, checked
# and converted on first use (`python tools/fetch_weights.py yolov8/m` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='YOLOv8CSPDarknet',
        arch='m',
        out_indices=(1, 2, 3),
        frozen_stages=0,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://yolov8/m')),
    neck=dict(in_channels=[192, 384, 576]))
