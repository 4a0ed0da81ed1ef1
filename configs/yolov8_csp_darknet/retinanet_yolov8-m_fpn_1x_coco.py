# RetinaNet with a YOLOv8-m CSPDarknet backbone and mmdet's FPN, 1x schedule.
#
# Weights (nothing downloads):
#   python tools/model_converters/ultralytics_yolov8.py yolov8m.pt \
#       checkpoints/yolov8-m_csp_darknet_ultralytics.pth
_base_ = './retinanet_yolov8-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='m',
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/yolov8-m_csp_darknet_ultralytics.pth')),
    neck=dict(in_channels=[192, 384, 576]))
