# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/analysis/backbone_study.py: plan arithmetic, candidates, resume, report, one real run."""
import json
import os
from pathlib import Path

import pytest
import torch

from mmbackbones.analysis import backbone_study as bs

# Shrinks the quickstart detector for the real run: tiny batch, small FPN / head, no workers;
# score_thr 0 so a few iterations still leave boxes to evaluate.
TINY_OPTIONS = [
    'train_dataloader.batch_size=1', 'model.neck.out_channels=32',
    'model.bbox_head.in_channels=32', 'model.bbox_head.feat_channels=32',
    'model.bbox_head.stacked_convs=1', 'model.test_cfg.score_thr=0.0',
] + [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
     for key in ('num_workers=0', 'persistent_workers=False')]


def test_plan_iterations_from_ratios():
    n_ref, iters = bs.plan_iterations(60, 200.0, {'a': 1.0, 'b': 2.0, 'c': 0.4, 'd': 0.7,
                                                  'slow': 1000.0})
    assert n_ref == 300  # 60 s / 0.2 s
    assert iters == {'a': 300, 'b': 150, 'c': 750, 'd': 429, 'slow': 2}  # 300/0.7 = 428.6
    assert bs.warmup_iters(1200, 1200, 100) == 100  # the quickstart itself
    assert bs.warmup_iters(300, 1200, 100) == 25
    assert bs.warmup_iters(2, 1200, 100) == 1
    with pytest.raises(ValueError, match='budget_s=0 must be > 0'):
        bs.plan_iterations(0, 200.0, {'a': 1.0})
    with pytest.raises(ValueError, match="b: train-step ratio -1.0 must be > 0"):
        bs.plan_iterations(10, 200.0, {'b': -1.0})


def test_candidate_validation():
    chosen = bs.select_candidates(['YOLOv8-n'])
    assert [c.name for c in chosen] == ['YOLOv8-n', bs.REFERENCE]  # reference always added
    with pytest.raises(ValueError) as info:
        bs.select_candidates(['YOLOv8n', 'nope'])
    msg = str(info.value)
    assert "--candidates: ['YOLOv8n', 'nope'] are not a study candidate" in msg
    assert "'YOLOv8n': did you mean 'YOLOv8-n'?" in msg
    assert ', '.join(bs.CANDIDATE_NAMES) in msg
    with pytest.raises(ValueError, match=r"\['HGNetV2-b0'\] given more than once"):
        bs.select_candidates(['HGNetV2-b0', 'HGNetV2-b0'])


def test_cli_argument_errors(load_tool, capsys):
    tool = load_tool('analysis/backbone_study')
    with pytest.raises(SystemExit) as exc:
        tool.main(['--candidates', 'ResNet18', '--dry-run'])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--candidates: ['ResNet18'] is not a study candidate" in err
    assert 'mmdet-ResNet-18' in err and 'VanillaNet-7' in err
    with pytest.raises(ValueError, match=r'--seeds: \[0, 0\] must be distinct'):
        bs.StudySettings(budget_s=1, candidates=bs.select_candidates(), seeds=[0, 0]).validate()
    with pytest.raises(ValueError, match='--budget-s: -5 must be a positive number'):
        bs.StudySettings(budget_s=-5, candidates=bs.select_candidates()).validate()


