"""The paired-timing statistics behind every ratio in docs/benchmarks.md."""
import math
import statistics

from mmbackbones.analysis import median_interval, time_pair


def test_median_interval_brackets_the_median():
    values = [0.93, 0.97, 1.01, 0.95, 0.99, 1.04, 0.96, 0.98, 1.00, 0.94, 1.10, 0.97]
    low, high = median_interval(values)
    assert min(values) <= low <= statistics.median(values) <= high <= max(values)
    assert low < high
    # more rounds of the same spread: a narrower interval
    low_many, high_many = median_interval(values * 8)
    assert high_many - low_many < high - low
    assert median_interval([1.02] * 5) == (1.02, 1.02)
    assert all(math.isnan(v) for v in median_interval([1.0]))


def test_time_pair_reports_the_interval():
    calls = []
    t = time_pair(lambda: calls.append('ours'), lambda: calls.append('peer'), rounds=6, warmup=1)
    # alternating order: ours first in even rounds, peer first in odd ones
    assert calls[2:6] == ['ours', 'peer', 'peer', 'ours']
    assert t.rounds == 6 and t.ratio_low <= t.ratio <= t.ratio_high
