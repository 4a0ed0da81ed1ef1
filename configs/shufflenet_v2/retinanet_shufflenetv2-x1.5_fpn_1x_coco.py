# RetinaNet with a ShuffleNetV2 x1.5 backbone (strides 8/16/32) and mmdet's FPN, 1x schedule.
#
# Weights: mmbackbones://shufflenetv2/x1_5 (pytorch/vision, BSD-3-Clause), downloaded once, checked
# and converted on first use. Without internet: `python tools/fetch_weights.py shufflenetv2/x1_5`
# where there is, then copy the cache (docs/model_zoo.md).
_base_ = './retinanet_shufflenetv2-x1.0_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        widen_factor=1.5,
        init_cfg=dict(type='Pretrained',
                      checkpoint='mmbackbones://shufflenetv2/x1_5')),
    neck=dict(in_channels=[176, 352, 704]))