def test_every_candidate_config_builds_with_four_levels():
    """Each row of CANDIDATES: the strides it declares, neck in_channels from the backbone, and
    backbone and neck build and run (meta device: no weights, no compute), and the neck's
    levels are the head's anchor strides."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    assert len(bs.CANDIDATES) == 15
    p3_p6 = {c.name for c in bs.CANDIDATES if tuple(c.strides) == bs.P3_P6}
    assert p3_p6 == {'ShuffleNetV2-x1.0'}  # the one backbone without a stride-4 stage
    for cand in bs.CANDIDATES:
        cfg = bs.build_config(cand, iters=10, seed=0, data_root='data/demo', work_dir='w')
        assert cfg.model.backbone.init_cfg is None and cfg.model.backbone.norm_eval is False
        with torch.device('meta'):
            backbone, neck = MODELS.build(cfg.model.backbone), MODELS.build(cfg.model.neck)
            feats = backbone(torch.empty(1, 3, 192, 192))
            outs = neck(feats)
        strides = tuple(192 // f.shape[-1] for f in feats)
        assert strides == tuple(cand.strides), cand.name
        assert len(outs) == 4, cand.name  # P2-P5, or P3-P6 with the FPN's extra level
        head_strides = [192 // o.shape[-1] for o in outs]
        assert head_strides == list(cfg.model.bbox_head.anchor_generator.strides), cand.name
        if cand.name == 'VanillaNet-7':
            assert cfg.custom_hooks[0]['ramp'] == 3  # a third of 10 iterations


# ---------------------------------------------------------------------------------- resume


class FakeWork:
    """Stand-ins for phase-1 timing and training: fixed numbers, every call counted."""
    MAPS = {'YOLOv8-n': 0.30, 'HGNetV2-b0': 0.40, bs.REFERENCE: 0.35}
    RATIOS = {'YOLOv8CSPDarknet': 0.5, 'HGNetV2': 1.5, 'mmdet.ResNet': 1.0}

    def __init__(self):
        self.trained, self.timed = [], []

    def timer(self, cand_cfg, ref_cfg, inputs, *, rounds, warmup):
        kind = cand_cfg.model.backbone.type
        self.timed.append(kind)
        r = self.RATIOS[kind]
        return dict(train=dict(ms=100 * r, ref_ms=100.0, ratio=r, ratio_low=r, ratio_high=r,
                               rounds=rounds),
                    infer=dict(ms=10 * r, ref_ms=10.0, ratio=r, ratio_low=r, ratio_high=r,
                               rounds=rounds))

    def trainer(self, cfg, work_dir):
        name = Path(work_dir).parent.name
        seed = cfg.randomness.seed
        self.trained.append((name, seed, cfg.train_cfg.max_iters))
        m = self.MAPS[name] + 0.01 * seed
        return dict(bbox_mAP=m, bbox_mAP_50=m + 0.2, bbox_mAP_75=m - 0.1, train_wall_s=1.0,
                    empty_predictions=False)

    @staticmethod
    def complexity(cfg):
        return dict(params=1000, backbone_params=500, flops=10**9, flops_input=[192, 192],
                    out_channels=[1, 2, 3, 4], out_strides=[4, 8, 16, 32])


def test_resume_reruns_only_what_is_missing(tmp_path, tiny_demo_data):
    work = FakeWork()
    log = []

    def study(**kw):
        settings = dict(budget_s=3.0, candidates=bs.select_candidates(['YOLOv8-n', 'HGNetV2-b0']),
                        top_k_second_seed=1, results_dir=str(tmp_path / 'res'),
                        work_dir=str(tmp_path / 'work'), data_root=tiny_demo_data['root'],
                        threads=1)
        settings.update(kw)
        return bs.Study(bs.StudySettings(**settings), trainer=work.trainer, timer=work.timer,
                        complexity=work.complexity, log=log.append)

    assert study().run() == 0
    # t_ref = 100 ms -> 30 iterations for R18; ratio 0.5 -> 60, 1.5 -> 20. Top-1 (HGNetV2-b0,
    # mAP 0.40) gets seed 1.
    assert sorted(work.trained) == sorted([('YOLOv8-n', 0, 60), ('HGNetV2-b0', 0, 20),
                                           (bs.REFERENCE, 0, 30), ('HGNetV2-b0', 1, 20)])
    assert sorted(work.timed) == ['HGNetV2', 'YOLOv8CSPDarknet', 'mmdet.ResNet']
    records = sorted(p.name for p in (tmp_path / 'res').glob('*.json'))
    assert len(records) == 4
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / 'res').glob('*.json')}

    work.trained.clear(), work.timed.clear(), log.clear()
    assert study().run() == 0  # a second invocation: nothing trained, nothing timed
    assert work.trained == [] and work.timed == []
    assert sum('done earlier, not re-run' in line for line in log) == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    (victim, ) = (tmp_path / 'res').glob('YOLOv8-n__seed0__*.json')
    victim.unlink()
    study().run()
    assert work.trained == [('YOLOv8-n', 0, 60)]  # only the deleted one
    assert victim.is_file()

    work.trained.clear(), log.clear()
    study(budget_s=6.0).run()  # a changed budget: every run again, twice the iterations
    assert sorted(work.trained) == sorted([('YOLOv8-n', 0, 120), ('HGNetV2-b0', 0, 40),
                                           (bs.REFERENCE, 0, 60), ('HGNetV2-b0', 1, 40)])
    assert any('4 record(s)' in line and 'not used' in line for line in log)
    assert len(list((tmp_path / 'res').glob('*.json'))) == 8  # the old ones kept, unused

    assert {r['budget_s'] for r in study().current_records()} == {3.0}  # what --report uses
    assert len(study().current_records()) == 4

    work.trained.clear(), work.timed.clear()
    study(cfg_options={'model.bbox_head.stacked_convs': 1}).run()  # a changed config
    assert len(work.trained) == 4  # new config hash: new records
    assert len(work.timed) == 3  # and new timings (their key holds the config hash)


def test_bf16_study_is_its_own_study(tmp_path, tiny_demo_data, monkeypatch):
    """--amp bf16: configs train and validate under the CPU bf16 wrapper and loops, the config
    hashes (so the records) and the phase-1 files are their own, the fp32 study's stay as they
    are, and a CPU without bf16 kernels is refused before anything runs."""
    from mmbackbones.engine import amp
    cand = bs.candidate('YOLOv8-n')
    fp32 = bs.build_config(cand, iters=10, seed=0, data_root='d', work_dir='w')
    bf16 = bs.build_config(cand, iters=10, seed=0, data_root='d', work_dir='w', amp='bf16')
    assert fp32.optim_wrapper.type == 'OptimWrapper' and not bs.is_bf16(fp32)
    assert bf16.optim_wrapper.type == 'CPUBF16AmpOptimWrapper' and bs.is_bf16(bf16)
    assert (bf16.val_cfg.type, bf16.test_cfg.type) == ('CPUBF16ValLoop', 'CPUBF16TestLoop')
    assert fp32.val_cfg.type == 'ValLoop'
    hashes = {a: bs.config_hash(cand, cfg_options=None, threads=2, data_sha='x', amp=a)
              for a in bs.AMP_CHOICES}
    assert hashes['fp32'] != hashes['bf16']
    assert hashes['fp32'] == bs.config_hash(cand, cfg_options=None, threads=2, data_sha='x')
    with pytest.raises(ValueError, match=r"amp='fp16': choose one of \['fp32', 'bf16'\]"):
        bs.build_config(cand, iters=10, seed=0, data_root='d', work_dir='w', amp='fp16')
    with pytest.raises(ValueError, match=r"--amp: 'fp16' is not one of \['fp32', 'bf16'\]"):
        bs.StudySettings(budget_s=1, candidates=[cand], amp='fp16').validate()

    work = FakeWork()
    settings = dict(budget_s=3.0, candidates=bs.select_candidates(['YOLOv8-n']),
                    results_dir=str(tmp_path / 'res'), work_dir=str(tmp_path / 'work'),
                    data_root=tiny_demo_data['root'], threads=1)

    def study(**kw):
        return bs.Study(bs.StudySettings(**dict(settings, **kw)), trainer=work.trainer,
                        timer=work.timer, complexity=work.complexity, log=lambda m: None)

    monkeypatch.delenv(amp.ALLOW_EMULATED_ENV, raising=False)
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: False)
    with pytest.raises(ValueError, match='--amp bf16: bfloat16 autocast on the CPU needs bf16 '
                                         'kernels'):
        study(amp='bf16')
    assert work.timed == [] and not (tmp_path / 'res').exists()

    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: True)
    assert study().run() == 0 and study(amp='bf16').run() == 0
    assert len(work.timed) == 4 and len(work.trained) == 4  # nothing shared between the two
    timing = sorted(p.name for p in (tmp_path / 'res' / 'timing').iterdir())
    assert timing == ['YOLOv8-n.json', 'YOLOv8-n__bf16.json', 'reference.json',
                      'reference__bf16.json']
    bf16_recs = study(amp='bf16').current_records()
    assert {r['amp'] for r in bf16_recs} == {'bf16'} and len(bf16_recs) == 2
    assert {r['amp'] for r in study().current_records()} == {'fp32'}
    assert all(r['cpu'] and r['timing_cpu'] == r['cpu'] for r in bf16_recs)
    text = bs.report_markdown(bs.aggregate(bf16_recs), bf16_recs, 'p.png')
    assert 'Precision: bf16; bf16 means phase 1, training and validation under CPU bf16' in text
    assert f'CPU of phase 1 and the runs: {bf16_recs[0]["cpu"]}.' in text
    assert '--report from docs/backbone_study/results/; do not edit' in text
    text = bs.report_markdown(bs.aggregate(bf16_recs), bf16_recs, 'p.png',
                              results_dir='docs/other_results/')
    assert '--report from docs/other_results/; do not edit' in text
    assert 'Phase-1 timings are kept in `docs/other_results/timing/`' in text


def test_bf16_inference_timing_runs_under_autocast(monkeypatch):
    """Phase 1's inference callable of a bf16 config computes in bf16 (its outputs are bf16);
    the fp32 one in float32."""
    from mmengine.dataset import pseudo_collate
    from mmengine.structures import InstanceData

    from mmbackbones.engine import amp
    from mmdet.structures import DetDataSample
    if not amp.cpu_supports_bf16():  # same numbers, reference kernels (slow, but tiny here)
        monkeypatch.setenv(amp.ALLOW_EMULATED_ENV, '1')
    cand = bs.candidate('YOLOv8-n')
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                         scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData()
    image = pseudo_collate([dict(inputs=torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8),
                                 data_samples=sample)])
    dtypes = {}
    for precision in bs.AMP_CHOICES:
        cfg = bs.build_config(cand, iters=10, seed=0, data_root='d', work_dir='w',
                              amp=precision)
        cls_scores = bs._inference(cfg, image)()[0]
        dtypes[precision] = {t.dtype for t in cls_scores}
    assert dtypes == {'fp32': {torch.float32}, 'bf16': {torch.bfloat16}}


def test_interrupted_study_resumes(tmp_path, tiny_demo_data):
    """A run that dies (here: raises) leaves no record; the next invocation runs only it."""
    work = FakeWork()
    failing = work.trainer

    def trainer(cfg, work_dir):
        if Path(work_dir).parent.name == 'YOLOv8-n':
            raise RuntimeError('killed')
        return failing(cfg, work_dir)

    settings = dict(budget_s=3.0, candidates=bs.select_candidates(['YOLOv8-n']),
                    results_dir=str(tmp_path / 'res'), work_dir=str(tmp_path / 'work'),
                    data_root=tiny_demo_data['root'], threads=1)
    log = []
    first = bs.Study(bs.StudySettings(**settings), trainer=trainer, timer=work.timer,
                     complexity=work.complexity, log=log.append)
    assert first.run() == 1
    assert any('YOLOv8-n seed 0: FAILED: RuntimeError: killed' in line for line in log)
    assert [p.name.split('__')[0] for p in (tmp_path / 'res').glob('*.json')] == [bs.REFERENCE]
    work.trained.clear()
    second = bs.Study(bs.StudySettings(**settings), trainer=work.trainer, timer=work.timer,
                      complexity=work.complexity, log=log.append)
    assert second.run() == 0
    assert work.trained == [('YOLOv8-n', 0, 60)]


# ---------------------------------------------------------------------------------- jobs


def test_jobs_settings_and_validation(tmp_path):
    settings = bs.StudySettings(budget_s=60, candidates=bs.select_candidates(['YOLOv8-n']),
                                seeds=[0, 3], threads=5, jobs=2, cfg_options={'a.b': 1})
    assert settings.train_threads == 2  # 5 threads over 2 jobs
    assert bs.StudySettings(budget_s=1, candidates=[], threads=2, jobs=4).train_threads == 1
    spec = json.loads(json.dumps(settings.to_spec()))  # what a job's file holds
    assert spec['candidates'] == ['YOLOv8-n', bs.REFERENCE]
    assert bs.StudySettings.from_spec(spec) == settings
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match=rf'--jobs: {bad} must be an integer >= 1'):
            bs.StudySettings(budget_s=1, candidates=[], jobs=bad).validate()
    with pytest.raises(ValueError, match='--jobs 2: parallel runs train in new processes'):
        bs.Study(settings, trainer=FakeWork().trainer)


def _job_study(tmp_path, data_root, log, jobs=2):
    settings = bs.StudySettings(budget_s=1, candidates=bs.select_candidates(['YOLOv8-n']),
                                results_dir=str(tmp_path / 'res'), work_dir=str(tmp_path / 'w'),
                                data_root=data_root, threads=2, jobs=jobs)
    return bs.Study(settings, log=log)


def test_failed_job_is_reported_with_its_log(tmp_path, tiny_demo_data, monkeypatch):
    """A job that exits non-zero, and one that exits 0 without a record: both FAILED, with the
    exit code and the end of the job's log, and the study goes on to the next run."""
    monkeypatch.setattr(bs, '_JOB_COMMAND', 'import sys, json; job = json.load(open(sys.argv[1]))'
                        "; print('job says', job['candidate'], job['seed'], job['iters']); "
                        "sys.exit(3 if job['seed'] == 0 else 0)")
    log = []
    study = _job_study(tmp_path, tiny_demo_data['root'], log.append)
    cand = bs.candidate('YOLOv8-n')
    out = list(study._run_in_jobs([(cand, 0, 7), (cand, 1, 7), (cand, 2, 7)], plan={},
                                  poll_s=0.05))
    by_seed = {seed: (rec, err) for _, seed, rec, err in out}
    assert sorted(by_seed) == [0, 1, 2] and all(rec is None for rec, _ in by_seed.values())
    assert by_seed[0][1].startswith('exit code 3; the end of ')
    assert 'job says YOLOv8-n 0 7' in by_seed[0][1]
    assert by_seed[1][1].startswith('exit code 0 but no matching record')
    assert sum('(job ' in line for line in log) == 3
    job = json.loads((tmp_path / 'w' / 'YOLOv8-n' / 'seed_1' / 'study_job.json').read_text())
    assert job['iters'] == 7 and bs.StudySettings.from_spec(job['settings']) == study.s


