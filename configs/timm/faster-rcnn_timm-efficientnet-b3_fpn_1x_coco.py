# Faster R-CNN with timm's EfficientNet-B3 through TimmBackbone, 1x schedule. See the RetinaNet
# ConvNeXt-T config in this folder for how to pick in_channels and make the weights file.
#
# out_indices / frozen_stages count stages as mmdet's ResNet does: stage 0 is the stride-4
# level. efficientnet's stride-2 feature (blocks.0) is part of the stem, so out_indices=(0, 1,
# 2, 3) are strides 4-32 and frozen_stages=0 freezes the stem conv and blocks.0.
# Weights: mmbackbones://timm/efficientnet_b3.ra2_in1k (timm on the Hugging Face hub), downloaded
# once, checked and converted on first use. Without internet: `python tools/fetch_weights.py
# timm/efficientnet_b3.ra2_in1k` where there is, then copy the cache (docs/model_zoo.md).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackbone',
        model_name='efficientnet_b3',
        out_indices=(0, 1, 2, 3),
        frozen_stages=0,
        norm_eval=True,  # timm's BatchNormAct2d layers keep their ImageNet statistics
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained',
                      checkpoint='mmbackbones://timm/efficientnet_b3.ra2_in1k')),
    neck=dict(in_channels=[32, 48, 136, 384]))
