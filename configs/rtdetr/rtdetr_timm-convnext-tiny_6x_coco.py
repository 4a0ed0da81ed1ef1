# RT-DETR with timm's ConvNeXt-T through TimmBackbone (strides 8/16/32) on the official
# RT-DETR-R50 recipe (_base_/rtdetr_6x_coco.py: encoder 256 wide, 6 decoder layers, backbone lr
# x0.1). No published RT-DETR result exists for this backbone. A template for any timm model
# with features_only: change model_name / out_indices and set neck.in_channels to what
#   python -c "from mmbackbones.models import get_feature_info; print(get_feature_info(dict(
#       type='TimmBackbone', model_name='convnext_tiny', out_indices=(1, 2, 3))))"
# reports (a mismatch fails at config load with the channels to use).
#
# What to know:
# - out_indices count stages as mmdet's ResNet: stage 0 is the stride-4 level.
# - Nothing is frozen (LayerNorm has no batch statistics); stochastic depth 0.2 is passed to
#   timm.create_model.
# - The layer scales (gamma) get no weight decay, as in ConvNeXt training (its recipe and timm's
#   exempt every 1-D parameter), at the backbone's lr x0.1: no norm rule covers them, so each
#   gamma is listed by its full name (mmengine applies the longest matching key, and these are
#   longer than 'backbone'). The LayerNorms get weight decay 0 by the recipe's norm rule (its
#   constructor applies norm_decay_mult under the 'backbone' key); the biases keep the recipe's
#   weight decay, as the official RT-DETR backbone group.
# - timm's ImageNet weights expect RGB with ImageNet mean/std, so the preprocessor normalises.
#
# Weights: mmbackbones://timm/convnext_tiny.in12k_ft_in1k (timm on the Hugging Face hub),
# downloaded once, checked and converted on first use (`python tools/fetch_weights.py
# timm/convnext_tiny.in12k_ft_in1k` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='TimmBackbone',
        model_name='convnext_tiny',
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained',
                      checkpoint='mmbackbones://timm/convnext_tiny.in12k_ft_in1k')),
    neck=dict(in_channels=[192, 384, 768]))
_stage_depths = (3, 3, 9, 3)  # convnext_tiny
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    f'backbone.timm_model.stages_{i}.blocks.{j}.gamma': dict(lr_mult=0.1, decay_mult=0.0)
    for i, n in enumerate(_stage_depths) for j in range(n)}))
del _stage_depths
