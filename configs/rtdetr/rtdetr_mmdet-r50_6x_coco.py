# RT-DETR with mmdet's own ResNet-50 (torchvision weights, strides 8/16/32) on the official
# RT-DETR-R50 recipe (_base_/rtdetr_6x_coco.py: encoder 256 wide, 6 decoder layers, backbone lr
# x0.1): the plain ResNet-50 (no -vd stem and downsampling) that most mmdet detectors use. No
# published RT-DETR result exists for it; RT-DETR-R50 with ResNet-50-vd reaches 53.1 AP.
#
# What to know:
# - mmdet's usual ResNet settings: stem and stage 1 frozen, BN trainable but in eval mode
#   (norm_eval), where RT-DETR-R50 freezes only the stem and every BN.
# - torchvision's weights expect RGB with ImageNet mean/std, so the preprocessor normalises.
#
# Weights: torchvision://resnet50 (mmengine's model zoo: torchvision's ImageNet weights),
# downloaded by mmengine on first use.
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='mmdet.ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(in_channels=[512, 1024, 2048]))