def test_interrupted_jobs_are_terminated(tmp_path, tiny_demo_data, monkeypatch):
    """Interrupting the study (here: the log raises, as Ctrl-C would) terminates its jobs."""
    import time
    monkeypatch.setattr(bs, '_JOB_COMMAND', 'import os, sys, time; open(sys.argv[1] + ".pid", '
                        '"w").write(str(os.getpid())); time.sleep(120)')
    run_dir = tmp_path / 'w' / 'YOLOv8-n'
    started = []

    def log(line):
        started.append(line)
        if len(started) == 2:  # both jobs running (their pid files written): interrupt
            deadline = time.monotonic() + 60
            while (not all((run_dir / f'seed_{i}' / 'study_job.json.pid').exists()
                           for i in (0, 1)) and time.monotonic() < deadline):
                time.sleep(0.05)
            raise KeyboardInterrupt

    study = _job_study(tmp_path, tiny_demo_data['root'], log)
    cand = bs.candidate('YOLOv8-n')
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(study._run_in_jobs([(cand, 0, 5), (cand, 1, 5), (cand, 2, 5)], plan={}))
    assert time.monotonic() - t0 < 90  # not the jobs' 120 s sleep
    assert sorted(p.name for p in run_dir.iterdir()) == ['seed_0', 'seed_1']  # 2 never started
    for i in (0, 1):
        pid = int((run_dir / f'seed_{i}' / 'study_job.json.pid').read_text())
        with pytest.raises(ProcessLookupError):  # terminated and reaped
            os.kill(pid, 0)
    assert not list((tmp_path / 'res').glob('*.json'))


