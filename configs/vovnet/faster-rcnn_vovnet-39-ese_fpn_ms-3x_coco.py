# Faster R-CNN, VoVNetV2-39: the official zoo's 3x multi-scale schedule (36 epochs).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_ms-3x_coco.py']
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[103.530, 116.280, 123.675], std=[57.375, 57.120, 58.395], bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='VoVNet',
        arch='V-39-eSE',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://vovnet/V-39-eSE')),
    neck=dict(in_channels=[256, 512, 768, 1024]))
