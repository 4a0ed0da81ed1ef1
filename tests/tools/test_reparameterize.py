# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/deploy/reparameterize.py: the deploy-form detector tests (tools/test.py) the same."""
import pickle
import re
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

TINY_BACKBONE = dict(type='VanillaNet', arch=dict(dims=[8, 16, 24, 32], strides=[2, 2, 2]),
                     out_indices=(0, 1, 2))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_config, tiny_cfg_options):
    """A tiny VanillaNet RetinaNet config and a checkpoint of it with non-trivial BN statistics."""
    from mmdet.registry import MODELS

    from tests.numerics import randomize
    root = tmp_path_factory.mktemp('reparam')
    cfg = Config.fromfile(tiny_config)
    cfg.merge_from_dict(dict(opt.split('=', 1) for opt in tiny_cfg_options))
    cfg.model.backbone = dict(TINY_BACKBONE)
    cfg.model.neck.in_channels = [16, 24, 32]
    cfg.custom_hooks = [dict(type='VanillaNetActLearnHook', ramp=2, by_epoch=False)]
    cfg.experiment_name = f'reparam_{uuid.uuid4().hex[:8]}'
    config = root / 'tiny_vanillanet_retinanet.py'
    cfg.dump(str(config))
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    randomize(model.backbone, seed=7)
    with torch.no_grad():  # the demo data are RGB-ish images: keep features informative
        for name, p in model.backbone.named_parameters():
            if name.endswith('act.weight'):
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    checkpoint = root / 'iter_8.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=8, act_learn=1.0)), checkpoint)
    half = root / 'iter_1.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=1, act_learn=0.5)), half)
    return dict(config=config, checkpoint=checkpoint, half=half, root=root)


def predictions(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def test_deploy_checkpoint_evaluates_the_same(trained, run_tool, tiny_cfg_options, tmp_path):
    out_dir = tmp_path / 'deploy'
    proc = run_tool('deploy/reparameterize.py', trained['config'], trained['checkpoint'], out_dir)
    assert proc.returncode == 0, proc.stdout[-4000:]
    diffs = [float(d) for d in re.search(r'per output: (.*)', proc.stdout)[1].split(', ')]
    assert len(diffs) == 3 and max(diffs) < 1e-5, proc.stdout
    deploy_cfg, deploy_ckpt = out_dir / 'tiny_vanillanet_retinanet_deploy.py', \
        out_dir / 'iter_8_deploy.pth'
    assert deploy_cfg.is_file() and deploy_ckpt.is_file()
    cfg = Config.fromfile(str(deploy_cfg))
    assert cfg.model.backbone.deploy is True and cfg.custom_hooks == []

    results = {}
    for name, config, checkpoint in [('train', trained['config'], trained['checkpoint']),
                                     ('deploy', deploy_cfg, deploy_ckpt)]:
        pkl = tmp_path / f'{name}.pkl'
        proc = run_tool('test.py', config, checkpoint, '--work-dir', tmp_path / name, '--out', pkl)
        assert proc.returncode == 0, proc.stdout[-6000:]
        results[name] = (re.search(r'coco/bbox_mAP: (\S+)', proc.stdout)[1], predictions(pkl))
    assert results['train'][0] == results['deploy'][0]
    for a, b in zip(results['train'][1], results['deploy'][1]):
        a, b = a['pred_instances'], b['pred_instances']
        assert len(a['scores']) > 0  # something to compare
        torch.testing.assert_close(a['scores'], b['scores'], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a['bboxes'], b['bboxes'], rtol=1e-4, atol=1e-2)
        assert torch.equal(a['labels'], b['labels'])


def test_mid_ramp_checkpoint_is_refused(trained, load_tool, tmp_path, capsys):
    tool = load_tool('deploy/reparameterize')
    assert tool.main([str(trained['config']), str(trained['half']), str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert "saved at act_learn=0.5 (meta['act_learn'])" in err
    assert not (tmp_path / 'out').exists()
