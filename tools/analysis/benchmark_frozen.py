# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""What ``frozen_stages`` saves in a real detector's training step: time, memory, FLOPs.

    python tools/analysis/benchmark_frozen.py [CONFIG] [--stages -1 0 1 2 3 4] [--rounds 5]
        [--batch-size 8] [--size 192 192] [--threads 2] [--no-rss]

Default config: the quickstart ATSS + VoVNet-19-slim-dw-eSE + FPN demo detector at its 192x192
training size and batch size. One model, random weights, a fixed random batch with random boxes;
for each ``frozen_stages`` k (every valid value by default) it measures:

* **train step**: ``model.train_step`` (data preprocessor, forward, loss, backward, SGD step)
  timed in alternating rounds: every round times each k once, in a rotated order, so drift and
  background load hit every k alike; the median over rounds is reported. Switching k on the one
  model goes through :func:`mmbackbones.engine.frozen_stages.set_frozen_stages`.
* **saved for backward**: bytes of the distinct tensors autograd stores for backward during the
  forward pass (``torch.autograd.graph.saved_tensors_hooks``; parameters excluded). This is the
  activation memory that freezing can save, measured exactly and in-process.
* **peak RSS**: ``VmHWM`` (peak resident memory) of a fresh process per k that builds the model
  and runs three steps (a process's peak RSS never goes down, so one process cannot measure
  several k; ``ru_maxrss`` is not used because it keeps the parent's RSS across exec). It includes
  the interpreter, libraries and model (the same for every k), so differences between rows are
  what matters; "RSS growth in steps" is the peak minus the peak before the first step. With
  CUDA, the peak allocated CUDA memory of one step is measured in-process.
* **frozen share** of the backbone's forward FLOPs (mmengine's FlopAnalyzer per stage).

The expected saving at k is the frozen share times the backbone's backward time at k=-1 (measured
separately: backbone forward, then the timed backward with random output gradients). The target is
that the measured saving is at least 80 % of it, and that time and memory fall monotonically with k.
"""
import argparse
import importlib.util
import json
import logging
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple

if importlib.util.find_spec('mmbackbones') is None:  # running from a source checkout
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = osp.join(REPO, 'configs', 'quickstart', 'atss_vovnet-19-slim-dw-ese_fpn_demo.py')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG, help='detector config')
    parser.add_argument('--stages', type=int, nargs='+', help='frozen_stages values (default: all)')
    parser.add_argument('--rounds', type=int, default=5, help='timed rounds (default 5)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds first (default 2)')
    parser.add_argument('--batch-size', type=int, help="default: the config's train batch size")
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help="input size (default: the config's image_size, else 512 512)")
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--no-rss', action='store_true', help='skip the per-k RSS processes')
    parser.add_argument('--rss-worker', type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------- setup


def build(args) -> Tuple[torch.nn.Module, dict, object]:
    """The detector (random weights), one fixed batch, and an SGD optim wrapper."""
    import mmbackbones  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.optim import OptimWrapper
    from mmengine.structures import InstanceData

    from mmbackbones.config_scope import resolve_config_path
    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no per-parameter init report
    cfg = Config.fromfile(resolve_config_path(args.config))
    model_cfg = cfg.model
    model_cfg.backbone['init_cfg'] = None  # timing needs no pretrained weights
    model = MODELS.build(model_cfg).to(args.device)
    model.init_weights()
    model.train()
    batch = args.batch_size or cfg.train_dataloader.batch_size
    height, width = args.size or cfg.get('image_size', (512, 512))
    head = model_cfg.get('bbox_head') or model_cfg.roi_head.bbox_head
    num_classes = head['num_classes']
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen))
        n = 5
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([width * 0.7, height * 0.7])
        wh = (0.1 + 0.2 * torch.rand(n, 2, generator=gen)) * torch.tensor([width, height])
        sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, num_classes, (n, ), generator=gen))
        samples.append(sample)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))  # timing, not learning
    return model, dict(inputs=inputs, data_samples=samples), optim


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def saved_for_backward_mib(model, data) -> float:
    """MiB of distinct non-parameter tensors autograd saves during one training forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: Dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    batch = model.data_preprocessor(data, True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(**batch, mode='loss')
    del losses
    return sum(storages.values()) / 2**20


def backbone_backward_ms(model, data, device: str, repeats: int) -> float:
    """Median time of the backbone's backward alone, everything trainable (k=-1)."""
    batch = model.data_preprocessor(data, True)
    times = []
    for _ in range(repeats + 1):
        outs = model.backbone(batch['inputs'])
        grads = [torch.randn_like(o) for o in outs]
        sync(device)
        start = time.perf_counter()
        torch.autograd.backward(outs, grads)
        sync(device)
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:]) * 1e3


# ---------------------------------------------------------------------------------- measuring


