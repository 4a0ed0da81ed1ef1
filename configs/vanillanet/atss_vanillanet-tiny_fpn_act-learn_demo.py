# Demo: ATSS with a small VanillaNet backbone, trained from scratch on CPU on the embedded synthetic
# shapes dataset (as configs/quickstart), with VanillaNet's deep-training schedule: act_learn ramps
# from 0 (ReLU between each block's two convs) to 1 (identity) over the first third of training.
# At the end the backbone is deployable at no cost in accuracy:
#
#   python tools/train.py configs/vanillanet/atss_vanillanet-tiny_fpn_act-learn_demo.py \
#       --work-dir work_dirs/vanillanet_demo
#   python tools/deploy/reparameterize.py \
#       configs/vanillanet/atss_vanillanet-tiny_fpn_act-learn_demo.py \
#       work_dirs/vanillanet_demo/iter_600.pth work_dirs/vanillanet_demo/deploy
#   python tools/test.py \
#       work_dirs/vanillanet_demo/deploy/atss_vanillanet-tiny_fpn_act-learn_demo_deploy.py \
#       work_dirs/vanillanet_demo/deploy/iter_600_deploy.pth
_base_ = '../quickstart/atss_vovnet-19-slim-dw-ese_fpn_demo.py'

max_iters = 600
model = dict(
    backbone=dict(
        _delete_=True,
        type='VanillaNet',
        arch=dict(dims=[32, 64, 128, 256], strides=[2, 2, 2], act_num=3),
        out_indices=(0, 1, 2),  # strides 8 / 16 / 32
        norm_eval=False,  # from scratch: BN statistics must train
        init_cfg=None),
    # P3-P6: the stride-4 level of the quickstart costs more than the whole backbone on a CPU
    neck=dict(in_channels=[64, 128, 256], num_outs=4),
    bbox_head=dict(anchor_generator=dict(strides=[8, 16, 32, 64])))

# Sets backbone.act_learn before every iteration (0 at the first); the constructor's default, 1,
# is the trained value that evaluating a final checkpoint needs.
custom_hooks = [dict(type='VanillaNetActLearnHook', ramp=max_iters // 3, by_epoch=False)]

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters, eta_min=2e-5),
]
default_hooks = dict(checkpoint=dict(interval=200, max_keep_ckpts=1))
