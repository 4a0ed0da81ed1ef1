# Faster R-CNN "FPNLite" (FPN with 128 channels, as in the official zoo), VoVNetV2-19, 3x ms.
_base_ = './faster-rcnn_vovnet-19-ese_fpn_ms-3x_coco.py'

model = dict(
    neck=dict(out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=128), bbox_head=dict(in_channels=128)))
