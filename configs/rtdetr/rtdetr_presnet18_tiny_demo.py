# A tiny RT-DETR (PResNet-18, 64-wide encoder and decoder, 50 queries, 3 decoder layers,
# contrastive denoising on) on the synthetic shapes dataset at 128 px, trainable on a CPU:
#   python tools/dataset/make_demo_data.py --out data/demo
#   python tools/train.py configs/rtdetr/rtdetr_presnet18_tiny_demo.py
_base_ = '../quickstart/atss_vovnet-19-slim-dw-ese_fpn_demo.py'

image_size = (128, 128)
max_iters = 600
model = dict(
    _delete_=True,
    type='RTDETR',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[0., 0., 0.],
                           std=[255., 255., 255.], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='PResNet', depth=18, out_indices=(1, 2, 3), norm_eval=False,
                  init_cfg=None),
    neck=dict(type='HybridEncoder', in_channels=[128, 256, 512], hidden_dim=64, nhead=4,
              dim_feedforward=128, expansion=0.5, depth_mult=0.34),
    bbox_head=dict(type='RTDETRHead', num_classes=6, in_channels=[64, 64, 64], embed_dims=64,
                   num_heads=4, num_queries=50, num_decoder_layers=3, feedforward_channels=128,
                   num_denoising=30),
    test_cfg=dict(max_per_img=50))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
                     clip_grad=dict(max_norm=0.1))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=2e-5),
]
