# Faster R-CNN, VoVNetV2-57 (V-57-eSE), 1x schedule: only the backbone differs from V-39.
_base_ = './faster-rcnn_vovnet-39-ese_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='V-57-eSE',
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://vovnet/V-57-eSE')),
    neck=dict(in_channels=[256, 512, 768, 1024]))
