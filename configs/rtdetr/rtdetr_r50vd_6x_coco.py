# RT-DETR-R50 (ResNet-50-vd backbone, hybrid encoder, 6 decoder layers, 300 queries), 72 epochs
# on COCO, with the official recipe as far as mmdet's transforms express it: images in [0, 1]
# (no mean/std), photometric distortion, zoom-out, IoU crop, flip, 640x640 resize without
# keeping the ratio (multi-scale batches: see the data preprocessor); AdamW lr 1e-4 (backbone
# 1e-5), weight decay 1e-4 (none on norms),
# gradient clipping 0.1, 2000 warm-up iterations, EMA 0.9999 with a 2000-iteration ramp.
#
# Weights: convert the official release file first (nothing downloads):
#   python tools/model_converters/rtdetr_official_detector.py \
#       rtdetr_r50vd_6x_coco_from_paddle.pth checkpoints/rtdetr_r50vd_6x_coco.pth
# and test with  python tools/test.py THIS_CONFIG checkpoints/rtdetr_r50vd_6x_coco.pth
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

image_size = (640, 640)
model = dict(
    type='RTDETR',
    # The official training also resizes every batch to a random side in 480..800; mmdet's
    # BatchSyncRandomResize does that (add batch_augments=[dict(type='BatchSyncRandomResize',
    # random_size_range=(480, 800), size_divisor=32, interval=1)]) but needs a runner's
    # iteration counter, so it is left out here.
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.],
        bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        type='PResNet', depth=50, out_indices=(1, 2, 3), frozen_stages=0, freeze_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/presnet50-vd_rtdetr.pth')),
    neck=dict(
        type='HybridEncoder', in_channels=[512, 1024, 2048], feat_strides=[8, 16, 32],
        hidden_dim=256, nhead=8, dim_feedforward=1024, dropout=0.0, enc_act='gelu',
        use_encoder_idx=[2], num_encoder_layers=1, expansion=1.0, depth_mult=1.0, act='silu'),
    bbox_head=dict(
        type='RTDETRHead', num_classes=80, in_channels=[256, 256, 256], num_levels=3,
        embed_dims=256, num_heads=8, num_points=4, num_queries=300, num_decoder_layers=6,
        feedforward_channels=1024, dropout=0.0, eval_idx=-1, num_denoising=100,
        label_noise_ratio=0.5, box_noise_scale=1.0,
        loss_cls=dict(type='RTDETRVarifocalLoss', alpha=0.75, gamma=2.0, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
        dict(type='FocalLossCost', weight=2.0, alpha=0.25, gamma=2.0, eps=1e-8),
        dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
        dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
    test_cfg=dict(max_per_img=300))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomApply', transforms=[dict(type='Expand', mean=[0, 0, 0], to_rgb=True,
                                              ratio_range=(1, 4))], prob=0.5),
    dict(type='RandomApply', transforms=[dict(type='MinIoURandomCrop')], prob=0.8),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=4, num_workers=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 72
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}, norm_decay_mult=0.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=2000)]
custom_hooks = [dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001, gamma=2000,
                     update_buffers=True, priority=49)]
auto_scale_lr = dict(enable=False, base_batch_size=16)
