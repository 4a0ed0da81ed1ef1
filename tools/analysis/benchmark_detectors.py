# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Latency of RT-DETR against mmdet's DINO-4scale on the same backbone, full detectors.

    python tools/analysis/benchmark_detectors.py --device cpu --threads 2 --rounds 5 \
        --out rtdetr_vs_dino.json --markdown rtdetr_vs_dino.md

For each backbone (PResNet-18vd, PResNet-50vd) two detectors are built from their configs:

* RT-DETR: ``configs/rtdetr/rtdetr_r18vd_dec3_6x_coco.py`` / ``rtdetr_r50vd_6x_coco.py``;
* DINO: ``mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py`` with its ResNet-50 replaced by the
  RT-DETR config's own PResNet (``out_indices=(1, 2, 3)``, same freezing) and its
  ``ChannelMapper`` ``in_channels`` set to that backbone's channels.

No checkpoint is loaded: both are randomly initialised (``init_weights()``). Latency of these
architectures does not depend on the weights: neither post-processing has NMS or a score
threshold, both keep a fixed top-k.

Two timings per pair, each with ``mmbackbones.analysis.time_pair`` (one process, same input and
thread count, alternating which runs first):

* ``eval``: ``model.test_step(data)`` in eval mode under ``torch.no_grad()``, batch 1, i.e. the
  data preprocessor (normalisation, padding) + backbone, neck, head + post-processing (top-k,
  boxes scaled to the image); the uint8 image is already on the device;
