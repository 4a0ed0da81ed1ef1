# Faster R-CNN with a VoVNetV2-39 (eSE) backbone and mmdet's FPN, 1x schedule.
#
# Weights: mmbackbones://vovnet/V-39-eSE (youngwanLEE/vovnet-detectron2, CC BY-NC 4.0
# (non-commercial use only)), downloaded once, checked and converted on first use. Without
# internet: `python tools/fetch_weights.py vovnet/V-39-eSE` where there is, then copy the cache
# (docs/model_zoo.md).
# The official recipe keeps BN frozen (detectron2 FrozenBN, FREEZE_AT=0) and feeds BGR images
# normalised with detectron2's MSRA statistics; both are reproduced here.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
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
