# Faster R-CNN, VoVNetV2-19 (V-19-eSE), ms-3x schedule: only the backbone differs from V-39.
_base_ = './faster-rcnn_vovnet-39-ese_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='V-19-eSE',
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://vovnet/V-19-eSE')),
    neck=dict(in_channels=[256, 512, 768, 1024]))
