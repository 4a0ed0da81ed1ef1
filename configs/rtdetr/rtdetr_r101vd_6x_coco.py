# RT-DETR-R101: ResNet-101-vd (frozen stem, frozen BN), hybrid encoder 384 wide with
# feed-forward 2048 (CSP expansion 1.0), 6 decoder layers; the decoder works at 256 (the
# official RTDETRTransformer hidden_dim stays 256 and projects the 384-wide features). The
# backbone learns at lr 1e-6 (lr_mult 0.01: official rtdetr_r101vd_6x_coco.yml, paddle
# lr_mult_list 0.01); otherwise the R50 recipe (_base_/rtdetr_6x_coco.py).
# Published (lyuwenyu/RT-DETR README, COCO val2017, 640x640): AP 54.3, AP50 72.7, 76M params,
# 259 GFLOPs, 74 FPS (T4, TensorRT FP16).
#
# Backbone weights: mmbackbones://presnet/R101 (lyuwenyu/RT-DETR, Apache-2.0), downloaded once,
# checked and converted on first use (`python tools/fetch_weights.py presnet/R101` offline).
# Trained detector:
#   python tools/model_converters/rtdetr_official_detector.py \
#       rtdetr_r101vd_6x_coco_from_paddle.pth checkpoints/rtdetr_r101vd_6x_coco.pth
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    backbone=dict(depth=101,
                  init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://presnet/R101')),
    neck=dict(hidden_dim=384, dim_feedforward=2048),
    bbox_head=dict(in_channels=[384, 384, 384]))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.01)}))
