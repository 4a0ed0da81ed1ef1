# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Re-parameterise a trained detector's VanillaNet backbone into its deploy form.

    python tools/deploy/reparameterize.py CONFIG CHECKPOINT OUT_DIR [--cfg-options k=v ...]

Writes ``OUT_DIR/<checkpoint name>_deploy.pth`` (weights only) and ``OUT_DIR/<config
name>_deploy.py`` (the same config with ``backbone.deploy=True``), which ``tools/test.py``
evaluates to the same predictions and mAP:

    python tools/test.py OUT_DIR/<config name>_deploy.py OUT_DIR/<checkpoint name>_deploy.pth

Every VanillaNet in the model is switched (each BatchNorm folded, each block's two 1x1 convs
merged into one, the activations' norms folded). That is exact only for a network trained to
``act_learn = 1``: a checkpoint whose ``meta['act_learn']`` (written by
``VanillaNetActLearnHook``) is below 1 is refused. The check compares the backbone's features
before and after on a random image and reports the largest difference.
"""
import argparse
import copy
import importlib.util
import os
import os.path as osp
import sys

if importlib.util.find_spec('mmbackbones') is None:  # running from a source checkout
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mmbackbones  # noqa: E402,F401  (registrations + weights-only checkpoint loading)
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner.checkpoint import _load_checkpoint  # noqa: E402

from mmbackbones.config_scope import resolve_config_path  # noqa: E402
from mmbackbones.fileio import atomic_save  # noqa: E402
from mmbackbones.engine.hooks.act_learn import vanillanets  # noqa: E402


class ReparameterizeError(ValueError):
    """The checkpoint or config cannot be re-parameterised; the message says why."""


def deploy_config(cfg: Config) -> Config:
    """The config of the deploy-form detector: the backbone built deployed, no act_learn ramp."""
    cfg = copy.deepcopy(cfg)
    if cfg.model.backbone.get('type') != 'VanillaNet':
        raise ReparameterizeError(f"model.backbone.type is {cfg.model.backbone.get('type')!r}; "
                                  f'only VanillaNet backbones are re-parameterised.')
    cfg.model.backbone.deploy = True
    cfg.model.backbone.pop('act_learn', None)
    cfg.model.backbone.init_cfg = None  # the deploy checkpoint holds every weight
    hooks = [h for h in cfg.get('custom_hooks', None) or []
             if h.get('type') != 'VanillaNetActLearnHook']
    cfg.custom_hooks = hooks
    cfg.load_from = None
    cfg.resume = False
    return cfg


def reparameterize(config: str, checkpoint: str, out_dir: str, cfg_options=None,
                   probe_size: int = 224) -> dict:
    """Write the deploy-form checkpoint and config; return their paths and the check's diffs."""
    cfg = Config.fromfile(resolve_config_path(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    deploy_cfg = deploy_config(cfg)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import MODELS

    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    meta = dict(ckpt.get('meta', {})) if isinstance(ckpt, dict) else {}
    act_learn = meta.get('act_learn')
    if act_learn is not None and float(act_learn) != 1.0:
        raise ReparameterizeError(
            f"{checkpoint}: it was saved at act_learn={act_learn:g} (meta['act_learn']); the "
            f'deploy form is equivalent only at act_learn=1. Train until VanillaNetActLearnHook '
            f'has ramped to 1, then re-parameterise a later checkpoint.')
    state_dict = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt

    train_cfg = copy.deepcopy(cfg.model)
    train_cfg.backbone.init_cfg = None
    model = MODELS.build(train_cfg)
    result = model.load_state_dict(state_dict, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise ReparameterizeError(
            f'{checkpoint} does not match the model of {config}: missing {missing[:4]} '
            f'({len(missing)}), unexpected {unexpected[:4]} ({len(unexpected)}). Pass the '
            f'config the checkpoint was trained with.')
    model.eval()
    nets = vanillanets(model)
    if any(net.deploy for net in nets):
        raise ReparameterizeError(f'{checkpoint}: the VanillaNet backbone is already in deploy '
                                  f'form.')
    for net in nets:
        if act_learn is not None:  # the trained value (VanillaNetActLearnHook), checked above
            net.act_learn = 1.0
        elif net.act_learn != 1.0:
            raise ReparameterizeError(f'{config}: the backbone is built with act_learn='
                                      f'{net.act_learn:g} and the checkpoint does not say it '
                                      f'was trained to 1; set backbone.act_learn=1 if it was.')

    params_before = sum(p.numel() for p in model.backbone.parameters())
    probe = torch.randn(1, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.backbone(probe)
        for net in nets:
            net.switch_to_deploy()
        after = model.backbone(probe)
    diffs = [(a - b).abs().max().item() / max(a.abs().max().item(), 1e-12)
             for a, b in zip(before, after)]

    # The deploy model, built from the deploy config, must take the weights exactly.
    deploy_model = MODELS.build(deploy_cfg.model)
    deploy_model.load_state_dict(model.state_dict(), strict=True)

    os.makedirs(out_dir, exist_ok=True)
    ckpt_name = osp.splitext(osp.basename(checkpoint))[0]
    cfg_name = osp.splitext(osp.basename(config.split('::')[-1]))[0]
    out_ckpt = osp.join(out_dir, f'{ckpt_name}_deploy.pth')
    out_cfg = osp.join(out_dir, f'{cfg_name}_deploy.py')
    kept_meta = {k: v for k, v in meta.items() if k in ('epoch', 'iter', 'dataset_meta', 'seed')}
    atomic_save(dict(state_dict=model.state_dict(),
                     meta=dict(kept_meta, act_learn=1.0, reparameterized_from=checkpoint)),
                out_ckpt)
    deploy_cfg.dump(out_cfg)
    return dict(checkpoint=out_ckpt, config=out_cfg, relative_diffs=diffs,
                params_before=params_before,
                params_after=sum(p.numel() for p in deploy_model.backbone.parameters()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='trained detector checkpoint (train-form VanillaNet)')
    parser.add_argument('out_dir', help='where the deploy-form checkpoint and config go')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    args = parser.parse_args(argv)
    try:
        out = reparameterize(args.config, args.checkpoint, args.out_dir, args.cfg_options)
    except (ReparameterizeError, FileNotFoundError) as err:
        print(f'reparameterize.py: error: {err}', file=sys.stderr)
        return 1
    print(f'backbone parameters: {out["params_before"]:,} (train form) -> '
          f'{out["params_after"]:,} (deploy form)')
    print('backbone features, max |train - deploy| / max |train| per output: '
          + ', '.join(f'{d:.2e}' for d in out['relative_diffs']))
    print(f'wrote {out["checkpoint"]}\nwrote {out["config"]}\n'
          f'evaluate: python tools/test.py {out["config"]} {out["checkpoint"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
