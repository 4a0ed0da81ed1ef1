"""Paired timing of two callables on a noisy machine.

Both run in one process, on the same input and thread count, alternating which goes first in
each round, so drift and background load hit both alike. We report medians and the median of
the per-round ratios, which is the number to quote, with a bootstrap interval for that median:
an interval that straddles 1.0 means the two are not told apart on this machine.
"""
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple


@dataclass
class PairTiming:
    ours_ms: float
    peer_ms: float
    ratio: float  # median over rounds of ours / peer
    rounds: int
    ratio_low: float = float('nan')  # 90% bootstrap interval of that median
    ratio_high: float = float('nan')


def median_interval(values: Sequence[float], *, level: float = 0.9, resamples: int = 2000,
                    seed: int = 0) -> Tuple[float, float]:
    """Percentile-bootstrap interval of the median of ``values`` (deterministic: fixed seed)."""
    if len(values) < 2:
        return float('nan'), float('nan')
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values)))
                     for _ in range(resamples))
    tail = (1.0 - level) / 2
    return medians[int(tail * (resamples - 1))], medians[int((1.0 - tail) * (resamples - 1))]


def time_pair(ours: Callable[[], object], peer: Callable[[], object], *, rounds: int = 20,
              warmup: int = 3) -> PairTiming:
    for _ in range(warmup):
        ours()
        peer()
    ours_t: List[float] = []
    peer_t: List[float] = []
    for r in range(rounds):
        order = ((ours, ours_t), (peer, peer_t)) if r % 2 == 0 else ((peer, peer_t), (ours, ours_t))
        for fn, sink in order:
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(ours_t, peer_t)]
    low, high = median_interval(ratios)
    return PairTiming(statistics.median(ours_t) * 1e3, statistics.median(peer_t) * 1e3,
                      statistics.median(ratios), rounds, low, high)


def cpu_description() -> str:
    """This CPU in words, for benchmark and study records: its model name (Linux
    ``/proc/cpuinfo``, else ``platform.processor()``), the logical cores this process may use
    and PyTorch's kernel capability, plus ``AMX`` where the CPU has AMX tiles (e.g.
    ``'Intel(R) Xeon(R) Processor, 2 cores, AVX512, AMX'``): bf16 timings differ by far with
    and without them."""
    import os
    import platform

    import torch
    name = ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    name = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or 'unknown CPU'
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
             else os.cpu_count())
    from mmbackbones.engine.amp import cpu_has_amx
    amx = ', AMX' if cpu_has_amx() else ''
    return f'{name}, {cores} cores, {torch.backends.cpu.get_cpu_capability()}{amx}'
