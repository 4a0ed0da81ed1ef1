# RT-DETR with a ShuffleNetV2 x1.5 backbone (strides 8/16/32) on the official recipe
# (_base_/rtdetr_6x_coco.py) with the RT-DETR-R18 detector setting: encoder 256 wide with CSP
# expansion 0.5, 3 decoder layers. No published RT-DETR result exists for this backbone.
#
# What to know:
# - The backbone is small (3.5M parameters); the R18 setting keeps encoder and decoder
#   proportionate. hidden_dim 256 is kept (the decoder width the recipe was tuned at); lower
#   neck.hidden_dim (and bbox_head.in_channels with it) for a lighter model.
# - The stem is frozen and BN runs in eval mode (norm_eval), as in the mmdet ShuffleNetV2
#   configs: with 4 images per GPU, batch statistics are noisy.
# - torchvision's weights expect RGB with ImageNet mean/std, so the preprocessor normalises.
#
# Weights: mmbackbones://shufflenetv2/x1_5 (pytorch/vision, BSD-3-Clause), downloaded once,
# checked and converted on first use (`python tools/fetch_weights.py shufflenetv2/x1_5` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='ShuffleNetV2',
        widen_factor=1.5,
        out_indices=(0, 1, 2),
        frozen_stages=0,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://shufflenetv2/x1_5')),
    neck=dict(in_channels=[176, 352, 704], expansion=0.5),
    bbox_head=dict(num_decoder_layers=3))
