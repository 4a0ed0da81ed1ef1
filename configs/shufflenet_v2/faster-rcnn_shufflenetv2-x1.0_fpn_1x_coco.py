# Faster R-CNN with a ShuffleNetV2 x1.0 backbone and mmdet's FPN, 1x schedule.
#
# ShuffleNetV2's finest output has stride 8 (not ResNet's 4), so the FPN levels are strides
# 8/16/32 plus two max-pooled levels (64, 128). The RPN anchors keep ResNet's box sizes
# (32..512 px: stride 8 x scale 4) and the RoI extractor reads strides 8..64.
#
# Weights: mmbackbones://shufflenetv2/x1_0 (pytorch/vision, BSD-3-Clause), downloaded once, checked
# and converted on first use. Without internet: `python tools/fetch_weights.py shufflenetv2/x1_0`
# where there is, then copy the cache (docs/model_zoo.md).
# or an mmpretrain one with tools/model_converters/mmpretrain_shufflenetv2.py.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
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
    neck=dict(in_channels=[116, 232, 464], num_outs=5),
    rpn_head=dict(anchor_generator=dict(scales=[4], strides=[8, 16, 32, 64, 128])),
    roi_head=dict(bbox_roi_extractor=dict(featmap_strides=[8, 16, 32, 64])))
