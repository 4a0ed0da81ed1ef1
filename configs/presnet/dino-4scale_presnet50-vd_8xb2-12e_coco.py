# DINO (4 scales) with RT-DETR's PResNet-50 (ResNet-vd) backbone, 12 epochs. mmdet has no RT-DETR
# head; DINO is the closest DETR-family detector it ships. Backbone as RT-DETR trains it: stem
# frozen (its freeze_at=0) and every BatchNorm frozen (freeze_norm); the DINO base already gives
# the backbone lr_mult=0.1.
#
# Weights: convert RT-DETR's PaddleClas-converted ImageNet checkpoint first (nothing downloads):
#   python tools/model_converters/rtdetr_presnet.py \
#       ResNet50_vd_ssld_v2_pretrained_from_paddle.pth checkpoints/presnet50-vd_rtdetr.pth
# (or timm's resnet50d with tools/model_converters/timm_resnetd.py). Both expect RGB input with
# ImageNet statistics: the DINO base's preprocessor.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PResNet',
        depth=50,
        out_indices=(1, 2, 3),
        frozen_stages=0,
        freeze_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/presnet50-vd_rtdetr.pth')),
    neck=dict(in_channels=[512, 1024, 2048]))
