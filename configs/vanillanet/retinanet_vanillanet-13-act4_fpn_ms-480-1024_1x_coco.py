# RetinaNet with a VanillaNet-13 backbone (act_num=4), strides 8/16/32, multi-scale 480-1024
# training, 1x schedule: the official VanillaNet detection setting (43.0 box AP in its README).
#
# Weights: mmbackbones://vanillanet/vanillanet_13_act_num_4_kd_pretrain (huawei-noah/VanillaNet,
# MIT), downloaded once, checked and converted on first use. Without internet: `python
# tools/fetch_weights.py vanillanet/vanillanet_13_act_num_4_kd_pretrain` where there is, then copy
# the cache (docs/model_zoo.md).
# (the official detection code loads its 'model_ema' entry; so does mmbackbones).
# The official backbone has no act_learn ramp in detection (the pretrained net is at act_learn=1),
# so a trained detector can be re-parameterised with tools/deploy/reparameterize.py.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VanillaNet',
        arch='vanillanet_13',
        act_num=4,  # the official detection models enlarge the activation to 9x9
        out_indices=(1, 8, 10),  # VanillaNet.out_indices_for_strides('vanillanet_13', (8, 16, 32))
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', eps=1e-6, requires_grad=True),
        norm_eval=False,
        init_cfg=dict(type='Pretrained',
                      checkpoint='mmbackbones://vanillanet/vanillanet_13_act_num_4_kd_pretrain')),
    neck=dict(in_channels=[1024, 2048, 4096], start_level=0, num_outs=5))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(1333, s) for s in range(480, 1025, 32)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))

# Official optimiser: AdamW, weight decay 0.05, layer-wise lr decay 0.6 over 6 groups of two
# blocks (official get_layer_id_for_vanillanet: stem -> 0, block i -> i // 2 + 1, the rest -> 7;
# lr scale 0.6 ** (7 - id)). The official constructor also exempts 1-D parameters from weight
# decay; mmengine's custom_keys take precedence over its norm/bias rules, so here they decay.
_decay = 0.6
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=8e-5, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'backbone.stem.': dict(lr_mult=_decay ** 7),
        **{f'backbone.stages.{i}.': dict(lr_mult=_decay ** (6 - i // 2)) for i in range(11)}}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[10, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=32)  # official: 8 GPUs x 4 images
