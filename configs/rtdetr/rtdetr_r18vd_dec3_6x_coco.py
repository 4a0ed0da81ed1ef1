# RT-DETR-R18: ResNet-18-vd (nothing frozen, BN trained), hybrid encoder 256 wide with CSP
# expansion 0.5, 3 decoder layers; otherwise the R50 recipe (_base_/rtdetr_6x_coco.py). The
# backbone's norms get no weight decay and lr 1e-5, as the official rtdetr_r18vd_6x_coco.yml
# (the recipe's RTDETROptimWrapperConstructor applies norm_decay_mult under the backbone key).
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
