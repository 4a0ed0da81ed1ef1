# RetinaNet with a ShuffleNetV2 x1.5 backbone (strides 8/16/32) and mmdet's FPN, 1x schedule.
#
# Weights: convert torchvision's ImageNet checkpoint first (nothing downloads):
#   python tools/model_converters/torchvision_shufflenetv2.py shufflenetv2_x1_5-3c479a10.pth \
#       checkpoints/shufflenetv2_x1.5_torchvision.pth
_base_ = './retinanet_shufflenetv2-x1.0_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        widen_factor=1.5,
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/shufflenetv2_x1.5_torchvision.pth')),
    neck=dict(in_channels=[176, 352, 704]))
