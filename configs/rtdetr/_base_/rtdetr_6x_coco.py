# The RT-DETR training recipe (COCO, 72 epochs), shared by every config in configs/rtdetr/ but
# the CPU demo. The model here is RT-DETR-R50 (ResNet-50-vd, hybrid encoder 256 wide, 6 decoder
# layers, 300 queries); the other configs change the backbone, the encoder widths and the
# decoder depth only. Facts from lyuwenyu/RT-DETR: rtdetr_pytorch configs/rtdetr/include/
# {rtdetr_r50vd,dataloader,optimizer}.yml and rtdetr_paddle configs/rtdetr/_base_/.
#
# Input: RGB in [0, 1] (mean 0, std 255), as both official codes feed the network.
#
# Multi-scale: RTDETRBatchRandomResize resizes every training batch to size x size, size drawn
# from [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800] (the official list),
# nearest-neighbour as rtdetr_pytorch (F.interpolate's default; rtdetr_paddle draws one of five
# OpenCV modes per batch). One size per iteration for all ranks (a shared seeded draw); the
# official codes let each rank draw its own size. RT-DETR has no multi-scale stop epoch
# (RT-DETRv2 stops at epoch 71): stop_epoch=None.
#
# Augmentation, against rtdetr_pytorch's torchvision v2 pipeline (dataloader.yml):
#   RandomPhotometricDistort(p=0.5) -> PhotoMetricDistortion: in both, brightness, contrast,
#     saturation, hue and a channel permutation each apply with probability 0.5, in that order,
#     contrast first or last at random; saturation factor [0.5, 1.5] and hue shift +-0.05 of
#     the hue circle (mmdet's 18 of OpenCV's 360 degrees for float images) in both.
#     Differences: brightness adds a delta in +-32 (of 255) instead of multiplying by a factor in
#     [0.875, 1.125]; contrast multiplies the pixels by [0.5, 1.5] instead of blending them
#     with the mean grey; saturation scales HSV's S instead of blending with the grey image;
#     no clamping to [0, 255] between the steps.
#   RandomZoomOut(fill=0, side_range (1, 4), p=0.5) -> Expand(mean=0, ratio_range=(1, 4),
#     prob=0.5): the same.
#   RandomIoUCrop (p=0.8) -> MinIoURandomCrop in RandomApply(prob=0.8). Both pick a minimum IoU
#     from {no crop, 0, 0.1, 0.3, 0.5, 0.7, 0.9} and sample a crop of 0.3..1 of each side with
#     h/w in [0.5, 2], keeping the boxes whose centres are inside. Differences: torchvision
#     accepts a crop when the best IoU among those boxes reaches the threshold, mmdet only when
#     every gt box does (so high thresholds fall back to resampling more often); 40 vs 50
#     trials per threshold. Both clip the kept boxes to the crop.
#   SanitizeBoundingBox(min_size=1) (before and after the resize) -> FilterAnnotations
#     (min_gt_bbox_wh=(1, 1), keep_empty=False, which keeps an image left without boxes, as
#     torchvision does), before and after the resize.
#   RandomHorizontalFlip -> RandomFlip(prob=0.5). Resize [640, 640] -> Resize((640, 640),
#     keep_ratio=False): bilinear in both; torchvision resizes PIL images with antialiasing,
#     OpenCV without.
#   The dataset: mmdet's COCO base drops train images without boxes or smaller than 32 px;
#   the official CocoDetection keeps every train image. Crowd boxes are no targets in either.
#   rtdetr_paddle differs from rtdetr_pytorch here: RandomDistort prob 0.8, RandomExpand filled
#   with the ImageNet mean, RandomCrop prob 0.8.
#
# Optimisation (official optimizer.yml / paddle optimizer_6x.yml): AdamW, lr 1e-4, betas (0.9,
# 0.999), weight decay 1e-4; backbone lr x0.1 (1e-5); no weight decay on any norm (the
# official R18/R34 regexes give the trained backbone norms lr 1e-5 and weight decay 0; R50's
# are frozen) nor on the encoder's and decoder's biases; the backbone's biases keep weight
# decay 1e-4 (the official backbone group sets only the lr); gradient clipping at L2 norm 0.1.
# mmengine's default constructor applies a matching custom key instead of norm_decay_mult, so
# every trainable backbone norm would decay: RTDETROptimWrapperConstructor (mmbackbones.engine)
# also applies norm_decay_mult under custom keys; bias_decay_mult keeps mmengine's meaning
# (only parameters no key matches, i.e. outside the backbone). 72 epochs (6x) at a constant
# lr (the official MultiStepLR milestone, 1000 epochs, is never reached) after paddle's
# 2000-iteration linear warm-up from 0.001 x lr (rtdetr_pytorch has none; rtdetrv2_pytorch's
# copy of the RT-DETR configs adds a 2000-iteration linear warm-up); 4 GPUs x 4 images
# (auto_scale_lr base 16).
# EMA: official ModelEMA, decay 0.9999 * (1 - exp(-updates / 2000)) over all float state
# entries. mmdet's ExpMomentumEMA(momentum=1e-4, gamma=2000) uses momentum (1 - 1e-4) *
# exp(-(1 + steps) / 2000) + 1e-4, i.e. decay 1 - momentum = 0.9999 * (1 - exp(-(steps + 1) /
# 2000)), with steps + 1 = the official update count: the same schedule (mmengine's first
# update copies the weights, where the official keeps 5e-4 of the initial ones);
# update_buffers=True averages the buffers too, as the official does.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

image_size = (640, 640)
model = dict(
    type='RTDETR',
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.],
        bgr_to_rgb=True, pad_size_divisor=32,
        batch_augments=[dict(type='RTDETRBatchRandomResize', interpolation='nearest')]),
    backbone=dict(
        type='PResNet', depth=50, out_indices=(1, 2, 3), frozen_stages=0, freeze_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://presnet/R50')),
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
    dict(type='Expand', mean=[0, 0, 0], to_rgb=True, ratio_range=(1, 4), prob=0.5),
    dict(type='RandomApply', transforms=[dict(type='MinIoURandomCrop')], prob=0.8),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
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
    constructor='RTDETROptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}, norm_decay_mult=0.0,
                       bias_decay_mult=0.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=2000)]
custom_hooks = [dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001, gamma=2000,
                     update_buffers=True, priority=49)]
auto_scale_lr = dict(enable=False, base_batch_size=16)
