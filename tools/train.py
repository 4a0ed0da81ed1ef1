# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Train a detector with MMDetection 3.x and the mmbackbones backbones.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Same command line as MMDetection 3.3's tools/train.py. Differences that matter:

* mmbackbones is imported before the config is read, so its backbones, hooks and safe (weights-only)
  checkpoint loading are active even when the config has no ``custom_imports``.
* ``--resume`` without a path resumes from the newest *valid* checkpoint in the work dir
  (a half-written ``iter_N.pth`` or a dangling ``last_checkpoint`` is skipped with a warning), and
  starts fresh when there is none.
* Checkpoints are written atomically (temporary file + rename) unless the config chose its own
  checkpoint backend.
* Each checkpoint also holds the random generators' state (``RNGStateHook``), so a resumed run
  continues the random stream of the run it resumes.
* Without CUDA, ``--launcher pytorch`` (tools/dist_train.sh) trains on CPU over gloo.
* ``--amp`` on a CPU trains with bf16 autocast (``CPUBF16AmpOptimWrapper``: float32 weights and
  updates, no loss scale) where the CPU has bf16 kernels (AVX-512 / AMX), and says so where it
  has none; on a GPU it is MMEngine's fp16 ``AmpOptimWrapper``. Validation runs under autocast too.
"""
import argparse
import importlib.util
import logging
import os.path as osp
import sys

if importlib.util.find_spec('mmbackbones') is None:  # running from a source checkout
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmbackbones  # noqa: E402,F401  (registrations + weights-only checkpoint loading)
from mmbackbones.engine import launch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector (MMDetection 3.x).')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 AmpOptimWrapper on a GPU, bf16 autocast '
                        '(CPUBF16AmpOptimWrapper) on a CPU with AVX-512 / AMX')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual total batch size '
                        '(config needs auto_scale_lr.base_batch_size)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto', metavar='PATH',
        help='resume from this checkpoint; without a path, from the newest valid checkpoint in '
        'the work dir (start fresh if there is none)')
    launch.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.resume == '':
        parser.error('--resume: empty path; give a checkpoint path or no value for auto-resume')
    launch.export_local_rank(args)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        cfg = launch.load_config(args)
        if args.amp:
            launch.enable_amp(cfg)
        if args.auto_scale_lr:
            launch.enable_auto_scale_lr(cfg)
        created_group = launch.setup_distributed(cfg)
        launch.apply_resume(cfg, args.resume)
    except launch.UsageError as exc:
        print(f'train.py: error: {exc}', file=sys.stderr)
        sys.exit(2)
    if launch.enable_atomic_checkpoint_writes(cfg):
        from mmengine.logging import print_log
        print_log('Checkpoints are written atomically (backend_args=dict(backend='
                  "'atomic_local')).", logger='current', level=logging.INFO)
    launch.enable_rng_state_checkpoints(cfg)
    launch.run(cfg, created_group, 'train')


if __name__ == '__main__':
    main()
