# RetinaNet with a MogaNet-Small backbone: the official recipe (see the XTiny config).
#   python tools/model_converters/moganet_official.py moganet_small_sz224_8xbs128_ep300.pth.tar \
#       checkpoints/moganet_small_official.pth
_base_ = './retinanet_moganet-xtiny_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/moganet_small_official.pth')),
    neck=dict(in_channels=[128, 320, 512]))
