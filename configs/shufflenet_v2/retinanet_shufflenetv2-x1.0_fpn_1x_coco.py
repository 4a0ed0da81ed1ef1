# RetinaNet with a ShuffleNetV2 x1.0 backbone (strides 8/16/32) and mmdet's FPN, 1x schedule.
#
# Weights: mmbackbones://shufflenetv2/x1_0 (pytorch/vision, BSD-3-Clause), downloaded once, checked
# and converted on first use. Without internet: `python tools/fetch_weights.py shufflenetv2/x1_0`
# where there is, then copy the cache (docs/model_zoo.md).
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
                      checkpoint='mmbackbones://shufflenetv2/x1_0')),
    neck=dict(in_channels=[116, 232, 464], start_level=0, num_outs=5))
