# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Sweep ``frozen_stages`` (and unfreezing schedules) for a detector config; report mAP and cost.

    python tools/frozen_sweep.py CONFIG [--stages -1 0 2 4] [--seeds 0 1]
        [--schedule 0:4,100:2,200:-1 ...] [--by-epoch] [--work-dir DIR]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm] [--gpus N] [--dry-run]
        [--report-only] [--retry-failed]

One training per setting and seed, one after the other, each ``tools/train.py`` in its own process
and work dir ``<work-dir>/<setting>/seed_<seed>``. Each run gets a generated config,
``<work-dir>/configs/<setting>_seed_<seed>.py``: the given config with ``frozen_stages``, the seed
and two hooks, ``TrainCostHook`` and, for schedules, ``FrozenStagesScheduleHook``. The report is
read from each run's own mmengine log (``<timestamp>/vis_data/scalars.json``):

* final and best ``coco/bbox_mAP`` (and ``coco/segm_mAP`` for instance segmentation);
* train time per iteration: the median of the logged ``time`` values, the first log skipped;
* peak memory: mmengine's ``memory`` (peak CUDA allocation, MiB) on a GPU, else ``peak_rss_mb``
  (peak resident memory of the training process, from ``TrainCostHook``);
* trainable / frozen parameter elements and the backbone's forward GFLOPs per batch that still need
  a backward pass (``TrainCostHook``; for schedules, averaged over the logged iterations).

It writes ``sweep.csv`` (one row per run), ``sweep.md`` (mean +- std over seeds per setting, then
the failed runs with their error) and ``sweep.png`` (mAP and time/iter against frozen_stages,
seeds as error bars; schedules to the right).

Without ``--stages`` every valid value of the config's backbone is swept (-1 .. num_stages), for
mmbackbones backbones and mmdet's ResNet family. A run that finished is never re-run: an
interrupted sweep started again with the same arguments picks up where it stopped (an interrupted
run resumes from its last checkpoint). Failed runs are reported with their error and re-run only
with ``--retry-failed``. ``--dry-run`` writes the configs and prints one command per run (with
``--launcher pytorch`` a torchrun command, with ``slurm`` an srun command) for a cluster; after the
jobs ran, ``--report-only`` collects the results.
"""
import argparse
import csv
import importlib.util
import json
import math
import os
import os.path as osp
import pprint
import re
import shlex
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

if importlib.util.find_spec('mmbackbones') is None:  # running from a source checkout
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO, 'tools', 'train.py')
STATUS_FILE = 'sweep_status.json'
OWN_HOOKS = ('TrainCostHook', 'FrozenStagesScheduleHook')

CSV_FIELDS = [
    'setting', 'frozen_stages', 'seed', 'status', 'error', 'iters', 'bbox_mAP', 'bbox_mAP_best',
    'segm_mAP', 'segm_mAP_best', 'time_per_iter_s', 'peak_mem_mb', 'mem_kind',
    'trainable_params', 'frozen_params', 'backbone_gflops', 'backbone_grad_gflops', 'work_dir'
]


# ---------------------------------------------------------------------------------- settings


class Setting:
    """One column of the sweep: a fixed ``frozen_stages`` or a schedule."""

    def __init__(self, stages: Optional[int] = None, schedule: Optional[Dict[int, int]] = None):
        self.stages, self.schedule = stages, schedule

    @property
    def name(self) -> str:
        if self.schedule is None:
            return f'frozen_stages_{self.stages}'
        return 'schedule_' + '_'.join(f'{k}-{v}' for k, v in self.schedule.items())

    @property
    def label(self) -> str:
        if self.schedule is None:
            return str(self.stages)
        return ','.join(f'{k}:{v}' for k, v in self.schedule.items())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a detector once per frozen_stages setting and seed; report mAP, time, '
        'memory, parameters and gradient FLOPs (sweep.csv, sweep.md, sweep.png).')
    parser.add_argument('config', help='detector config (mmdet / mmbackbones)')
    parser.add_argument('--stages', type=int, nargs='+', metavar='K',
                        help='frozen_stages values (default: every valid one, -1 .. num_stages; '
                        'none when only --schedule is given)')
    parser.add_argument('--schedule', nargs='+', default=[], metavar='STEP:K,...',
                        help='progressive unfreezing schedules to compare, e.g. 0:4,100:2,200:-1 '
                        '(FrozenStagesScheduleHook; steps are iterations, epochs with --by-epoch)')
    parser.add_argument('--by-epoch', action='store_true', help='schedule steps are epochs')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0], help='seeds (default: 0)')
    parser.add_argument('--work-dir', help='sweep directory (default: '
                        './work_dirs/frozen_sweep/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='passed to every tools/train.py run, e.g. train_cfg.max_iters=200')
    parser.add_argument('--launcher', choices=('none', 'pytorch', 'slurm'), default='none',
                        help='how each run is started; slurm needs --dry-run')
    parser.add_argument('--gpus', type=int, default=1, help='processes per run (pytorch, slurm)')
    parser.add_argument('--dry-run', action='store_true',
                        help='write the run configs and print the commands instead of running')
    parser.add_argument('--report-only', action='store_true',
                        help='run nothing; report the runs found in the work dir')
    parser.add_argument('--retry-failed', action='store_true', help='re-run failed runs')
    args = parser.parse_args(argv)
    bad = [opt for opt in args.cfg_options if '=' not in opt]
    if bad:
        parser.error(f'--cfg-options: {bad} must be KEY=VALUE pairs')
    if args.launcher == 'slurm' and not (args.dry_run or args.report_only):
        parser.error('--launcher slurm: the sweep cannot submit jobs itself; add --dry-run to '
                     'print the srun commands, then run them and collect with --report-only')
    from mmbackbones.engine.hooks.frozen_stages import parse_schedule
    try:
        args.schedules = [parse_schedule(s) for s in args.schedule]
    except ValueError as exc:
        parser.error(f'--schedule: {exc}')
    return args


def load_config(path: str, cfg_options: Sequence[str]):
    from mmengine.config import Config, DictAction

    from mmbackbones.config_scope import resolve_config_path
    cfg = Config.fromfile(resolve_config_path(path))
    if cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--cfg-options', *cfg_options]).cfg_options)
    return cfg


def valid_stages(cfg) -> List[int]:
    """Every ``frozen_stages`` value the config's backbone accepts."""
    import mmbackbones  # noqa: F401  (registers the backbones)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from mmbackbones.engine.frozen_stages import frozen_settings
    register_all_modules(init_default_scope=True)
    backbone_cfg = dict(cfg.model.backbone)
    backbone_cfg['init_cfg'] = None  # counting stages needs no weights
    return frozen_settings(MODELS.build(backbone_cfg))


