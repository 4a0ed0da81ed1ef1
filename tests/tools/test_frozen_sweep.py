# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/frozen_sweep.py on the tiny RetinaNet: real trainings, numbers checked against the logs."""
import csv
import json
import statistics
from pathlib import Path

import pytest

TRAIN_OPTIONS = ['train_cfg.max_iters=4', 'train_cfg.val_interval=2']


def read_run_logs(run_dir: Path):
    """The run's mmengine scalar log, parsed here independently of the tool."""
    (path, ) = run_dir.glob('*/vis_data/scalars.json')  # one session per run in these tests
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [e for e in entries if 'loss' in e]
    val = [e for e in entries if 'coco/bbox_mAP' in e]
    return train, val, path


@pytest.fixture(scope='module')
def sweep(tmp_path_factory, run_tool, tiny_config, tiny_cfg_options):
    """A sweep run in two halves: ``--stages -1``, then (resumed) ``--stages -1 2`` plus a
    schedule whose value is out of range for the backbone, so that run fails."""
    work_dir = tmp_path_factory.mktemp('sweep')

    def run(*args):
        return run_tool('frozen_sweep.py', tiny_config, '--work-dir', work_dir, *args,
                        '--cfg-options', *tiny_cfg_options, *TRAIN_OPTIONS, timeout=600)

    first = run('--stages', '-1')
    assert first.returncode == 0, first.stdout[-6000:]
    first_log = read_run_logs(work_dir / 'frozen_stages_-1' / 'seed_0')[2]
    first_stamp = first_log.stat().st_mtime_ns
    second = run('--stages', '-1', '2', '--schedule', '0:9')
    return dict(work_dir=work_dir, first=first, second=second, first_log=first_log,
                first_stamp=first_stamp)


def test_resume_skips_finished_runs_and_reports_failures(sweep):
    work_dir, out = sweep['work_dir'], sweep['second'].stdout
    assert sweep['second'].returncode == 1, out[-6000:]  # one run failed
    assert 'frozen_stages_-1 seed 0: done earlier, not re-run' in out, out[-3000:]
    assert 'frozen_stages_2 seed 0: done' in out, out[-3000:]
    assert sweep['first_log'].stat().st_mtime_ns == sweep['first_stamp']
    assert len(list((work_dir / 'frozen_stages_-1' / 'seed_0').glob('*/vis_data'))) == 1
    error = ('ValueError: FrozenStagesScheduleHook: schedule entries {0: 9} are out of range '
             'for VoVNet')
    assert error in out
    md = (work_dir / 'sweep.md').read_text()
    failed_row = next(line for line in md.splitlines() if line.startswith('| schedule_0-9/seed_0'))
    assert '| failed |' in failed_row and error in failed_row
    rows = {r['setting']: r for r in csv.DictReader((work_dir / 'sweep.csv').open())}
    assert rows['schedule_0-9']['status'] == 'failed' and error in rows['schedule_0-9']['error']
    assert (work_dir / 'sweep.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_table_holds_the_numbers_of_the_logs(sweep, tiny_config):
    work_dir = sweep['work_dir']
    rows = {r['setting']: r for r in csv.DictReader((work_dir / 'sweep.csv').open())}
    md_rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[1:-1]]
               for line in (work_dir / 'sweep.md').read_text().splitlines()
               if line.startswith('| -1 ') or line.startswith('| 2 ')}
    for stages in (-1, 2):
        row = rows[f'frozen_stages_{stages}']
        assert row['status'] == 'done'
        train, val, _ = read_run_logs(work_dir / f'frozen_stages_{stages}' / 'seed_0')
        assert [e['iter'] for e in train] == [1, 2, 3, 4]  # logger interval 1
        assert len(val) == 2  # after iterations 2 and 4
        maps = [e['coco/bbox_mAP'] for e in val]
        expected = dict(
            iters=4, bbox_mAP=maps[-1], bbox_mAP_best=max(maps),
            time_per_iter_s=statistics.median(e['time'] for e in train[1:]),
            peak_mem_mb=max(e['peak_rss_mb'] for e in train),
            trainable_params=train[-1]['trainable_params'],
            frozen_params=train[-1]['frozen_params'],
            backbone_gflops=train[-1]['backbone_gflops'],
            backbone_grad_gflops=train[-1]['backbone_grad_gflops'])
        for key, value in expected.items():
            assert float(row[key]) == pytest.approx(value), (stages, key)
        assert row['mem_kind'] == 'rss'
        cells = md_rows[str(stages)]
        assert cells[2] == f'{maps[-1]:.3f}' and cells[3] == f'{max(maps):.3f}'
        assert cells[4] == f'{expected["time_per_iter_s"]:.3f}'
        assert cells[5] == f'{expected["peak_mem_mb"]:.0f}'
        assert cells[6] == f'{expected["trainable_params"] * 1e-6:.3f}'

    # The logged parameter counts and FLOPs are those of the real model.
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    backbone = MODELS.build(Config.fromfile(tiny_config).model.backbone)
    frozen = sum(p.numel() for m in [backbone.stem, *backbone.stages[:2]] for p in m.parameters())
    assert int(rows['frozen_stages_2']['frozen_params']) == frozen
    assert int(rows['frozen_stages_-1']['frozen_params']) == 0
    total = int(rows['frozen_stages_-1']['trainable_params'])
    assert int(rows['frozen_stages_2']['trainable_params']) == total - frozen
    all_flops = float(rows['frozen_stages_-1']['backbone_gflops'])
    assert float(rows['frozen_stages_-1']['backbone_grad_gflops']) == all_flops
    assert 0 < float(rows['frozen_stages_2']['backbone_grad_gflops']) < all_flops


