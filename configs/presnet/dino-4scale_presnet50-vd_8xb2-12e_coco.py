# DINO (4 scales) with RT-DETR's PResNet-50 (ResNet-vd) backbone, 12 epochs. mmdet has no RT-DETR
# head; DINO is the closest DETR-family detector it ships. Backbone as RT-DETR trains it: stem
# frozen (its freeze_at=0) and every BatchNorm frozen (freeze_norm); the DINO base already gives
# the backbone lr_mult=0.1.
#
# Weights: mmbackbones://presnet/R50 (lyuwenyu/RT-DETR, Apache-2.0), downloaded once, checked and
# converted on first use. Without internet: `python tools/fetch_weights.py presnet/R50` where there
# is, then copy the cache (docs/model_zoo.md).
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
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://presnet/R50')),
    neck=dict(in_channels=[512, 1024, 2048]))