def settings_from(args, cfg) -> List[Setting]:
    stages = args.stages
    valid = None
    if stages is None and not args.schedules:
        stages = valid = valid_stages(cfg)
    elif stages:
        valid = valid_stages(cfg)
        bad = [k for k in stages if k not in valid]
        if bad:
            raise SystemExit(f'frozen_sweep.py: error: --stages {bad} are not valid for '
                             f'{cfg.model.backbone.type}; choose from {valid}.')
    settings = [Setting(stages=k) for k in dict.fromkeys(stages or [])]
    return settings + [Setting(schedule=s) for s in args.schedules]


# ---------------------------------------------------------------------------------- runs


def write_run_config(path: str, config: str, cfg, setting: Setting, seed: int,
                     by_epoch: bool) -> None:
    hooks = [h.to_dict() if hasattr(h, 'to_dict') else dict(h)
             for h in (cfg.get('custom_hooks') or [])]
    hooks = [h for h in hooks if h.get('type') not in OWN_HOOKS]
    hooks.append(dict(type='TrainCostHook'))
    lines = [f'# Generated by tools/frozen_sweep.py: {setting.name}, seed {seed}.',
             f'_base_ = [{osp.abspath(config)!r}]']
    if setting.schedule is None:
        lines.append(f'model = dict(backbone=dict(frozen_stages={setting.stages}))')
    else:
        hooks.append(dict(type='FrozenStagesScheduleHook', schedule=dict(setting.schedule),
                          by_epoch=by_epoch))
    lines.append(f'randomness = dict(seed={seed})')
    lines.append('custom_hooks = ' + pprint.pformat(hooks, indent=1, width=96))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def train_command(args, run_config: str, run_dir: str, resume: bool) -> List[str]:
    tail = [run_config, '--work-dir', run_dir]
    if resume:
        tail.append('--resume')
    if args.cfg_options:
        tail += ['--cfg-options', *args.cfg_options]
    if args.launcher == 'pytorch':
        return [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={args.gpus}',
                TRAIN, *tail, '--launcher', 'pytorch']
    if args.launcher == 'slurm':
        return ['srun', '-p', '${PARTITION}', f'--gres=gpu:{args.gpus}', f'--ntasks={args.gpus}',
                f'--ntasks-per-node={args.gpus}', '--kill-on-bad-exit=1', 'python', '-u', TRAIN,
                *tail, '--launcher', 'slurm']
    return [sys.executable, TRAIN, *tail]


