# Mask R-CNN with a MogaNet-Tiny backbone: the official recipe (see the XTiny config).
#   python tools/model_converters/moganet_official.py moganet_tiny_sz224_8xbs128_ep300.pth.tar \
#       checkpoints/moganet_tiny_official.pth
_base_ = './mask-rcnn_moganet-xtiny_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/moganet_tiny_official.pth')),
    neck=dict(in_channels=[32, 64, 128, 256]))
