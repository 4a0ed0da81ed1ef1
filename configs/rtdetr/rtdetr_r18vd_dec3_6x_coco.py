# RT-DETR-R18: ResNet-18-vd (nothing frozen, BN trained), hybrid encoder 256 wide with CSP
# expansion 0.5, 3 decoder layers; otherwise the R50 recipe (_base_/rtdetr_6x_coco.py). The
# backbone's norms get no weight decay and lr 1e-5, as the official rtdetr_r18vd_6x_coco.yml
# (mmengine lets a custom key override norm_decay_mult, so each backbone BN is listed below).
# Published (lyuwenyu/RT-DETR README, COCO val2017, 640x640): AP 46.5, AP50 63.8, 20M params,
# 60 GFLOPs, 217 FPS (T4, TensorRT FP16).
#
# Backbone weights: mmbackbones://presnet/R18 (lyuwenyu/RT-DETR, Apache-2.0), downloaded once,
# checked and converted on first use (`python tools/fetch_weights.py presnet/R18` offline).
# Trained detector:
#   python tools/model_converters/rtdetr_official_detector.py \
#       rtdetr_r18vd_dec3_6x_coco_from_paddle.pth checkpoints/rtdetr_r18vd_dec3_6x_coco.pth
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    backbone=dict(depth=18, frozen_stages=-1, freeze_norm=False,
                  init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://presnet/R18')),
    neck=dict(in_channels=[128, 256, 512], expansion=0.5),
    bbox_head=dict(num_decoder_layers=3))

# The backbone's BN layers (PResNet names) at the backbone lr and no weight decay; a key longer
# than 'backbone' wins over it in mmengine's matching.
_stage_blocks = (2, 2, 2, 2)
_backbone_norms = ['stem.0.bn', 'stem.1.bn', 'stem.2.bn'] + [
    f'stages.{i}.{j}.{conv}.bn' for i, n in enumerate(_stage_blocks) for j in range(n)
    for conv in ('conv1', 'conv2', 'shortcut')]
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    f'backbone.{name}.': dict(lr_mult=0.1, decay_mult=0.0) for name in _backbone_norms}))
del _stage_blocks, _backbone_norms
