# YOLOv8-n CSPDarknet in the quickstart detector (ATSS + mmdet's FPN), trained from scratch on
# CPU on the embedded synthetic shapes data set. A short schedule: minutes on two CPU cores.
#
#   python tools/train.py configs/yolov8_csp_darknet/atss_yolov8-n_fpn_demo.py \
#       --work-dir work_dirs/yolov8-n_demo
# (make data/demo first: python tools/demo.py --max-iters 1, or bash tools/demo.sh)
_base_ = '../quickstart/atss_vovnet-19-slim-dw-ese_fpn_demo.py'

image_size = (128, 128)
max_iters = 400

model = dict(
    data_preprocessor=dict(mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='YOLOv8CSPDarknet',
        arch='n',
        out_indices=(0, 1, 2, 3),  # strides 4/8/16/32, as the quickstart's ATSS head expects
        frozen_stages=-1,
        norm_eval=False,  # from scratch: BN statistics must train
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=2e-5),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
