"""Paired timing of two callables on a noisy machine.

Both run in one process, on the same input and thread count, alternating which goes first in
each round, so drift and background load hit both alike. We report medians and the median of
the per-round ratios, which is the number to quote.
"""
import statistics
import time
from dataclasses import dataclass
from typing import Callable, List


@dataclass
class PairTiming:
    ours_ms: float
    peer_ms: float
    ratio: float  # median over rounds of ours / peer
    rounds: int


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
    return PairTiming(statistics.median(ours_t) * 1e3, statistics.median(peer_t) * 1e3,
                      statistics.median(ratios), rounds)
