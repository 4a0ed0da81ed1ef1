# Quickstart: ATSS with a VoVNetV2-19-slim-eSE backbone and mmdet's FPN, trained from scratch on
# CPU on the embedded synthetic shapes dataset (mmbackbones.datasets.make_demo_dataset).
#
#   bash tools/demo.sh        # generates data/demo, trains, evaluates, draws predictions
#
# Everything but the backbone is mmdet's: the ATSS detector, FPN, head, losses, COCO metric.
# The detector, data, optimiser and seed are those of the backbone study's detector
# (atss_vovnet-19-slim-dw-ese_fpn_demo.py, docs/backbone_study.md); the backbone is the study's
# best at equal training time, and 1060 iterations are the time mmdet's ResNet-18 needs for
# 782 in the same detector (the study's 988 s budget on 2 cores): this is that study run.
_base_ = './atss_vovnet-19-slim-dw-ese_fpn_demo.py'

max_iters = 1060
warmup_iters = 88  # the study's warm-up: 1/12 of the run, as 100 of the base's 1200

model = dict(
    backbone=dict(arch='V-19-slim-eSE'),  # standard 3x3 convs where -slim-dw has depthwise ones
    neck=dict(in_channels=[112, 256, 384, 512]))

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup_iters, end=max_iters,
         eta_min=2e-5),
]
default_hooks = dict(checkpoint=dict(interval=500))
