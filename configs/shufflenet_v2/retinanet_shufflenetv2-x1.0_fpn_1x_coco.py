# RetinaNet with a ShuffleNetV2 x1.0 backbone (strides 8/16/32) and mmdet's FPN, 1x schedule.
#
# Weights: convert torchvision's ImageNet checkpoint first (nothing downloads):
#   python tools/model_converters/torchvision_shufflenetv2.py shufflenetv2_x1-5666bf0f80.pth \
#       checkpoints/shufflenetv2_x1.0_torchvision.pth
# torchvision weights expect RGB input with ImageNet statistics: mmdet's default preprocessor.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ShuffleNetV2',
        widen_factor=1.0,
        out_indices=(0, 1, 2),
        frozen_stages=0,
        norm_eval=True,
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/shufflenetv2_x1.0_torchvision.pth')),
    neck=dict(in_channels=[116, 232, 464], start_level=0, num_outs=5))
