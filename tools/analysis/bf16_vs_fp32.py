# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""bf16 autocast against float32 for the study's detectors, paired, on this CPU.

    python tools/analysis/bf16_vs_fp32.py --candidates mmdet-ResNet-18 VoVNet-19-slim-eSE \
        YOLOv8-n --threads 2 --rounds 6 [--json FILE] [--data-root data/demo]

For each candidate of tools/analysis/backbone_study.py, the same detector (the quickstart's ATSS
with that backbone) is built twice, as ``--amp bf16`` and as float32 trains and runs it, and one
train step (batch 8 at 192 px: forward, backward, AdamW step) and one inference (one image,
network only) of the two alternate in one process on the same batch and threads. The ratio is
the median of the per-round bf16 / fp32 ratios with its 90% bootstrap interval: below 1, bf16
is faster on this CPU. A CPU without bf16 kernels is refused (as ``--amp``).
"""
import argparse
import json
import os.path as osp
import sys

if __package__ in (None, ''):  # run as a script: make the repository importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmbackbones.analysis import backbone_study as bs  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='bf16_vs_fp32.py',
        description='bf16 autocast vs float32 for the study detectors, paired in one process '
        'on this CPU.')
    parser.add_argument('--candidates', nargs='+', metavar='NAME',
                        default=[bs.REFERENCE, 'VoVNet-19-slim-eSE', 'YOLOv8-n'],
                        help=f'study candidates (default: {bs.REFERENCE}, VoVNet-19-slim-eSE, '
                        'YOLOv8-n)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--rounds', type=int, default=6, help='paired rounds (default 6)')
    parser.add_argument('--warmup', type=int, default=1, help='warm-up rounds (default 1)')
    parser.add_argument('--data-root', default=osp.join('data', 'demo'),
                        help='the demo data set (generated there if missing)')
    parser.add_argument('--json', metavar='FILE', help='write the results as JSON')
    args = parser.parse_args(argv)
    problems = []
    try:
        bs.select_candidates(args.candidates)  # names, did-you-mean, duplicates
        args.selected = [bs.candidate(name) for name in args.candidates]
    except ValueError as exc:
        problems.append(str(exc))
    if args.threads < 1:
        problems.append(f'--threads: {args.threads} must be >= 1.')
    if args.rounds < 2 or args.warmup < 0:
        problems.append(f'--rounds {args.rounds} must be >= 2 and --warmup {args.warmup} >= 0.')
    if problems:
        parser.error(' '.join(problems))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from mmbackbones.engine.amp import CPUBF16UnsupportedError, check_cpu_bf16
    try:
        check_cpu_bf16('bf16_vs_fp32.py')
    except CPUBF16UnsupportedError as exc:
        print(f'bf16_vs_fp32.py: error: {exc}', file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> int:
    import torch

    from mmbackbones.analysis.timing import cpu_description
    from mmbackbones.engine.amp import cpu_bf16_kind
    bs.prepare_study_data(args.data_root, log=lambda msg: None)
    out = dict(cpu=cpu_description(), bf16_kind=cpu_bf16_kind(), threads=args.threads,
               rounds=args.rounds, warmup=args.warmup, torch=torch.__version__, rows={})
    inputs = None
    for cand in args.selected:
        cfgs = {amp: bs.build_config(cand, iters=1000, seed=0, data_root=args.data_root,
                                     work_dir=osp.join('work_dirs', 'bf16_vs_fp32'), amp=amp)
                for amp in ('bf16', 'fp32')}
        inputs = inputs or bs.timing_inputs(cfgs['fp32'])
        pair = bs.measure_pair(cfgs['bf16'], cfgs['fp32'], inputs, rounds=args.rounds,
                               warmup=args.warmup)
        out['rows'][cand.name] = {kind: dict(bf16_ms=p['ms'], fp32_ms=p['ref_ms'],
                                             ratio=p['ratio'], ratio_low=p['ratio_low'],
                                             ratio_high=p['ratio_high'])
                                  for kind, p in pair.items()}
    print(f'CPU: {out["cpu"]}; bf16 kernels: {out["bf16_kind"]}; {args.threads} thread(s), '
          f'{args.rounds} paired rounds')
    print('| detector backbone | train fp32 ms | train bf16 ms | bf16 / fp32 [90% CI] | '
          'infer fp32 ms | infer bf16 ms | bf16 / fp32 [90% CI] |')
    print('|:--|--:|--:|--:|--:|--:|--:|')
    for name, row in out['rows'].items():
        cells = []
        for kind, digits in (('train', 0), ('infer', 1)):
            r = row[kind]
            cells += [f'{r["fp32_ms"]:.{digits}f}', f'{r["bf16_ms"]:.{digits}f}',
                      f'{r["ratio"]:.2f} [{r["ratio_low"]:.2f}, {r["ratio_high"]:.2f}]']
        print(f'| {name} | {" | ".join(cells)} |')
    if args.json:
        from mmbackbones.fileio import atomic_write_bytes
        atomic_write_bytes((json.dumps(out, indent=1, sort_keys=True) + '\n').encode(),
                           args.json)
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
