# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Every config in configs/rtdetr/ loads, builds and trains one step with denoising on; the
official-setting configs cite the published numbers and carry the official model settings; the
recipe's optimiser groups and EMA schedule are the official ones; a swapped backbone with the
wrong encoder in_channels fails at config load and at build with the channels to use.

This file is where RT-DETR configs get their loss step (tests/configs/test_configs.py leaves
configs/rtdetr/ to it). No weights are loaded (init_weights is never called), so nothing
downloads."""
import copy
import functools
import math
import re

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmbackbones  # noqa: F401
from mmbackbones.engine.launch import UsageError, check_neck_in_channels
from tests.paths import REPO

CONFIG_DIR = REPO / 'configs' / 'rtdetr'
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob('*.py'))

#: lyuwenyu/RT-DETR README (rtdetr_paddle model zoo): AP, AP50, params (M), GFLOPs, T4 TensorRT
#: FP16 FPS, and the official model settings (backbone depth/arch, encoder hidden_dim and
#: dim_feedforward, CSP expansion, decoder layers, backbone lr multiplier).
OFFICIAL = {
    'rtdetr_r18vd_dec3_6x_coco.py': ((46.5, 63.8, 20, 60, 217), (18, 256, 1024, 0.5, 3, 0.1)),
    'rtdetr_r34vd_dec4_6x_coco.py': ((48.9, 66.8, 31, 92, 161), (34, 256, 1024, 0.5, 4, 0.1)),
    'rtdetr_r50vd_6x_coco.py': ((53.1, 71.3, 42, 136, 108), (50, 256, 1024, 1.0, 6, 0.1)),
    'rtdetr_r101vd_6x_coco.py': ((54.3, 72.7, 76, 259, 74), (101, 384, 2048, 1.0, 6, 0.01)),
    'rtdetr_hgnetv2_l_6x_coco.py': ((53.0, 71.6, 32, 110, 114), ('L', 256, 1024, 1.0, 6, 0.05)),
    'rtdetr_hgnetv2_x_6x_coco.py': ((54.8, 73.1, 67, 234, 74), ('X', 384, 2048, 1.0, 6, 0.01)),
}
SWAPS = ['rtdetr_vanillanet-13-act4_6x_coco.py', 'rtdetr_shufflenetv2-x1.5_6x_coco.py',
         'rtdetr_yolov8-s_6x_coco.py', 'rtdetr_yolov8-m_6x_coco.py',
         'rtdetr_vovnet-39-ese_6x_coco.py', 'rtdetr_moganet-small_6x_coco.py',
         'rtdetr_timm-convnext-tiny_6x_coco.py', 'rtdetr_mmdet-r50_6x_coco.py']
OFFICIAL_SIZES = [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800]


@functools.lru_cache(maxsize=None)
def _parsed(name: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / name))


def load(name: str) -> Config:
    """A fresh copy of the parsed config (each is parsed once per session)."""
    return copy.deepcopy(_parsed(name))


def test_the_expected_configs_are_there():
    assert set(OFFICIAL) | set(SWAPS) | {'rtdetr_vovnet-19-slim-dw-ese_demo.py'} <= set(CONFIGS)


def tiny_batch():
    """One 128x128 image, the smallest input with at least 300 encoder tokens (16^2 + 8^2 +
    4^2 = 336) for the 300 queries."""
    sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128),
                                         scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10., 12., 60., 70.], [50., 20., 120., 90.]]),
        labels=torch.tensor([1, 3]))
    return dict(inputs=[torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8)],
                data_samples=[sample])


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_and_trains_one_step_with_denoising(name):
    torch.manual_seed(0)
    cfg = load(name)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)  # no init_weights: no weights are read or downloaded
    model.train()
    check_optimiser_groups(name, cfg, model)
    # training=False: the batch augment would resize the batch to 480..800 px (it has its own
    # loss-step test in test_batch_resize.py); everything else of the preprocessor runs.
    data = model.data_preprocessor(tiny_batch(), False)
    losses = model(**data, mode='loss')
    dn = [k for k in losses if k.startswith('dn.')]
    layers = model.bbox_head.num_decoder_layers
    assert len(dn) == 3 * layers, sorted(losses)  # vfl, bbox, giou per decoder layer
    assert {'loss_vfl', 'loss_bbox', 'loss_giou', 'enc.loss_vfl'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    total, _ = model.parse_losses(losses)
    total.backward()
    for part in (model.neck, model.bbox_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    trainable = [p for p in model.backbone.parameters() if p.requires_grad]
    assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.parametrize('name', sorted(set(CONFIGS) - {'rtdetr_vovnet-19-slim-dw-ese_demo.py'}))
def test_coco_configs_share_the_recipe(name):
    cfg = load(name)
    pre = cfg.model.data_preprocessor
    assert [a.type for a in pre.batch_augments] == ['RTDETRBatchRandomResize']
    assert pre.batch_augments[0].get('sizes', OFFICIAL_SIZES) == OFFICIAL_SIZES
    assert cfg.train_cfg.max_epochs == 72
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                                               weight_decay=1e-4)
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.1
    assert [h.type for h in cfg.custom_hooks] == ['EMAHook']
    init_cfg = cfg.model.backbone.init_cfg
    assert init_cfg.type == 'Pretrained'
    assert init_cfg.checkpoint.startswith(('mmbackbones://', 'torchvision://')), init_cfg


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_official_configs_cite_the_published_numbers_and_settings(name):
    (ap, ap50, params, gflops, fps), settings = OFFICIAL[name]
    text = (CONFIG_DIR / name).read_text()
    header = ' '.join(line.lstrip('# ') for line in text.splitlines() if line.startswith('#'))
    cited = re.search(r'AP ([\d.]+), AP50 ([\d.]+), (\d+)M params, (\d+) GFLOPs, (\d+) FPS',
                      header)
    assert cited, f'{name}: no published numbers in the header'
    assert [float(x) for x in cited.groups()] == [ap, ap50, params, gflops, fps]
    arch, hidden, ffn, expansion, layers, backbone_lr = settings
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.get('depth', backbone.get('arch')) == arch
    assert tuple(backbone.out_indices) == (1, 2, 3)
    assert (cfg.model.neck.hidden_dim, cfg.model.neck.dim_feedforward) == (hidden, ffn)
    assert cfg.model.neck.expansion == expansion
    assert cfg.model.bbox_head.in_channels == [hidden] * 3
    assert cfg.model.bbox_head.num_decoder_layers == layers
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['backbone'].lr_mult == backbone_lr
    small = arch in (18, 34)  # R18/R34 train every backbone stage and BN, the others freeze
    assert backbone.frozen_stages == (-1 if small else 0)
    assert backbone.freeze_norm is (not small)
    assert checkpoint_name(backbone) == {18: 'presnet/R18', 34: 'presnet/R34',
                                         50: 'presnet/R50', 101: 'presnet/R101',
                                         'L': 'hgnetv2/L', 'X': 'hgnetv2/X'}[arch]


def checkpoint_name(backbone) -> str:
    return backbone.init_cfg.checkpoint[len('mmbackbones://'):]


#: norm layers by module type (timm's LayerNorm2d, BatchNormAct2d subclass these)
NORM_TYPES = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
#: parameters a config exempts from weight decay by name (ConvNeXt's layer scales)
NO_DECAY_NAMES = {'rtdetr_timm-convnext-tiny_6x_coco.py': r'^backbone\..*\.gamma$'}


def check_optimiser_groups(name, cfg, model):
    """The official regexes (optimizer.yml, rtdetr_r18vd_6x_coco.yml), parameter by parameter of
    the built optimizer: backbone lr x the config's backbone multiplier, the rest the base lr;
    weight decay 0 on every norm (backbone norms included), on the encoder's and decoder's
    biases and on the config's listed exemptions; the base weight decay on everything else (the
    backbone's biases too: the official backbone group sets only the lr). Frozen parameters are
    not in the optimizer. Called on the model the loss-step test builds."""
    optim_cfg = cfg.optim_wrapper
    base_lr, base_wd = optim_cfg.optimizer.lr, optim_cfg.optimizer.weight_decay
    keys = optim_cfg.get('paramwise_cfg', {}).get('custom_keys', {})
    recipe = 'backbone' in keys  # the demo (no key) trains the backbone at the full lr
    backbone_lr = base_lr * keys['backbone'].lr_mult if recipe else base_lr
    no_decay_name = re.compile(NO_DECAY_NAMES.get(name, r'^$'))
    optim = build_optim_wrapper(model, optim_cfg)
    groups = {}
    for group in optim.optimizer.param_groups:
        for param in group['params']:
            assert id(param) not in groups, 'a parameter is in two groups'
            groups[id(param)] = group
    checked = norms = 0
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f'{module_name}.{param_name}'
            if not param.requires_grad:
                assert id(param) not in groups, f'{name}: frozen {full} is in the optimizer'
                continue
            group = groups[id(param)]
            in_backbone = full.startswith('backbone.')
            is_norm = isinstance(module, NORM_TYPES)
            no_decay = (is_norm or bool(no_decay_name.match(full))
                        or (param_name == 'bias' and (not in_backbone or not recipe)))
            assert group['lr'] == pytest.approx(backbone_lr if in_backbone else base_lr), (
                name, full, group['lr'])
            assert group['weight_decay'] == (0.0 if no_decay else base_wd), (
                name, full, group['weight_decay'])
            checked += 1
            norms += is_norm and in_backbone
    assert checked == len(groups) == sum(p.requires_grad for p in model.parameters())
    if name == 'rtdetr_r18vd_dec3_6x_coco.py':  # every BN of PResNet-18 trains, at decay 0
        assert norms == 2 * 23


def test_ema_hook_is_the_official_model_ema():
    """mmdet's ExpMomentumEMA(momentum=1e-4, gamma=2000) against the official ModelEMA rule
    (decay 0.9999 * (1 - exp(-updates / 2000)), written out here), after the first update."""
    from mmdet.models.layers import ExpMomentumEMA
    cfg = load('rtdetr_r50vd_6x_coco.py')
    hook = cfg.custom_hooks[0]
    assert (hook.ema_type, hook.momentum, hook.gamma, hook.update_buffers) == (
        'ExpMomentumEMA', 0.0001, 2000, True)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ema = ExpMomentumEMA(net, momentum=hook.momentum, gamma=hook.gamma, update_buffers=True)
    official = None
    for updates in range(1, 2001):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update_parameters(net)
        current = torch.cat([p.detach().flatten() for p in net.parameters()])
        if official is None:  # mmengine's first update copies the model
            official = current.clone()
        else:
            decay = 0.9999 * (1 - math.exp(-updates / 2000))
            official = decay * official + (1 - decay) * current
    averaged = torch.cat([p.detach().flatten() for p in ema.module.parameters()])
    torch.testing.assert_close(averaged, official, rtol=1e-5, atol=1e-5)


def test_swap_config_with_wrong_encoder_channels_fails_clearly():
    cfg = load('rtdetr_yolov8-s_6x_coco.py')
    cfg.model.neck.in_channels = [128, 256, 1024]
    with pytest.raises(UsageError, match=re.escape('Set model.neck.in_channels=[128, 256, 512]')):
        check_neck_in_channels(cfg)
    init_default_scope('mmdet')
    with pytest.raises(ValueError, match=re.escape('set model.neck.in_channels=[128, 256, 512]')):
        MODELS.build(cfg.model)


def test_convnext_layer_scales_get_no_weight_decay():
    """mmengine applies the longest matching custom key; every ConvNeXt gamma must hit a gamma
    key (weight decay 0, backbone lr), not the shorter 'backbone' key."""
    cfg = load('rtdetr_timm-convnext-tiny_6x_coco.py')
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    ordered = sorted(sorted(keys), key=len, reverse=True)  # mmengine's matching order
    init_default_scope('mmdet')
    with torch.device('meta'):
        backbone = MODELS.build(cfg.model.backbone)
    gammas = [f'backbone.{n}' for n, _ in backbone.named_parameters() if n.endswith('gamma')]
    assert len(gammas) == 18  # 3 + 3 + 9 + 3 blocks
    for name in gammas:
        key = next(k for k in ordered if k in name)
        assert keys[key] == dict(lr_mult=0.1, decay_mult=0.0), (name, key)
