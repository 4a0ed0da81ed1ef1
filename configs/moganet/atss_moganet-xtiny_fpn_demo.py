# MogaNet-XTiny in the quickstart detector (ATSS + mmdet's FPN), trained from scratch on CPU on
# the embedded synthetic shapes data set, with MogaNet's optimiser settings (AdamW, no decay on
# layer scales, scales and norms). A short schedule: 300 iterations of 8 images at 128 px
# (MogaNet is memory-bound on CPU: 8x FFNs at stride 4; about 0.1 s per image per training
# step on two idle cores).
#
#   python tools/train.py configs/moganet/atss_moganet-xtiny_fpn_demo.py --work-dir work_dirs/moga
# (make data/demo first: python tools/demo.py --max-iters 1, or bash tools/demo.sh)
_base_ = '../quickstart/atss_vovnet-19-slim-dw-ese_fpn_demo.py'

image_size = (128, 128)
max_iters = 300

model = dict(
    backbone=dict(
        _delete_=True,
        type='MogaNet',
        arch='xtiny',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,  # from scratch: BN statistics must train
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 96, 192]))

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
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={'layer_scale': dict(decay_mult=0.), 'scale': dict(decay_mult=0.),
                     'norm': dict(decay_mult=0.)},
        norm_decay_mult=0., bias_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=2e-5),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
