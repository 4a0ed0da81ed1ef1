# RT-DETR-R18: ResNet-18-vd, CSP expansion 0.5, 3 decoder layers; otherwise as the R50 config.
#   python tools/model_converters/rtdetr_official_detector.py \
#       rtdetr_r18vd_dec3_6x_coco_from_paddle.pth checkpoints/rtdetr_r18vd_dec3_6x_coco.pth
_base_ = './rtdetr_r50vd_6x_coco.py'

model = dict(
    backbone=dict(depth=18, frozen_stages=-1, freeze_norm=False,
                  init_cfg=dict(type='Pretrained',
                                checkpoint='checkpoints/presnet18-vd_rtdetr.pth')),
    neck=dict(in_channels=[128, 256, 512], expansion=0.5),
    bbox_head=dict(num_decoder_layers=3))
