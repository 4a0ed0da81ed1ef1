# RT-DETR-R34: ResNet-34-vd (nothing frozen, BN trained), hybrid encoder 256 wide with CSP
# expansion 0.5, 4 decoder layers; otherwise the R50 recipe (_base_/rtdetr_6x_coco.py), with
# the backbone's norms at weight decay 0 and lr 1e-5 as the official rtdetr_r34vd_6x_coco.yml
# (the recipe's RTDETROptimWrapperConstructor applies norm_decay_mult under the backbone key).
# Published (lyuwenyu/RT-DETR README, COCO val2017, 640x640): AP 48.9, AP50 66.8, 31M params,
# 92 GFLOPs, 161 FPS (T4, TensorRT FP16).
#
# Backbone weights: mmbackbones://presnet/R34 (lyuwenyu/RT-DETR, Apache-2.0), downloaded once,
# checked and converted on first use (`python tools/fetch_weights.py presnet/R34` offline).
# Trained detector:
#   python tools/model_converters/rtdetr_official_detector.py \
#       rtdetr_r34vd_dec4_6x_coco_from_paddle.pth checkpoints/rtdetr_r34vd_dec4_6x_coco.pth
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    backbone=dict(depth=34, frozen_stages=-1, freeze_norm=False,
                  init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://presnet/R34')),
    neck=dict(in_channels=[128, 256, 512], expansion=0.5),
    bbox_head=dict(num_decoder_layers=4))