def read_status(run_dir: str) -> Optional[dict]:
    path = osp.join(run_dir, STATUS_FILE)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def error_of(log_text: str) -> str:
    """The exception line of a failed run's output (its last line if there is none)."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines
              if re.match(r'^[\w.]*(Error|Exception|Interrupt|Exit)\b', line)]
    return (errors[-1] if errors else lines[-1] if lines else 'no output')[:500]


def run_one(args, run_dir: str, run_config: str) -> dict:
    """Train once (resuming an interrupted run); write and return its status."""
    resume = any(name.endswith('.pth') for name in os.listdir(run_dir))
    cmd = train_command(args, run_config, run_dir, resume)
    log_path = osp.join(run_dir, 'train.log')
    start = time.time()
    with open(log_path, 'a') as log:
        log.write(f'$ {shell_join(cmd)}\n')
        log.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    with open(log_path) as f:
        text = f.read()
    status = dict(status='done' if proc.returncode == 0 else 'failed',
                  returncode=proc.returncode, wall_s=round(time.time() - start, 1),
                  error='' if proc.returncode == 0 else error_of(text), command=cmd)
    with open(osp.join(run_dir, STATUS_FILE), 'w') as f:
        json.dump(status, f, indent=1)
    return status


# ---------------------------------------------------------------------------------- logs


def scalar_logs(run_dir: str) -> List[List[dict]]:
    """The entries of every ``<timestamp>/vis_data/scalars.json`` in ``run_dir``, oldest first."""
    logs = []
    for name in sorted(os.listdir(run_dir)):
        path = osp.join(run_dir, name, 'vis_data', 'scalars.json')
        if osp.isfile(path):
            with open(path) as f:
                logs.append([json.loads(line) for line in f if line.strip()])
    return logs


def metrics_from_logs(run_dir: str) -> dict:
    """The report numbers of one run, from its mmengine scalar logs (later sessions win)."""
    train: Dict[int, dict] = {}
    val: Dict[int, dict] = {}  # keyed by the last train iteration logged before the validation
    for entries in scalar_logs(run_dir):
        last_iter = -1
        for entry in entries:
            if any(k.startswith('coco/') for k in entry):
                # its 'step' is the epoch (0 throughout an iteration-based run) unless
                # LoggerHook(log_metric_by_epoch=False); the position in the log is reliable
                val[last_iter] = entry
            elif 'loss' in entry and 'iter' in entry:
                train[entry['iter']] = entry
                last_iter = entry['iter']
    out: dict = {}
    for task in ('bbox', 'segm'):
        values = [val[s][f'coco/{task}_mAP'] for s in sorted(val) if f'coco/{task}_mAP' in val[s]]
        out[f'{task}_mAP'] = values[-1] if values else None
        out[f'{task}_mAP_best'] = max(values) if values else None
    rows = [train[i] for i in sorted(train)]
    out['iters'] = rows[-1]['iter'] if rows else None
    times = [r['time'] for r in rows[1:] or rows if 'time' in r]
    out['time_per_iter_s'] = statistics.median(times) if times else None
    cuda = [r['memory'] for r in rows if 'memory' in r]
    rss = [r['peak_rss_mb'] for r in rows if 'peak_rss_mb' in r]
    out['peak_mem_mb'], out['mem_kind'] = (max(cuda), 'cuda') if cuda else \
        (max(rss), 'rss') if rss else (None, '')
    last = rows[-1] if rows else {}
    for key in ('trainable_params', 'frozen_params', 'backbone_gflops'):
        out[key] = last.get(key)
    grad = [r['backbone_grad_gflops'] for r in rows if 'backbone_grad_gflops' in r]
    out['backbone_grad_gflops'] = statistics.fmean(grad) if grad else None
    return out


# ---------------------------------------------------------------------------------- report


def _mean_std(values: List[float]):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(mean, std, digits: int, scale: float = 1.0) -> str:
    if mean is None:
        return '-'
    text = f'{mean * scale:.{digits}f}'
    return text + (f' ± {std * scale:.{digits}f}' if std else '')


def write_csv(rows: List[dict], path: str) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: '' if row.get(k) is None else row[k] for k in CSV_FIELDS})


def aggregate(rows: List[dict], settings: List[Setting]) -> List[dict]:
    out = []
    for setting in settings:
        done = [r for r in rows if r['setting'] == setting.name and r['status'] == 'done']
        agg = dict(setting=setting, seeds=len(done),
                   runs=len([r for r in rows if r['setting'] == setting.name]))
        for key in ('bbox_mAP', 'bbox_mAP_best', 'segm_mAP', 'segm_mAP_best', 'time_per_iter_s',
                    'peak_mem_mb', 'trainable_params', 'frozen_params', 'backbone_gflops',
                    'backbone_grad_gflops'):
            agg[key] = _mean_std([r.get(key) for r in done])
        agg['mem_kind'] = done[0]['mem_kind'] if done else ''
        out.append(agg)
    return out


def write_markdown(rows: List[dict], aggs: List[dict], path: str, title: str) -> None:
    segm = any(a['segm_mAP'][0] is not None for a in aggs)
    mem_kind = next((a['mem_kind'] for a in aggs if a['mem_kind']), 'rss')
    header = ['frozen_stages', 'seeds', 'bbox mAP', 'best bbox mAP']
    if segm:
        header += ['segm mAP', 'best segm mAP']
    header += ['time/iter (s)', f'peak {"CUDA" if mem_kind == "cuda" else "RSS"} (MiB)',
               'trainable params (M)', 'frozen params (M)', 'backbone GFLOPs with grad / all']
    lines = [f'# {title}', '', '| ' + ' | '.join(header) + ' |',
             '|' + '|'.join([':--'] + ['--:'] * (len(header) - 1)) + '|']
    for a in aggs:
        cells = [a['setting'].label if a['setting'].schedule is None
                 else f'schedule {a["setting"].label}', f'{a["seeds"]}/{a["runs"]}',
                 _fmt(*a['bbox_mAP'], 3), _fmt(*a['bbox_mAP_best'], 3)]
        if segm:
            cells += [_fmt(*a['segm_mAP'], 3), _fmt(*a['segm_mAP_best'], 3)]
        grad, total = a['backbone_grad_gflops'][0], a['backbone_gflops'][0]
        cells += [_fmt(*a['time_per_iter_s'], 3), _fmt(*a['peak_mem_mb'], 0),
                  _fmt(*a['trainable_params'], 3, 1e-6), _fmt(*a['frozen_params'], 3, 1e-6),
                  '-' if grad is None or total is None else f'{grad:.3g} / {total:.3g}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'mAP: COCO bbox mAP of the last and the best validation; time/iter: median of '
              "mmengine's logged iteration time; mean ± std over seeds. Schedules: parameter "
              'counts at the end, gradient GFLOPs averaged over the logged iterations.']
    failed = [r for r in rows if r['status'] != 'done']
    if failed:
        lines += ['', '## Runs that did not finish', '', '| run | status | error |',
                  '|:--|:--|:--|']
        for r in failed:
            error = (r.get('error') or '').replace('|', '\\|')
            lines.append(f"| {r['setting']}/seed_{r['seed']} | {r['status']} | {error} |")
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_plot(aggs: List[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    shown = [a for a in aggs if a['seeds']]
    fixed = sorted((a for a in shown if a['setting'].schedule is None),
                   key=lambda a: a['setting'].stages)
    scheduled = [a for a in shown if a['setting'].schedule is not None]
    xs = [a['setting'].stages for a in fixed]
    right = (max(xs) if xs else 0) + 1
    sched_xs = [right + i for i in range(len(scheduled))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = [('bbox_mAP', 'bbox mAP (final)'), ('time_per_iter_s', 'train time / iter (s)')]
    for ax, (key, ylabel) in zip(axes, panels):
        ys = [a[key][0] for a in fixed]
        errs = [a[key][1] or 0.0 for a in fixed]
        if fixed:
            ax.errorbar(xs, [math.nan if y is None else y for y in ys], yerr=errs, marker='o',
                        capsize=4, label='fixed frozen_stages')
        for x, a in zip(sched_xs, scheduled):
            y = a[key][0]
            ax.errorbar([x], [math.nan if y is None else y], yerr=[a[key][1] or 0.0], marker='s',
                        capsize=4, linestyle='none', label=f'schedule {a["setting"].label}')
        ax.set_xticks(xs + sched_xs)
        ax.set_xticklabels([str(x) for x in xs] + ['sched'] * len(sched_xs))
        ax.set_xlabel('frozen_stages')
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------- main


def shell_join(cmd: Sequence[str]) -> str:
    """Like shlex.join, but leaves ``${VAR}`` placeholders for the shell to expand."""
    return ' '.join(c if re.fullmatch(r'\$\{\w+\}', c) else shlex.quote(c) for c in cmd)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmbackbones.config_scope import resolve_config_path
    args.config = osp.abspath(resolve_config_path(args.config))  # mmdet::... -> a file
    cfg = load_config(args.config, args.cfg_options)
    work_dir = osp.abspath(args.work_dir or osp.join(
        'work_dirs', 'frozen_sweep', osp.splitext(osp.basename(args.config))[0]))
    settings = settings_from(args, cfg)
    if not settings:
        raise SystemExit('frozen_sweep.py: error: nothing to sweep; give --stages or --schedule.')
    os.makedirs(work_dir, exist_ok=True)
    rows = []
    for setting in settings:
        for seed in args.seeds:
            run_dir = osp.join(work_dir, setting.name, f'seed_{seed}')
            os.makedirs(run_dir, exist_ok=True)
            # Not inside run_dir: mmengine dumps the merged config there under the same name.
            run_config = osp.join(work_dir, 'configs', f'{setting.name}_seed_{seed}.py')
            os.makedirs(osp.dirname(run_config), exist_ok=True)
            status = read_status(run_dir)
            rerun = status is None or (status['status'] != 'done' and args.retry_failed)
            if rerun and not args.report_only:
                write_run_config(run_config, args.config, cfg, setting, seed, args.by_epoch)
                if args.dry_run:
                    print(shell_join(train_command(args, run_config, run_dir, False)))
                    continue
                print(f'[frozen_sweep] {setting.name} seed {seed}: training ...', flush=True)
                status = run_one(args, run_dir, run_config)
                print(f'[frozen_sweep] {setting.name} seed {seed}: {status["status"]} '
                      f'({status["wall_s"]} s){": " + status["error"] if status["error"] else ""}',
                      flush=True)
            elif status is not None and not args.dry_run:
                print(f'[frozen_sweep] {setting.name} seed {seed}: {status["status"]} earlier, '
                      'not re-run', flush=True)
            if args.dry_run:
                continue
            if status is None and args.report_only:  # e.g. a cluster run still in progress
                status = dict(status='missing', error='no sweep_status.json; not run yet?')
                if scalar_logs(run_dir):
                    status = dict(status='done', error='')
            row = dict(setting=setting.name, frozen_stages=setting.label, seed=seed,
                       status=status['status'], error=status.get('error', ''), work_dir=run_dir)
            if status['status'] == 'done':
                row.update(metrics_from_logs(run_dir))
            rows.append(row)
    if args.dry_run:
        return 0
    title = f'frozen_stages sweep: {osp.basename(args.config)}'
    write_csv(rows, osp.join(work_dir, 'sweep.csv'))
    aggs = aggregate(rows, settings)
    write_markdown(rows, aggs, osp.join(work_dir, 'sweep.md'), title)
    write_plot(aggs, osp.join(work_dir, 'sweep.png'), title)
    with open(osp.join(work_dir, 'sweep.md')) as f:
        print(f.read())
    print(f'[frozen_sweep] wrote sweep.csv, sweep.md, sweep.png in {work_dir}')
    return 1 if any(r['status'] != 'done' for r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
