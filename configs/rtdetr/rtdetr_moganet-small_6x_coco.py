# RT-DETR with a MogaNet-Small backbone (strides 8/16/32) on the official RT-DETR-R50 recipe
# (_base_/rtdetr_6x_coco.py: encoder 256 wide, 6 decoder layers, backbone lr x0.1). No
# published RT-DETR result exists for this backbone.
#
# What to know:
# - Backbone settings as the MogaNet detection configs (configs/moganet/): stochastic depth 0.1,
#   stem and stage 1 frozen, BN in eval mode.
# - The MogaNet detection recipe (AdamW wd 0.05) is not used: the RT-DETR recipe's wd 1e-4
#   applies to every backbone parameter but the norms (weight decay 0, at the backbone lr),
#   including the layer scales and element scales MogaNet trains without decay.
# - The weights expect RGB with ImageNet mean/std, so the preprocessor normalises.
#
# Weights: mmbackbones://moganet/small (Westlake-AI/MogaNet, Apache-2.0), downloaded once,
# checked and converted on first use (`python tools/fetch_weights.py moganet/small` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='MogaNet',
        arch='small',
        drop_path_rate=0.1,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://moganet/small')),
    neck=dict(in_channels=[128, 320, 512]))