def test_dry_run_prints_commands_for_every_resnet_stage(load_tool, tmp_path, capsys):
    """Without --stages, mmdet's ResNet-50 config gives -1 .. 4; slurm commands are printed."""
    tool = load_tool('frozen_sweep')
    assert tool.main(['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '--work-dir',
                      str(tmp_path), '--dry-run', '--launcher', 'slurm', '--gpus', '8']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    for stages, line in zip(range(-1, 5), lines):
        assert line.startswith('srun -p ${PARTITION} --gres=gpu:8')
        assert line.endswith('--launcher slurm')
        config = tmp_path / 'configs' / f'frozen_stages_{stages}_seed_0.py'
        assert str(config) in line and f'frozen_stages_{stages}/seed_0' in line
        text = config.read_text()
        assert f'frozen_stages={stages})' in text and "'type': 'TrainCostHook'" in text
        assert "_base_ = ['/" in text and "retinanet_r50_fpn_1x_coco.py']" in text
    from mmengine.config import Config
    generated = Config.fromfile(tmp_path / 'configs' / 'frozen_stages_2_seed_0.py')
    assert generated.model.backbone.type == 'ResNet'
    assert generated.model.backbone.frozen_stages == 2 and generated.randomness.seed == 0
    assert not (tmp_path / 'sweep.csv').exists()  # nothing ran, nothing reported
    with pytest.raises(SystemExit) as exc:
        tool.main(['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '--stages', '5', '--dry-run',
                   '--work-dir', str(tmp_path)])
    assert '--stages [5] are not valid for ResNet; choose from [-1, 0, 1, 2, 3, 4]' in \
        str(exc.value.code)


def test_rtdetr_run_reports_the_numbers_of_its_log(tmp_path, run_tool, tiny_rtdetr_config,
                                                   tiny_cfg_options):
    """One RT-DETR run (backbone out_indices (1, 2, 3), stages 1 and 2 frozen) through the sweep:
    its row holds the numbers of its own log and the frozen parameters are the stem's and the
    first two stages'; neck and head train."""
    proc = run_tool('frozen_sweep.py', tiny_rtdetr_config, '--work-dir', tmp_path, '--stages',
                    '2', '--cfg-options', *tiny_cfg_options, 'train_cfg.max_iters=2',
                    'train_cfg.val_interval=2', timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    (row, ) = list(csv.DictReader((tmp_path / 'sweep.csv').open()))
    assert row['setting'] == 'frozen_stages_2' and row['status'] == 'done', row
    train, val, _ = read_run_logs(tmp_path / 'frozen_stages_2' / 'seed_0')
    assert [e['iter'] for e in train] == [1, 2] and len(val) == 1
    assert float(row['bbox_mAP']) == pytest.approx(val[-1]['coco/bbox_mAP'])
    assert float(row['time_per_iter_s']) == pytest.approx(train[1]['time'])

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    model = MODELS.build(Config.fromfile(tiny_rtdetr_config).model)
    backbone = model.backbone
    frozen = sum(p.numel() for m in [backbone.stem, *backbone.stages[:2]] for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert int(row['frozen_params']) == frozen > 0
    assert int(row['trainable_params']) == total - frozen
    assert 0 < float(row['backbone_grad_gflops']) < float(row['backbone_gflops'])


def test_dry_run_on_the_rtdetr_r18_config(load_tool, tmp_path, capsys):
    """PResNet-18vd of RT-DETR: -1 .. 4, and each generated config freezes what it names."""
    tool = load_tool('frozen_sweep')
    config = str(Path(__file__).resolve().parents[2] / 'configs' / 'rtdetr' /
                 'rtdetr_r18vd_dec3_6x_coco.py')
    assert tool.main([config, '--work-dir', str(tmp_path), '--dry-run']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split('frozen_stages_')[1].split('_seed')[0] for line in lines] == \
        ['-1', '0', '1', '2', '3', '4']
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    for stages in (-1, 2, 4):
        cfg = Config.fromfile(tmp_path / 'configs' / f'frozen_stages_{stages}_seed_0.py')
        assert cfg.model.type == 'RTDETR' and cfg.model.backbone.out_indices == (1, 2, 3)
        backbone = MODELS.build(cfg.model.backbone)
        groups = [backbone.stem, *backbone.stages]
        for k, group in enumerate(groups):
            assert all(p.requires_grad == (k > stages) for p in group.parameters()), (stages, k)
