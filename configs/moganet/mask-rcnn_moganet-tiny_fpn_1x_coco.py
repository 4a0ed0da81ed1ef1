# Mask R-CNN with a MogaNet-Tiny backbone: the official recipe (see the XTiny config).
# Weights: mmbackbones://moganet/tiny (Westlake-AI/MogaNet, Apache-2.0), downloaded once, checked
# and converted on first use. Without internet: `python tools/fetch_weights.py moganet/tiny` where
# there is, then copy the cache (docs/model_zoo.md).
_base_ = './mask-rcnn_moganet-xtiny_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://moganet/tiny')),
    neck=dict(in_channels=[32, 64, 128, 256]))
