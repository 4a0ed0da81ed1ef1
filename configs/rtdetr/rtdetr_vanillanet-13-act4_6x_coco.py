# RT-DETR with a VanillaNet-13 backbone in its official detection form (act_num=4, the 9x9
# series activation; huawei-noah/VanillaNet detection configs), strides 8/16/32, on the
# RT-DETR-R50 recipe (_base_/rtdetr_6x_coco.py: encoder 256 wide, 6 decoder layers, backbone
# lr x0.1). No published RT-DETR result exists for this backbone.
#
# What to know:
# - The features are wide (1024/2048/4096 channels); the encoder's 1x1 input projections bring
#   them to hidden_dim=256, as for ResNet-50's 512/1024/2048.
# - As in the official detection models, nothing is frozen and BN trains (SyncBN, eps 1e-6:
#   use several GPUs or switch to BN for one); the series activation has no act_learn ramp
#   (the pretrained net is at act_learn=1), so a trained model re-parameterises with
#   tools/deploy/reparameterize.py.
# - The weights expect RGB with ImageNet mean/std, so the preprocessor normalises (the RT-DETR
#   backbones take [0, 1]); Expand's fill 0 stays black in pixel space.
# - The official VanillaNet detection recipe (AdamW wd 0.05, layer-wise lr decay) is not used.
#
# Weights: mmbackbones://vanillanet/vanillanet_13_act_num_4_kd_pretrain (huawei-noah/VanillaNet,
# MIT), downloaded once, checked and converted on first use (`python tools/fetch_weights.py
# vanillanet/vanillanet_13_act_num_4_kd_pretrain` offline).
_base_ = './_base_/rtdetr_6x_coco.py'

model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='VanillaNet',
        arch='vanillanet_13',
        act_num=4,
        out_indices=(1, 8, 10),  # VanillaNet.out_indices_for_strides('vanillanet_13', (8, 16, 32))
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', eps=1e-6, requires_grad=True),
        norm_eval=False,
        init_cfg=dict(type='Pretrained',
                      checkpoint='mmbackbones://vanillanet/vanillanet_13_act_num_4_kd_pretrain')),
    neck=dict(in_channels=[1024, 2048, 4096]))