* ``train``: ``model.train_step(data, optim_wrapper)`` in train mode, batch 2, ``--num-gt`` random
  boxes per image: preprocessor + forward + losses (Hungarian matching included) + backward +
  gradient clipping (0.1, as both configs) + AdamW step. Denoising is on for both (RT-DETR's
  contrastive denoising, 100 queries; DINO's own, 100 queries in dynamic groups).

``--dtype fp16`` (CUDA only) runs both under ``torch.autocast(float16)`` (training with mmengine's
``AmpOptimWrapper``), the way mmdet's ``--amp`` does. CUDA timings synchronise after each call.

The reported ratio is DINO / RT-DETR (> 1: RT-DETR is faster), the median over rounds of the
per-round ratios, with its 90% bootstrap interval; ``ratio_of_medians`` is the quotient of the two
median latencies.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import platform
import sys
from typing import Callable, Dict, List, Optional

import torch

if __package__ in (None, ''):  # run as a script: make the repository importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mmbackbones  # noqa: E402,F401  (registrations, mmbackbones:: configs)
from mmbackbones.analysis import time_pair  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RTDETR_CONFIGS = {
    'r18vd': osp.join(REPO, 'configs', 'rtdetr', 'rtdetr_r18vd_dec3_6x_coco.py'),
    'r50vd': osp.join(REPO, 'configs', 'rtdetr', 'rtdetr_r50vd_6x_coco.py'),
}
DINO_CONFIG = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
MODES = ('eval', 'train')
DTYPES = ('fp32', 'fp16')
NUM_CLASSES = 80  # both configs are COCO configs
#: strides of the memory levels each detector selects its queries from
LEVEL_STRIDES = dict(rtdetr=(8, 16, 32), dino=(8, 16, 32, 64))
CONFIG_QUERIES = dict(rtdetr=300, dino=900)


def num_tokens(detector: str, size: int) -> int:
    """Encoder tokens of ``detector`` on a ``size`` x ``size`` input (its query pool)."""
    return sum((-(-size // s)) ** 2 for s in LEVEL_STRIDES[detector])


def build_pair(backbone: str, queries: Optional[int] = None) -> Dict[str, torch.nn.Module]:
    """``{'rtdetr': model, 'dino': model}`` for ``backbone`` (a key of ``RTDETR_CONFIGS``),
    randomly initialised, on the CPU. ``queries`` replaces both configs' query counts."""
    import logging

    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    from mmbackbones.config_scope import resolve_config_path
    init_default_scope('mmdet')
    rt_cfg = Config.fromfile(RTDETR_CONFIGS[backbone]).model
    rt_cfg.backbone.init_cfg = None  # random init: no pretrained file is read
    dino_cfg = Config.fromfile(resolve_config_path(DINO_CONFIG)).model
    dino_cfg.backbone = rt_cfg.backbone.copy()
    if queries is not None:
        rt_cfg.bbox_head.num_queries = rt_cfg.test_cfg.max_per_img = queries
        dino_cfg.num_queries = dino_cfg.test_cfg.max_per_img = queries
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights() logs every parameter otherwise
    try:
        rtdetr = MODELS.build(rt_cfg)
        rtdetr.init_weights()
        dino_cfg.neck.in_channels = list(rtdetr.backbone.out_channels)
        dino = MODELS.build(dino_cfg)
        dino.init_weights()
    finally:
        logger.setLevel(level)
    return dict(rtdetr=rtdetr, dino=dino)


def make_batch(batch: int, size: int, num_gt: int, device: torch.device, seed: int = 0) -> dict:
    """``batch`` random uint8 images of ``size`` x ``size`` with ``num_gt`` random boxes each,
    in the layout of a detection dataloader (``inputs``, ``data_samples``)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=gen,
                                    dtype=torch.uint8).to(device))
        low = torch.rand(num_gt, 2, generator=gen) * size * 0.6
        wh = (torch.rand(num_gt, 2, generator=gen) * 0.3 + 0.1) * size
        boxes = torch.cat([low, (low + wh).clamp(max=size)], 1)
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.randint(0, NUM_CLASSES, (num_gt, ), generator=gen))
        samples.append(sample.to(device))
    return dict(inputs=inputs, data_samples=samples)


def _synchronised(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    if device.type != 'cuda':
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)
    return run


def eval_step(model: torch.nn.Module, data: dict, device: torch.device,
              dtype: str) -> Callable[[], None]:
    model.eval()

    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16,
                                             enabled=dtype == 'fp16'):
            model.test_step(data)
    return _synchronised(run, device)


def train_step(model: torch.nn.Module, data: dict, device: torch.device,
               dtype: str) -> Callable[[], None]:
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    clip = dict(max_norm=0.1, norm_type=2)
    wrapper = (AmpOptimWrapper(optimizer=optimizer, clip_grad=clip, dtype='float16')
               if dtype == 'fp16' else OptimWrapper(optimizer=optimizer, clip_grad=clip))
    return _synchronised(lambda: model.train_step(data, wrapper), device)


def run_benchmark(backbones: List[str], modes: List[str], device: str = 'cpu',
                  dtype: str = 'fp32', size: int = 640, rounds: int = 10, warmup: int = 2,
                  num_gt: int = 5, train_batch: int = 2, queries: Optional[int] = None,
                  log: Callable[[str], None] = print) -> Dict:
    """Time every (backbone, mode) pair; returns the JSON-ready report."""
    dev = torch.device(device)
    pairs = []
    for backbone in backbones:
        models = build_pair(backbone, queries)
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
        for m in models.values():
            m.to(dev)
        for mode in [m for m in MODES if m in modes]:  # eval first: it leaves weights unchanged
            batch = 1 if mode == 'eval' else train_batch
            data = make_batch(batch, size, num_gt, dev)
            step = eval_step if mode == 'eval' else train_step
            rtdetr = step(models['rtdetr'], data, dev, dtype)
            dino = step(models['dino'], data, dev, dtype)
            log(f'[benchmark] {backbone} {mode} (batch {batch}, {size}x{size}): '
                f'{rounds} rounds ...')
            # time_pair's ratio is first / second: DINO / RT-DETR
            timing = time_pair(dino, rtdetr, rounds=rounds, warmup=warmup)
            pairs.append(dict(
                backbone=backbone, mode=mode, batch=batch,
                rtdetr_config=osp.relpath(RTDETR_CONFIGS[backbone], REPO),
                dino_config=DINO_CONFIG,
                rtdetr_ms=timing.peer_ms, dino_ms=timing.ours_ms,
                ratio=timing.ratio, ratio_low=timing.ratio_low, ratio_high=timing.ratio_high,
                ratio_of_medians=timing.ours_ms / timing.peer_ms,
                rtdetr_params=params['rtdetr'], dino_params=params['dino']))
            log(f'[benchmark]   RT-DETR {timing.peer_ms:.1f} ms, DINO {timing.ours_ms:.1f} ms, '
                f'DINO/RT-DETR {timing.ratio:.2f} [{timing.ratio_low:.2f}, '
                f'{timing.ratio_high:.2f}]')
        del models
    import mmdet
    import mmengine
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        device=device,
        device_name=(torch.cuda.get_device_name(dev) if dev.type == 'cuda'
                     else platform.processor() or platform.machine()),
        dtype=dtype, threads=torch.get_num_threads(), size=size, rounds=rounds, warmup=warmup,
        num_gt=num_gt, queries=queries or dict(CONFIG_QUERIES),
        load_average=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
        versions=dict(torch=torch.__version__, mmdet=mmdet.__version__,
                      mmengine=mmengine.__version__),
        weights='random init (init_weights), no checkpoint loaded',
        eval_timed='model.test_step: data preprocessor + forward + post-processing, no_grad',
        train_timed='model.train_step: preprocessor + forward + losses + backward + clip + AdamW',
        ratio_definition='DINO / RT-DETR: median of per-round ratios, 90% bootstrap interval',
        pairs=pairs)


def markdown_table(report: Dict) -> str:
    lines = [f'{report["device"]} ({report["device_name"]}), {report["dtype"]}, '
             f'{report["threads"]} threads, {report["size"]}x{report["size"]}, '
             f'{report["rounds"]} rounds, {report["date"]}, load average '
             f'{report["load_average"]}', '',
             '| backbone | mode | batch | RT-DETR ms | DINO ms | DINO / RT-DETR (90% CI) |',
             '|---|---|---|---|---|---|']
    for p in report['pairs']:
        lines.append(f'| {p["backbone"]} | {p["mode"]} | {p["batch"]} | {p["rtdetr_ms"]:.1f} | '
                     f'{p["dino_ms"]:.1f} | {p["ratio"]:.2f} [{p["ratio_low"]:.2f}, '
                     f'{p["ratio_high"]:.2f}] |')
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Latency of RT-DETR vs DINO-4scale with the same PResNet backbone '
        '(eval and train step), paired and alternating in one process.')
    parser.add_argument('--device', default='cpu', help='cpu or cuda (default: cpu)')
    parser.add_argument('--dtype', default='fp32', help='fp32 or fp16 (fp16: autocast, cuda '
                        'only; default: fp32)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: unchanged, '
                        f'now {torch.get_num_threads()})')
    parser.add_argument('--rounds', type=int, default=10, help='timed rounds per pair (>= 2)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls of each first')
    parser.add_argument('--size', type=int, default=640,
                        help='square input side in pixels, a multiple of 32 (default: 640)')
    parser.add_argument('--backbones', nargs='+', default=list(RTDETR_CONFIGS),
                        help=f'which pairs (default: all of {list(RTDETR_CONFIGS)})')
    parser.add_argument('--modes', nargs='+', default=list(MODES),
                        help=f'which timings (default: all of {list(MODES)})')
    parser.add_argument('--queries', type=int,
                        help='object queries of both detectors (default: each config\'s own, '
                        'RT-DETR 300, DINO 900); for quick checks at small --size')
    parser.add_argument('--num-gt', type=int, default=5, help='boxes per training image')
    parser.add_argument('--train-batch', type=int, default=2, help='images per train step')
    parser.add_argument('--out', help='write the report as JSON to this file')
    parser.add_argument('--markdown', help='write the table as markdown to this file')
    args = parser.parse_args(argv)

    if args.device not in ('cpu', 'cuda'):
        parser.error(f"--device: {args.device!r} is not supported; choose cpu or cuda")
    if args.dtype not in DTYPES:
        parser.error(f"--dtype: {args.dtype!r} is not supported; choose fp32 or fp16")
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    if args.dtype == 'fp16' and args.device != 'cuda':
        parser.error(f"--dtype fp16 needs --device cuda (got --device {args.device}); CPU "
                     "timings are fp32 only")
    for name, value, least in (('--threads', args.threads, 1), ('--rounds', args.rounds, 2),
                               ('--queries', args.queries, 1),
                               ('--warmup', args.warmup, 0), ('--num-gt', args.num_gt, 1),
                               ('--train-batch', args.train_batch, 1)):
        if value is not None and value < least:
            parser.error(f'{name}: must be >= {least}, got {value}')
    if args.size < 32 or args.size % 32:
        parser.error(f'--size: must be a positive multiple of 32, got {args.size}')
    for name in ('rtdetr', 'dino'):
        # both select their queries as the top-k of their encoder tokens
        wanted = args.queries or CONFIG_QUERIES[name]
        if num_tokens(name, args.size) < wanted:
            label = 'RT-DETR' if name == 'rtdetr' else 'DINO'
            parser.error(f'--size {args.size}: {label} selects {wanted} queries from its encoder '
                         f'tokens but has only {num_tokens(name, args.size)} at this size; use a '
                         f'larger --size or fewer --queries')
    bad = [b for b in args.backbones if b not in RTDETR_CONFIGS]
    if bad:
        parser.error(f'--backbones: {bad} unknown; choose from {list(RTDETR_CONFIGS)}')
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        parser.error(f'--modes: {bad} unknown; choose from {list(MODES)}')
    for opt in ('out', 'markdown'):
        path = getattr(args, opt)
        if path is not None and osp.isdir(path):
            parser.error(f"--{opt}: '{path}' is a directory; give a file path")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = run_benchmark(list(dict.fromkeys(args.backbones)), list(dict.fromkeys(args.modes)),
                           device=args.device, dtype=args.dtype, size=args.size,
                           rounds=args.rounds, warmup=args.warmup, num_gt=args.num_gt,
                           train_batch=args.train_batch, queries=args.queries)
    table = markdown_table(report)
    print(table, end='')
    from mmbackbones.fileio import atomic_write
    if args.out:
        text = json.dumps(report, indent=2) + '\n'
        atomic_write(args.out, lambda f: f.write(text.encode()))
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(table.encode()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
