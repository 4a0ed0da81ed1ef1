# Mask R-CNN, VoVNetV2-19-slim-dw (V-19-slim-dw-eSE), 1x schedule: only the backbone differs from V-39.
_base_ = './mask-rcnn_vovnet-39-ese_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='V-19-slim-dw-eSE',
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://vovnet/V-19-slim-dw-eSE')),
    neck=dict(in_channels=[112, 256, 384, 512]))
