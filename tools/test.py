# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Test (and evaluate) a detector checkpoint with MMDetection 3.x and the mmbackbones backbones.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show]
                         [--show-dir DIR] [--wait-time S] [--tta] [--amp] [--cfg-options k=v ...]
                         [--launcher none|pytorch|slurm|mpi]

Same command line as MMDetection 3.3's tools/test.py. mmbackbones is imported first, so the
checkpoint is loaded with ``torch.load(weights_only=True)`` and the mmbackbones allowlist; a missing
or truncated checkpoint is reported before any model is built. ``--amp`` runs the test loop under
autocast: bf16 on a CPU with bf16 kernels (AVX-512 / AMX; refused with a clear error elsewhere),
fp16 on a GPU.
"""
import argparse
import importlib.util
import os.path as osp
import sys

if importlib.util.find_spec('mmbackbones') is None:  # running from a source checkout
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmbackbones  # noqa: E402,F401  (registrations + weights-only checkpoint loading)
from mmbackbones.engine import launch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector checkpoint.')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', type=str,
                        help='dump predictions to this pickle file (.pkl) for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results in a window')
    parser.add_argument('--show-dir', help='save painted images to <work_dir>/<timestamp>/SHOW_DIR')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each image is shown with --show (default: 2)')
    parser.add_argument('--tta', action='store_true', help='enable test-time augmentation')
    parser.add_argument('--amp', action='store_true',
                        help='test under autocast: bf16 on a CPU (AVX-512 / AMX), fp16 on a GPU')
    launch.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.wait_time < 0:
        parser.error(f'--wait-time: must be >= 0 seconds, got {args.wait_time}')
    launch.export_local_rank(args)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        launch.check_checkpoint_arg(args.checkpoint)
        cfg = launch.load_config(args)
        cfg.load_from = args.checkpoint
        if args.show or args.show_dir:
            launch.enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
        if args.tta:
            launch.enable_tta(cfg)
        if args.out is not None:
            launch.add_dump_results(cfg, args.out)
        if args.amp:
            launch.enable_test_amp(cfg)
        created_group = launch.setup_distributed(cfg)
    except launch.UsageError as exc:
        print(f'test.py: error: {exc}', file=sys.stderr)
        sys.exit(2)
    launch.run(cfg, created_group, 'test')


if __name__ == '__main__':
    main()
