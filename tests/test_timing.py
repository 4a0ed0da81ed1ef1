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


def test_cpu_description_names_the_cpu_cores_and_kernels(monkeypatch):
    import os

    import torch

    from mmbackbones.analysis.timing import cpu_description
    text = cpu_description()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    amx = ', AMX' if torch.cpu._is_amx_tile_supported() else ''
    assert text.endswith(f', {cores} cores, {torch.backends.cpu.get_cpu_capability()}{amx}'), text
    name = text.rsplit(' cores, ', 1)[0].rsplit(',', 1)[0]
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: True)
    assert cpu_description().endswith(f'{torch.backends.cpu.get_cpu_capability()}, AMX')
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    assert not cpu_description().endswith('AMX')
    assert name and name != 'unknown CPU'
    import builtins
    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        if path == '/proc/cpuinfo':
            raise OSError('no such file')
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, 'open', no_cpuinfo)
    monkeypatch.setattr('platform.processor', lambda: 'Some CPU')
    assert cpu_description().startswith('Some CPU, ')