# ---------------------------------------------------------------------------------- report


def _record(name, seed, infer_ms, train_ms, m, baseline=False):
    return dict(version=bs.RECORD_VERSION, candidate=name, family='f', levels='P2-P5',
                baseline=baseline, seed=seed, budget_s=60.0, config_hash='h' * 16, iters=100,
                ref_iters=100, threads=2, command='python tools/analysis/backbone_study.py x',
                train_ratio=train_ms / 100, train_ms=train_ms, ref_train_ms=100.0,
                infer_ratio=infer_ms / 10, infer_ms=infer_ms, ref_infer_ms=10.0, bbox_mAP=m,
                bbox_mAP_50=m + 0.1, bbox_mAP_75=m - 0.1, train_wall_s=60.0, params=2e6,
                backbone_params=1e6, flops=3e9, ref_self_ratio=[1.01, 0.95, 1.08])


def test_pareto_front_hand_made():
    # (cost, mAP): A and B are the front; C is beaten by A (cheaper, better), D by B (same mAP,
    # dearer); E ties A exactly, so neither dominates the other.
    points = [(10, 0.5), (20, 0.6), (15, 0.4), (30, 0.6), (10, 0.5)]
    assert bs.pareto_front(points) == [0, 1, 4]
    assert bs.pareto_front([(1, 0.1)]) == [0]
    assert bs.pareto_front([]) == []


