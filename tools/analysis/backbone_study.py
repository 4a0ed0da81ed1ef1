# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Equal-time backbone study on the quickstart detector (see mmbackbones/analysis/backbone_study.py).

    python tools/analysis/backbone_study.py --budget-s 150 --top-k-second-seed 3 --threads 2
        [--candidates NAME ...] [--seeds 0] [--results-dir DIR] [--work-dir DIR]
        [--jobs 1] [--amp fp32|bf16] [--data-root data/demo] [--timing-rounds 8] [--timing-warmup 1]
        [--cfg-options k=v ...] [--dry-run] [--report] [--report-only]

Phase 1 times every detector's training step paired with the mmdet ResNet-18 detector and plans
the iterations (every run the same budget of R18-equivalent time); phase 2 trains and evaluates
each (candidate, seed) that has no matching record in the results directory. ``--dry-run``
measures phase 1 (kept for the real study) and prints the plan. ``--report`` (after the runs) and
``--report-only`` (nothing run) write docs/backbone_study.md and docs/backbone_study/pareto.png
from the records that match the given settings.
"""
import argparse
import os.path as osp
import shlex
import sys

if __package__ in (None, ''):  # run as a script: make the repository importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmbackbones.analysis import backbone_study as bs  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Equal-time backbone study: the quickstart ATSS detector with each '
        'candidate backbone, every run the same training-time budget.')
    parser.add_argument('--budget-s', type=float, default=150.0,
                        help='training budget per run, in seconds of R18 time (default 150)')
    parser.add_argument('--candidates', nargs='+', metavar='NAME',
                        help=f'candidates (default: all; {bs.REFERENCE} is always included): '
                        + ', '.join(bs.CANDIDATE_NAMES))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0], help='seeds (default 0)')
    parser.add_argument('--top-k-second-seed', type=int, default=0, metavar='K',
                        help='train the K best candidates (mean mAP) once more, with seed '
                        'max(--seeds) + 1 (default 0)')
    parser.add_argument('--results-dir', default=bs.RESULTS_DIR,
                        help='run records (default docs/backbone_study/results)')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'backbone_study'),
                        help='mmengine work dirs of the runs (default work_dirs/backbone_study)')
    parser.add_argument('--data-root', default=osp.join('data', 'demo'),
                        help='demo data set (generated with the demo defaults if missing)')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch threads of phase 1, and of the runs split over --jobs '
                        '(default 2)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='training runs at once, each a new process with threads // jobs '
                        'threads (default 1). Iteration counts come from phase 1, so this '
                        'changes the wall time of the study, not its plan')
    parser.add_argument('--amp', default='fp32', choices=bs.AMP_CHOICES,
                        help='bf16: phase 1 and training under CPU bf16 autocast (float32 '
                        'weights, tools/train.py --amp); needs a CPU with bf16 kernels')
    parser.add_argument('--timing-rounds', type=int, default=8,
                        help='paired rounds per phase-1 timing (default 8)')
    parser.add_argument('--timing-warmup', type=int, default=1,
                        help='warm-up calls per phase-1 timing (default 1)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='config overrides for every run (part of the config hash)')
    parser.add_argument('--dry-run', action='store_true',
                        help='measure phase 1 and print the plan; train nothing')
    parser.add_argument('--report', action='store_true',
                        help='write the report after the runs')
    parser.add_argument('--report-only', action='store_true',
                        help='run nothing; write the report from the records')
    parser.add_argument('--report-md', default=osp.join('docs', 'backbone_study.md'))
    parser.add_argument('--plot', default=osp.join('docs', 'backbone_study', 'pareto.png'))
    args = parser.parse_args(argv)
    bad = [opt for opt in args.cfg_options if '=' not in opt]
    if bad:
        parser.error(f'--cfg-options: {bad} must be KEY=VALUE pairs')
    if args.dry_run and args.report_only:
        parser.error('--dry-run and --report-only exclude each other')
    try:
        args.selected = bs.select_candidates(args.candidates)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _cfg_options(pairs):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *pairs]).cfg_options if pairs else {}


def study_command(args) -> str:
    """The normalised command of these settings (what the report prints)."""
    cmd = ['python', 'tools/analysis/backbone_study.py', '--budget-s', f'{args.budget_s:g}']
    if args.candidates:
        cmd += ['--candidates', *[c.name for c in args.selected]]
    cmd += ['--seeds', *map(str, args.seeds)]
    if args.top_k_second_seed:
        cmd += ['--top-k-second-seed', str(args.top_k_second_seed)]
    cmd += ['--threads', str(args.threads)]
    if args.jobs != 1:
        cmd += ['--jobs', str(args.jobs)]
    if args.amp != 'fp32':
        cmd += ['--amp', args.amp]
    for opt, default in (('timing_rounds', 8), ('timing_warmup', 1)):
        if getattr(args, opt) != default:
            cmd += [f'--{opt.replace("_", "-")}', str(getattr(args, opt))]
    for opt, default in (('data_root', osp.join('data', 'demo')),
                         ('results_dir', bs.RESULTS_DIR),
                         ('work_dir', osp.join('work_dirs', 'backbone_study'))):
        if getattr(args, opt) != default:
            cmd += [f'--{opt.replace("_", "-")}', getattr(args, opt)]
    if args.cfg_options:
        cmd += ['--cfg-options', *args.cfg_options]
    return shlex.join(cmd)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = bs.StudySettings(
        budget_s=args.budget_s, candidates=args.selected, seeds=args.seeds,
        top_k_second_seed=args.top_k_second_seed, results_dir=args.results_dir,
        work_dir=args.work_dir, data_root=args.data_root, threads=args.threads,
        timing_rounds=args.timing_rounds, timing_warmup=args.timing_warmup,
        cfg_options=_cfg_options(args.cfg_options), command=study_command(args),
        jobs=args.jobs, amp=args.amp)
    try:
        study = bs.Study(settings, log=lambda msg: print(msg, flush=True))
    except ValueError as exc:
        print(f'backbone_study.py: error: {exc}', file=sys.stderr)
        return 2
    failed = 0
    if not args.report_only:
        failed = study.run(dry_run=args.dry_run)
    if args.report or args.report_only:
        if args.report_only and not osp.isfile(osp.join(
                args.data_root, 'annotations', 'instances_val.json')):
            print(f'backbone_study.py: error: --data-root {args.data_root!r} has no data set; '
                  'the config hash of the records needs it.', file=sys.stderr)
            return 2
        records = study.current_records()
        bs.write_report(records, args.report_md, args.plot, stale=len(study.stale_records()),
                        command=settings.command, results_dir=args.results_dir,
                        compare=bs.precision_compare(study))
        print(f'[study] report: {args.report_md} ({len(records)} runs), {args.plot}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
