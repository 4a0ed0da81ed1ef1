# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/test.py evaluates a trained checkpoint and dumps predictions with --out."""
import pickle
import re

import pytest
import torch


def test_evaluates_checkpoint_and_dumps_predictions(tiny_trained_run, tmp_path, run_tool,
                                                    tiny_config, tiny_cfg_options,
                                                    tiny_demo_data):
    out = tmp_path / 'preds.pkl'
    proc = run_tool('test.py', tiny_config, tiny_trained_run / 'iter_4.pth', '--work-dir',
                    tmp_path / 'test', '--out', out, '--cfg-options', *tiny_cfg_options)
    log = proc.stdout
    assert proc.returncode == 0, log[-6000:]
    assert 'Loads checkpoint by local_weights_only backend' in log, log[-6000:]
    assert 'coco/bbox_mAP' in log, log[-6000:]  # CocoMetric ran

    with open(out, 'rb') as f:
        preds = pickle.load(f)  # our own file, written by mmdet's DumpDetResults
    assert len(preds) == tiny_demo_data['stats']['val']['images'] == 4
    for pred in preds:
        assert {'img_id', 'pred_instances'} <= set(pred)
        assert set(pred['pred_instances']) >= {'bboxes', 'scores', 'labels'}
        assert pred['pred_instances']['bboxes'].shape[-1] == 4


def test_show_dir_writes_painted_images(tiny_trained_run, tmp_path, run_tool, tiny_config,
                                        tiny_cfg_options):
    work_dir = tmp_path / 'test'
    proc = run_tool('test.py', tiny_config, tiny_trained_run / 'iter_4.pth', '--work-dir',
                    work_dir, '--show-dir', 'painted', '--cfg-options', *tiny_cfg_options)
    assert proc.returncode == 0, proc.stdout[-6000:]
    painted = list(work_dir.glob('*/painted/*.png'))
    assert len(painted) == 4, sorted(map(str, work_dir.rglob('*')))


def test_tta_wraps_the_model_and_still_evaluates(tiny_trained_run, tmp_path, run_tool,
                                                 tiny_config, tiny_cfg_options):
    out = tmp_path / 'tta.pkl'
    proc = run_tool('test.py', tiny_config, tiny_trained_run / 'iter_4.pth', '--work-dir',
                    tmp_path / 'test', '--tta', '--out', out, '--cfg-options', *tiny_cfg_options)
    log = proc.stdout
    assert proc.returncode == 0, log[-6000:]
    assert '--tta: the config has no tta_model; using DetTTAModel' in log
    assert 'coco/bbox_mAP' in log, log[-6000:]
    dumped = (tmp_path / 'test').glob('*/vis_data/config.py')
    assert any("type='DetTTAModel'" in p.read_text() for p in dumped)
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 4


@pytest.mark.parametrize('bad, message', [
    (['--out', 'preds.json'], "--out: 'preds.json' must end with .pkl"),
    (['--wait-time', '-1'], '--wait-time: must be >= 0 seconds, got -1.0'),
    (['--launcher', 'ssh'], "argument --launcher: invalid choice: 'ssh'"),
    (['--show', '--cfg-options', 'default_hooks.visualization=None'],
     '--show/--show-dir need default_hooks.visualization'),
])
def test_bad_arguments_are_explained(tiny_trained_run, tmp_path, load_tool, capsys, tiny_config,
                                     bad, message):
    with pytest.raises(SystemExit) as exit_info:
        load_tool('test').main([tiny_config, str(tiny_trained_run / 'iter_4.pth'), '--work-dir',
                                str(tmp_path), *bad])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_or_truncated_checkpoint_is_reported_before_building(tmp_path, load_tool, capsys,
                                                                     tiny_config,
                                                                     tiny_trained_run):
    tool = load_tool('test')
    missing = tmp_path / 'none.pth'
    with pytest.raises(SystemExit) as exit_info:
        tool.main([tiny_config, str(missing)])
    assert exit_info.value.code == 2
    assert f"checkpoint: '{missing}' does not exist" in capsys.readouterr().err

    torn = tmp_path / 'torn.pth'
    torn.write_bytes((tiny_trained_run / 'iter_4.pth').read_bytes()[:1000])
    with pytest.raises(SystemExit) as exit_info:
        tool.main([tiny_config, str(torn)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'truncated or corrupt' in err and str(torn) in err


def test_rtdetr_checkpoint_predictions_match_in_process_inference(tmp_path, run_tool,
                                                                  tiny_rtdetr_config,
                                                                  tiny_cfg_options):
    """RT-DETR (no NMS, top-k over query x class): the tool loads the weights, evaluates, and
    dumps exactly what mmdet's own ``inference_detector`` predicts with them."""
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(tiny_rtdetr_config)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    checkpoint = tmp_path / 'rtdetr.pth'
    torch.save(dict(meta=dict(iter=0), state_dict=model.state_dict()), checkpoint)

    out = tmp_path / 'preds.pkl'
    proc = run_tool('test.py', tiny_rtdetr_config, checkpoint, '--work-dir', tmp_path / 'test',
                    '--out', out, '--cfg-options', *tiny_cfg_options)
    log = proc.stdout
    assert proc.returncode == 0, log[-6000:]
    assert 'Loads checkpoint by local_weights_only backend' in log, log[-6000:]
    assert re.search(r'coco/bbox_mAP: -?\d', log), log[-6000:]  # CocoMetric ran and scored
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert sorted(p['img_id'] for p in preds) == [1, 2, 3, 4]

    reference = init_detector(cfg, str(checkpoint), device='cpu')
    for pred in preds:
        got = pred['pred_instances']
        assert len(got['scores']) == cfg.model.test_cfg.max_per_img == 10
        want = inference_detector(reference, pred['img_path']).pred_instances
        torch.testing.assert_close(got['scores'], want.scores.cpu())
        torch.testing.assert_close(got['labels'], want.labels.cpu())
        torch.testing.assert_close(got['bboxes'], want.bboxes.cpu())
