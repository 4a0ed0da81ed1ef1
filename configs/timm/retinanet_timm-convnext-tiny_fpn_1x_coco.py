# RetinaNet with timm's ConvNeXt-T through TimmBackbone, 1x schedule: a template for any timm
# model with features_only. To use another one, change model_name / out_indices and set the
# neck's in_channels to what get_feature_info reports (tests/configs checks they agree):
#   python -c "from mmbackbones.models import get_feature_info; print(get_feature_info(dict(
#       type='TimmBackbone', model_name='convnext_tiny', out_indices=(1, 2, 3))))"
# out_indices and frozen_stages count stages as mmdet's ResNet does: stage 0 is the stride-4
# level (convnext's first feature; timm levels finer than stride 4 belong to the stem).
# timm's ImageNet weights use RGB ImageNet mean/std, as the base config does.
#
# Weights: mmbackbones://timm/convnext_tiny.in12k_ft_in1k (timm on the Hugging Face hub),
# downloaded once, checked and converted on first use. Without internet: `python
# tools/fetch_weights.py timm/convnext_tiny.in12k_ft_in1k` where there is, then copy the cache
# (docs/model_zoo.md).
# A downloaded .safetensors file works too, through timm's loader: pretrained=True,
# pretrained_cfg_overlay=dict(file='.../model.safetensors') instead of init_cfg.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackbone',
        model_name='convnext_tiny',
        out_indices=(1, 2, 3),  # strides 8, 16, 32: RetinaNet's P3-P5
        frozen_stages=-1,
        drop_path_rate=0.2,  # passed through to timm.create_model
        init_cfg=dict(type='Pretrained',
                      checkpoint='mmbackbones://timm/convnext_tiny.in12k_ft_in1k')),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))

# ConvNeXt is trained with AdamW; no weight decay on norms, biases and layer scales (gamma).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.,
                       custom_keys={'.gamma': dict(decay_mult=0.)}))
