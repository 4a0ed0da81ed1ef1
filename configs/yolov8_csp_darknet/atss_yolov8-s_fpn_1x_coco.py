# ATSS with a YOLOv8-s CSPDarknet backbone (P3/P4/P5) and mmdet's FPN, 1x schedule.
#
# Weights: mmbackbones://yolov8/s (ultralytics/ultralytics, AGPL-3.0), downloaded once, checked and
# converted on first use. Without internet: `python tools/fetch_weights.py yolov8/s` where there
# is, then copy the cache (docs/model_zoo.md).
# ultralytics trains on RGB scaled to [0, 1]; the preprocessor does the same.
_base_ = 'mmdet::atss/atss_r50_fpn_1x_coco.py'
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
                      checkpoint='mmbackbones://yolov8/s')),
    neck=dict(in_channels=[128, 256, 512], start_level=0, num_outs=5))