def rss_worker(args) -> None:
    """Child process: peak RSS of three training steps at frozen_stages=args.rss_worker."""
    from mmbackbones.engine.frozen_stages import set_frozen_stages
    from mmbackbones.engine.hooks.train_cost import peak_rss_mb
    torch.set_num_threads(args.threads)
    model, data, optim = build(args)
    set_frozen_stages(model.backbone, args.rss_worker)
    base = peak_rss_mb()
    for _ in range(3):
        model.train_step(data, optim)
    peak = peak_rss_mb()
    print(json.dumps(dict(stages=args.rss_worker, before_mib=base, peak_mib=peak)))


def peak_rss(args, stages: int) -> dict:
    cmd = [sys.executable, osp.abspath(__file__), args.config, '--rss-worker', str(stages),
           '--threads', str(args.threads), '--device', 'cpu']
    if args.batch_size:
        cmd += ['--batch-size', str(args.batch_size)]
    if args.size:
        cmd += ['--size', *map(str, args.size)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, CUDA_VISIBLE_DEVICES='')).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.rss_worker is not None:
        rss_worker(args)
        return
    from mmbackbones.engine.frozen_stages import frozen_settings, set_frozen_stages, stage_flops
    torch.set_num_threads(args.threads)
    model, data, optim = build(args)
    stages = args.stages or frozen_settings(model.backbone)
    shape = tuple(model.data_preprocessor(data, True)['inputs'].shape)
    flops = stage_flops(model.backbone, shape)
    share = {k: sum(flops[:k + 1]) / sum(flops) for k in stages}

    set_frozen_stages(model.backbone, -1)
    bwd_ms = backbone_backward_ms(model, data, args.device, max(3, args.rounds))
    saved, cuda_peak = {}, {}
    for k in stages:
        set_frozen_stages(model.backbone, k)
        saved[k] = saved_for_backward_mib(model, data)
        if args.device.startswith('cuda'):
            torch.cuda.reset_peak_memory_stats()
            model.train_step(data, optim)
            sync(args.device)
            cuda_peak[k] = torch.cuda.max_memory_allocated() / 2**20

    times: Dict[int, List[float]] = {k: [] for k in stages}
    for r in range(args.warmup + args.rounds):
        order = stages[r % len(stages):] + stages[:r % len(stages)]
        for k in order:
            set_frozen_stages(model.backbone, k)
            sync(args.device)
            start = time.perf_counter()
            model.train_step(data, optim)
            sync(args.device)
            if r >= args.warmup:
                times[k].append(time.perf_counter() - start)
    step = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    rss = {} if args.no_rss else {k: peak_rss(args, k) for k in stages}

    ref = step[-1] if -1 in step else None
    print(f'config: {osp.relpath(args.config, REPO)}; input {shape}; device {args.device}; '
          f'{args.threads} threads; {args.rounds} rounds (+{args.warmup} warm-up); backbone '
          f'forward {sum(flops) / 1e9:.2f} GFLOPs, backward alone {bwd_ms:.0f} ms at k=-1\n')
    header = ['frozen_stages', 'frozen FLOPs share', 'train step (ms)', 'saved vs -1 (ms)',
              'expected (ms)', 'saved / expected', 'saved for backward (MiB)']
    if rss:
        header += ['peak RSS (MiB)', 'RSS growth in steps (MiB)']
    if cuda_peak:
        header.append('peak CUDA (MiB)')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '|'.join(['--:'] * len(header)) + '|')
    verdicts = []
    for k in stages:
        expected = share[k] * bwd_ms
        saved_ms = None if ref is None else ref - step[k]
        ratio = '-' if saved_ms is None or expected == 0 else f'{saved_ms / expected:.2f}'
        if ratio != '-':
            verdicts.append(saved_ms / expected >= 0.8)
        cells = [str(k), f'{share[k]:.1%}', f'{step[k]:.0f}',
                 '-' if saved_ms is None else f'{saved_ms:.0f}', f'{expected:.0f}', ratio,
                 f'{saved[k]:.0f}']
        if rss:
            growth = rss[k]['peak_mib'] - rss[k]['before_mib']
            cells += [f'{rss[k]["peak_mib"]:.0f}', f'{growth:.0f}']
        if cuda_peak:
            cells.append(f'{cuda_peak[k]:.0f}')
        print('| ' + ' | '.join(cells) + ' |')

    def falling(values: List[float]) -> str:
        return 'yes' if all(a >= b for a, b in zip(values, values[1:])) else 'no'

    ordered = sorted(stages)
    print(f'\ntime falls monotonically with k: {falling([step[k] for k in ordered])}; saved-for-'
          f'backward memory: {falling([saved[k] for k in ordered])}'
          + (f'; peak RSS: {falling([rss[k]["peak_mib"] for k in ordered])}' if rss else '')
          + (f'; peak CUDA: {falling([cuda_peak[k] for k in ordered])}' if cuda_peak else '')
          + (f'; saving >= 80% of expected at every k: {"yes" if all(verdicts) else "no"}'
             if verdicts else ''))


if __name__ == '__main__':
    main()