def test_report_from_records_is_deterministic(tmp_path):
    records = [
        _record('YOLOv8-n', 0, infer_ms=5, train_ms=50, m=0.30),
        _record('HGNetV2-b0', 0, infer_ms=8, train_ms=200, m=0.50),
        _record('HGNetV2-b0', 1, infer_ms=8, train_ms=200, m=0.40),
        _record('MogaNet-xtiny', 0, infer_ms=20, train_ms=40, m=0.35),
        _record(bs.REFERENCE, 0, infer_ms=10, train_ms=100, m=0.40, baseline=True),
    ]
    md, png = tmp_path / 'docs' / 'study.md', tmp_path / 'docs' / 'study' / 'pareto.png'
    bs.write_report(records, str(md), str(png), stale=2)
    text, image = md.read_text(), png.read_bytes()
    assert image[:8] == b'\x89PNG\r\n\x1a\n'
    rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[1:-1]]
            for line in text.split('## Runs')[0].splitlines() if line.startswith('| ')
            and not line.startswith('| candidate')}
    # HGNetV2-b0: mean 0.45 of two seeds. Latency front: YOLOv8-n (5 ms, 0.30), HGNetV2-b0
    # (8 ms, 0.45); R18 (10 ms, 0.40) and MogaNet (20 ms, 0.35) are beaten by HGNetV2-b0.
    # Train front: MogaNet (40 ms, 0.35), R18 (100 ms, 0.40), HGNetV2-b0 (200 ms, 0.45);
    # YOLOv8-n (50 ms, 0.30) is beaten by MogaNet.
    assert rows['HGNetV2-b0'][6] == '0.450 (0.500 / 0.400)'
    assert rows['HGNetV2-b0'][10] == '0,1'
    assert rows['HGNetV2-b0'][11] == 'latency, train'
    assert rows['YOLOv8-n'][11] == 'latency'
    assert rows['MogaNet-xtiny'][11] == 'train'
    assert rows['**mmdet-ResNet-18**'][11] == 'train'
    assert rows['YOLOv8-n'][4] == '50.0 (x0.50)' and rows['YOLOv8-n'][9] == '5.0 (x0.50)'
    assert list(rows) == ['HGNetV2-b0', '**mmdet-ResNet-18**', 'MogaNet-xtiny', 'YOLOv8-n']
    assert '2 other record(s)' in text
    assert 'R18 against a second R18 gave x1.010 (90% interval 0.950-1.080)' in text
    assert 'python tools/analysis/backbone_study.py x --report-only' in text
    assert '## What this study does not show' in text and 'Synthetic data' in text
    assert '(study/pareto.png)' in text
    bs.write_report(list(reversed(records)), str(md), str(png), stale=2)
    assert md.read_text() == text and png.read_bytes() == image  # same records, same bytes


