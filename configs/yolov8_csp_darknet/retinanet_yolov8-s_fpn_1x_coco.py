# RetinaNet with a YOLOv8-s CSPDarknet backbone (P3/P4/P5, strides 8/16/32) and mmdet's FPN,
# 1x schedule.
#
# Weights: the backbone of an ultralytics YOLOv8 detection checkpoint (COCO-trained), converted
# without running code from the .pt (nothing downloads):
#   python tools/model_converters/ultralytics_yolov8.py yolov8s.pt \
#       checkpoints/yolov8-s_csp_darknet_ultralytics.pth
# or an mmyolo checkpoint with tools/model_converters/mmyolo_yolov8.py.
# ultralytics trains on RGB scaled to [0, 1]; the preprocessor does the same.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='YOLOv8CSPDarknet',
        arch='s',
        out_indices=(1, 2, 3),
        frozen_stages=0,
        norm_eval=True,
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/yolov8-s_csp_darknet_ultralytics.pth')),
    neck=dict(in_channels=[128, 256, 512], start_level=0, num_outs=5))
