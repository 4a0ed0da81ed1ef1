# RetinaNet with a YOLOv8-m CSPDarknet backbone and mmdet's FPN, 1x schedule.
#
# Weights: mmbackbones://yolov8/m (ultralytics/ultralytics, AGPL-3.0), downloaded once, checked and
# converted on first use. Without internet: `python tools/fetch_weights.py yolov8/m` where there
# is, then copy the cache (docs/model_zoo.md).
_base_ = './retinanet_yolov8-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='m',
        init_cfg=dict(type='Pretrained',
                      checkpoint='mmbackbones://yolov8/m')),
    neck=dict(in_channels=[192, 384, 576]))