def _plan(ratios, ref_ms, budget_s=60.0, cpu='cpu A'):
    """A Study.plan() dict from train ratios {name: (train, infer)}."""
    n_ref, iters = bs.plan_iterations(budget_s, ref_ms, {  # as Study.plan: R18 is x1
        n: 1.0 if n == bs.REFERENCE else t for n, (t, _) in ratios.items()})
    timings = {n: dict(train=dict(ratio=t), infer=dict(ratio=i)) for n, (t, i) in ratios.items()}
    return dict(ref_train_ms=ref_ms, ref_iters=n_ref, iters=iters, timings=timings,
                ref_timing=dict(cpu=cpu))


def test_precision_section_compares_costs_and_ranks():
    """The fp32 / bf16 section: cost ratios and iterations of every candidate in both, mAP
    ranks over the candidates run in both only, which candidates change cost order."""
    fp32 = _plan({'YOLOv8-n': (0.4, 0.5), 'HGNetV2-b0': (0.55, 0.8), 'ShuffleNetV2-x1.0':
                  (0.3, 0.5), bs.REFERENCE: (1.03, 1.0)}, ref_ms=200.0)
    bf16 = _plan({'YOLOv8-n': (0.5, 0.6), 'HGNetV2-b0': (1.0, 0.8), 'ShuffleNetV2-x1.0':
                  (0.6, 0.6), bs.REFERENCE: (0.97, 1.0)}, ref_ms=50.0, cpu='cpu B')
    rows = {'fp32': bs.aggregate([_record('YOLOv8-n', 0, 5, 40, 0.6),
                                  _record('HGNetV2-b0', 0, 8, 55, 0.3),
                                  _record('ShuffleNetV2-x1.0', 0, 5, 30, 0.2),
                                  _record(bs.REFERENCE, 0, 10, 100, 0.2, baseline=True)]),
            'bf16': bs.aggregate([_record('YOLOv8-n', 0, 5, 40, 0.7),
                                  _record(bs.REFERENCE, 0, 10, 100, 0.75, baseline=True)])}
    text = '\n'.join(bs.precision_section(dict(amps=('fp32', 'bf16'), budget_s=60.0,
                                               plans=dict(fp32=fp32, bf16=bf16), rows=rows)))
    table = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
             for line in text.splitlines() if line.startswith('| ') and 'candidate' not in line}
    # R18: 60 s / 200 ms = 300 iterations in fp32, 60 s / 50 ms = 1200 in bf16; its own ratio
    # is 1 by definition (the reference row is R18 against itself).
    assert table['**mmdet-ResNet-18**'] == ['x1.00 / x1.00', 'x1.00 / x1.00', '300 / 1200',
                                            '0.200 / 0.750', '2 / 1']
    assert table['YOLOv8-n'] == ['x0.40 / x0.50', 'x0.50 / x0.60', '750 / 2400',
                                 '0.600 / 0.700', '1 / 2']
    assert table['HGNetV2-b0'] == ['x0.55 / x1.00', 'x0.80 / x0.80', '545 / 1200',
                                   '0.300 / not run', '-']
    assert list(table)[:2] == ['YOLOv8-n', '**mmdet-ResNet-18**']  # run in both: by rank
    assert 'Phase 1 CPU: fp32: cpu A; bf16: cpu B. R18 trains 300 iterations in fp32' in text
    assert 'ran on different CPUs (or one names none), so a change of ratio' in text
    # cost order fp32: Shuffle 0.3, YOLO 0.4, HGNet 0.55, R18 1; bf16: YOLO 0.5, Shuffle 0.6,
    # R18 1.0 ties HGNet 1.0 (name order breaks it: HGNetV2-b0 first).
    assert ('2 of 4 candidates change place from fp32 to bf16; most: ShuffleNetV2-x1.0 1 -> 2'
            in text)
    assert ('fp32: YOLOv8-n > mmdet-ResNet-18; bf16: mmdet-ResNet-18 > YOLOv8-n.' in text)
    same_cpu = dict(bf16, ref_timing=dict(cpu='cpu A'))
    assert 'different CPUs' not in '\n'.join(bs.precision_section(dict(
        amps=('fp32', 'bf16'), budget_s=60.0, plans=dict(fp32=fp32, bf16=same_cpu), rows=rows)))
    missing = bs.precision_section(dict(amps=('fp32', 'bf16'), budget_s=60.0,
                                        plans=dict(fp32=fp32, bf16=None), rows=rows))
    assert 'No complete phase 1 under bf16' in '\n'.join(missing)


