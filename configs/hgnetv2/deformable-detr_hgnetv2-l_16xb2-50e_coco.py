# Deformable DETR with RT-DETR's HGNetV2-L backbone (= timm hgnetv2_b4), 50 epochs. Backbone as
# RT-DETR trains it: stem frozen (its freeze_at=0) and every BatchNorm frozen (freeze_norm); the
# base already gives the backbone lr_mult=0.1.
#
# Weights: mmbackbones://hgnetv2/L (lyuwenyu/RT-DETR, Apache-2.0), downloaded once, checked and
# converted on first use. Without internet: `python tools/fetch_weights.py hgnetv2/L` where there
# is, then copy the cache (docs/model_zoo.md).
# (or timm's hgnetv2_b4 with tools/model_converters/timm_hgnetv2.py). Both expect RGB input with
# ImageNet statistics: the base's preprocessor.
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='HGNetV2',
        arch='L',
        out_indices=(1, 2, 3),
        frozen_stages=0,
        freeze_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://hgnetv2/L')),
    neck=dict(in_channels=[512, 1024, 2048]))
