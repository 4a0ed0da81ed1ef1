# RetinaNet with a MogaNet-XTiny backbone and mmdet's FPN, 1x schedule: the official
# Westlake-AI/MogaNet detection recipe (AdamW lr 1e-4, wd 0.05, no decay on layer scales,
# scales and norms), with mmdet's RetinaNet head, data pipeline and 1x schedule.
#
# The official configs passed out_indices, frozen_stages, norm_eval and *_norm_cfg to a class
# that swallowed them (**kwargs): its runs trained every stage with BN in train mode and fed
# FPN all four stages (start_level=1 skipped the first). Here every argument is honoured: the
# backbone returns strides 8/16/32 only, and the stem and stage 1 are frozen with BN in eval
# mode, as those configs asked for.
#
# Weights: mmbackbones://moganet/xtiny (Westlake-AI/MogaNet, Apache-2.0), downloaded once, checked
# and converted on first use. Without internet: `python tools/fetch_weights.py moganet/xtiny` where
# there is, then copy the cache (docs/model_zoo.md).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='MogaNet',
        arch='xtiny',
        drop_path_rate=0.05,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://moganet/xtiny')),
    neck=dict(in_channels=[64, 96, 192], start_level=0, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # The official custom keys; norm_decay_mult also reaches the stem / downsample BNs, whose
    # names ('bn') the 'norm' key does not match.
    paramwise_cfg=dict(
        custom_keys={'layer_scale': dict(decay_mult=0.), 'scale': dict(decay_mult=0.),
                     'norm': dict(decay_mult=0.)},
        norm_decay_mult=0.))