# ---------------------------------------------------------------------------------- real run


def _scalars(run_dir: Path) -> dict:
    """The last COCO entry of the run's own mmengine scalar log."""
    (path, ) = run_dir.glob('*/vis_data/scalars.json')
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if 'coco/bbox_mAP' in e][-1]


def test_real_study_on_tiny_data(tmp_path, tiny_demo_data, load_tool, capsys):
    """Two candidates (YOLOv8-n and the R18 reference), real timing, then training and
    evaluation as two parallel jobs (new processes, one thread each); then a second invocation
    that trains nothing, the dry-run plan and the report."""
    tool = load_tool('analysis/backbone_study')
    res, work = tmp_path / 'res', tmp_path / 'work'
    argv = ['--budget-s', '0.5', '--candidates', 'YOLOv8-n', '--threads', '2', '--jobs', '2',
            '--timing-rounds', '2', '--timing-warmup', '0', '--results-dir', str(res),
            '--work-dir', str(work), '--data-root', tiny_demo_data['root'],
            '--cfg-options', *TINY_OPTIONS]
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    ref = json.loads((res / 'timing' / 'reference.json').read_text())
    yolo = json.loads((res / 'timing' / 'YOLOv8-n.json').read_text())
    t_ref = (ref['train']['ms'] + ref['train']['ref_ms']) / 2
    n_ref = max(2, round(500 / t_ref))
    expected = {bs.REFERENCE: n_ref, 'YOLOv8-n': max(2, round(n_ref / yolo['train']['ratio']))}
    records = {}
    for path in res.glob('*.json'):
        rec = json.loads(path.read_text())
        records[rec['candidate']] = rec
    assert set(records) == set(expected)
    for name, rec in records.items():
        assert rec['iters'] == expected[name], out[-3000:]
        logged = _scalars(work / name / 'seed_0')
        for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
            assert rec[key] == pytest.approx(logged[f'coco/{key}']), name
        assert rec['flops'] > 0 and rec['params'] > rec['backbone_params'] > 0
        assert (rec['threads'], rec['jobs'], rec['train_threads']) == (2, 2, 1)
        log = (work / name / 'seed_0' / 'study_job.log').read_text()
        assert f'[study job] {name} seed 0: mAP {rec["bbox_mAP"]:.3f}' in log
    assert out.count('(job ') == 2 and '1 thread(s)' in out
    from mmbackbones.models import YOLOv8CSPDarknet
    assert records['YOLOv8-n']['backbone_params'] == sum(
        p.numel() for p in YOLOv8CSPDarknet(arch='n').parameters())
    assert records['YOLOv8-n']['train_ratio'] == yolo['train']['ratio']
    assert records['YOLOv8-n']['infer_ratio'] == yolo['infer']['ratio']
    stamps = {p: p.stat().st_mtime_ns for p in res.rglob('*.json')}

    assert tool.main(argv + ['--report', '--report-md', str(tmp_path / 'study.md'),
                             '--plot', str(tmp_path / 'study' / 'pareto.png')]) == 0
    out = capsys.readouterr().out
    assert out.count('done earlier, not re-run') == 2 and 'training' not in out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    text = (tmp_path / 'study.md').read_text()
    assert '| YOLOv8-n |' in text and '| **mmdet-ResNet-18** |' in text
    assert f'N_R18 = {n_ref} iterations' in text
    assert f"R18 against a second R18 gave x{ref['train']['ratio']:.3f}" in text
    assert 'Training: 2 run(s) at a time with 1 thread(s) each.' in text
    assert '--threads 2 --jobs 2 --timing-rounds 2' in text  # the command, for regenerating

    assert tool.main(argv + ['--dry-run']) == 0
    plan = capsys.readouterr().out
    assert f'N_R18 = {n_ref} iterations' in plan
    assert f"| {expected['YOLOv8-n']} |" in plan.split('| YOLOv8-n |')[1].splitlines()[0]
    assert os.listdir(work / 'YOLOv8-n') == ['seed_0']  # the dry run trained nothing


