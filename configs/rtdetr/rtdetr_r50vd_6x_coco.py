# RT-DETR-R50: ResNet-50-vd (frozen stem, frozen BN), hybrid encoder 256 wide (feed-forward
# 1024, CSP expansion 1.0), 6 decoder layers, 300 queries, 72 epochs on COCO; the official
# recipe, see _base_/rtdetr_6x_coco.py for what differs from the official code.
# Published (lyuwenyu/RT-DETR README, COCO val2017, 640x640): AP 53.1, AP50 71.3, 42M params,
# 136 GFLOPs, 108 FPS (T4, TensorRT FP16).
#
# Backbone weights: mmbackbones://presnet/R50 (lyuwenyu/RT-DETR, Apache-2.0), downloaded once,
# checked and converted on first use. Without internet: `python tools/fetch_weights.py
# presnet/R50` where there is, then copy the cache (docs/model_zoo.md).
# Trained detector: convert the official release file (nothing downloads):
#   python tools/model_converters/rtdetr_official_detector.py \
#       rtdetr_r50vd_6x_coco_from_paddle.pth checkpoints/rtdetr_r50vd_6x_coco.pth
# and test with  python tools/test.py THIS_CONFIG checkpoints/rtdetr_r50vd_6x_coco.pth
_base_ = './_base_/rtdetr_6x_coco.py'
