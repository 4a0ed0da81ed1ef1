# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
# A RetinaNet small enough to train a few iterations on a CPU in seconds, for the tool tests.
# Data paths are placeholders: tests point them at a make_demo_dataset() directory with
# --cfg-options (see tests/conftest.py, ``tiny_cfg_options``).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

data_root = 'data/demo/'
image_scale = (128, 128)  # (w, h)
num_classes = 6  # mmbackbones.datasets.DEMO_CLASSES

model = dict(
    backbone=dict(
        _delete_=True,
        type='VoVNet',
        arch=dict(
            stem=[8, 8, 16],
            stage_conv_ch=[8, 12, 16, 16],
            stage_out_ch=[16, 24, 32, 32],
            layer_per_block=2,
            block_per_stage=[1, 1, 1, 1],
            eSE=True,
            dw=False),
        out_indices=(1, 2, 3),
        norm_eval=False),
    neck=dict(
        in_channels=[24, 32, 32],
        out_channels=32,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        num_classes=num_classes, in_channels=32, feat_channels=32, stacked_convs=1),
    # score_thr=0: after a few iterations every score is still near the focal-loss prior (0.01);
    # keep the top boxes anyway so evaluation has predictions to score.
    test_cfg=dict(nms_pre=100, score_thr=0.0, max_per_img=20))

# No random augmentation: a resumed run must see exactly the inputs of an uninterrupted one, and
# mmengine checkpoints do not store numpy's global RNG state.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type='DemoShapesDataset',
        data_root=data_root,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='DemoShapesDataset',
        data_root=data_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json', metric='bbox')
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=8, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=10, norm_type=2))
# Two schedulers so checkpoints carry real scheduler state (LinearLR + MultiStepLR's Counter).
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=1000, milestones=[6], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=2)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=-1))
log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
env_cfg = dict(mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1))
randomness = dict(seed=0, deterministic=True)