def test_quickstart_is_the_study_run_it_cites():
    """The quickstart config is the study's VoVNet-19-slim-eSE detector at the 988 s budget:
    the same model, data, optimiser, schedule and seed, and the committed phase-1 timings plan
    1060 iterations for it where mmdet's ResNet-18 gets 782 (what the README compares)."""
    from mmengine.config import Config
    quick = Config.fromfile(str(Path(bs.REPO) / 'configs' / 'quickstart' /
                                'atss_vovnet-19-slim-ese_fpn_demo.py')).to_dict()
    study = bs.build_config(bs.candidate('VoVNet-19-slim-eSE'), iters=1060, seed=0,
                            data_root='data/demo', work_dir='w').to_dict()
    for key in ('model', 'train_dataloader', 'val_dataloader', 'val_evaluator', 'optim_wrapper',
                'param_scheduler', 'train_cfg', 'randomness', 'image_size'):
        assert quick[key] == study[key], key
    timing = Path(bs.REPO) / 'docs' / 'backbone_study' / 'results' / 'timing'
    ref = json.loads((timing / 'reference.json').read_text())
    ratio = json.loads((timing / 'VoVNet-19-slim-eSE.json').read_text())['train']['ratio']
    t_ref = (ref['train']['ms'] + ref['train']['ref_ms']) / 2
    n_ref, iters = bs.plan_iterations(988, t_ref, {'VoVNet-19-slim-eSE': ratio})
    assert (n_ref, iters['VoVNet-19-slim-eSE']) == (782, 1060)
