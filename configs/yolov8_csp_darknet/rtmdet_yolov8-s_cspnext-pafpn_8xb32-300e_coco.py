# RTMDet-s with its CSPNeXt backbone replaced by YOLOv8-s CSPDarknet: mmdet's CSPNeXtPAFPN neck
# and RTMDetHead, RTMDet's 300-epoch recipe (Mosaic/MixUp, then the stage-2 pipeline switch).
# Both backbones give P3/P4/P5 with 128/256/512 channels at this scale.
#
# Weights: mmbackbones://yolov8/s (ultralytics/ultralytics, AGPL-3.0), downloaded once, checked and
# converted on first use. Without internet: `python tools/fetch_weights.py yolov8/s` where there
# is, then copy the cache (docs/model_zoo.md).
# ultralytics trains on RGB scaled to [0, 1]; the preprocessor does the same.
_base_ = 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='YOLOv8CSPDarknet',
        arch='s',
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,  # large batches (32 per GPU, SyncBN in neck and head): BN trains
        init_cfg=dict(type='Pretrained',
                      checkpoint='mmbackbones://yolov8/s')),
    neck=dict(in_channels=[128, 256, 512]))
