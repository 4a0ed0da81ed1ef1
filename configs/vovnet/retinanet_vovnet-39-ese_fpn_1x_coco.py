# RetinaNet with a VoVNetV2-39 (eSE) backbone, 1x schedule. RetinaNet uses stages 2-4 (P3-P5)
# and builds P6/P7 on the last backbone feature. See the Faster R-CNN config for weights.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[103.530, 116.280, 123.675], std=[57.375, 57.120, 58.395], bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='VoVNet',
        arch='V-39-eSE',
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://vovnet/V-39-eSE')),
    neck=dict(in_channels=[512, 768, 1024], start_level=0, num_outs=5))
