# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/analysis/benchmark_detectors.py: RT-DETR vs DINO, end to end on a tiny input."""
import json
import re

import pytest
import torch


@pytest.fixture(scope='module')
def tool(load_tool):
    return load_tool('analysis/benchmark_detectors')


def test_tiny_run_writes_a_consistent_report(tool, tmp_path, capsys):
    out, md = tmp_path / 'bench.json', tmp_path / 'bench.md'
    threads = torch.get_num_threads()
    try:  # 64 px holds 84 RT-DETR tokens: 8 queries instead of the configs' 300 / 900
        assert tool.main(['--size', '64', '--queries', '8', '--rounds', '2', '--warmup', '0',
                          '--threads', '1', '--backbones', 'r18vd', '--train-batch', '1',
                          '--num-gt', '2', '--out', str(out), '--markdown', str(md)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert {'date', 'device', 'dtype', 'threads', 'size', 'rounds', 'load_average', 'versions',
            'weights', 'eval_timed', 'train_timed', 'pairs'} <= set(report)
    assert (report['device'], report['dtype'], report['threads'], report['size'],
            report['rounds'], report['queries']) == ('cpu', 'fp32', 1, 64, 2, 8)
    assert [(p['backbone'], p['mode'], p['batch']) for p in report['pairs']] == [
        ('r18vd', 'eval', 1), ('r18vd', 'train', 1)]
    for pair in report['pairs']:
        assert pair['rtdetr_ms'] > 0 and pair['dino_ms'] > 0
        assert pair['ratio_of_medians'] == pytest.approx(pair['dino_ms'] / pair['rtdetr_ms'])
        assert pair['ratio_low'] <= pair['ratio'] <= pair['ratio_high']
        # RT-DETR-R18's official size is 20 M parameters; DINO's 6+6 layers are larger
        assert abs(pair['rtdetr_params'] - 20.0e6) < 0.3e6
        assert pair['dino_params'] > pair['rtdetr_params']
        assert pair['rtdetr_config'] == 'configs/rtdetr/rtdetr_r18vd_dec3_6x_coco.py'
    table = md.read_text()
    assert table in capsys.readouterr().out
    for pair in report['pairs']:
        row = (f'| r18vd | {pair["mode"]} | {pair["batch"]} | {pair["rtdetr_ms"]:.1f} | '
               f'{pair["dino_ms"]:.1f} | {pair["ratio"]:.2f} [{pair["ratio_low"]:.2f}, '
               f'{pair["ratio_high"]:.2f}] |')
        assert row in table.splitlines(), table
    assert not list(tmp_path.glob('*.tmp*'))


@pytest.mark.parametrize('argv, message', [
    (['--dtype', 'fp16'], '--dtype fp16 needs --device cuda (got --device cpu)'),
    (['--dtype', 'bf16'], "--dtype: 'bf16' is not supported; choose fp32 or fp16"),
    (['--device', 'tpu'], "--device: 'tpu' is not supported; choose cpu or cuda"),
    (['--size', '100'], '--size: must be a positive multiple of 32, got 100'),
    (['--size', '64'], '--size 64: RT-DETR selects 300 queries from its encoder tokens but has '
     'only 84'),
    (['--size', '128'], '--size 128: DINO selects 900 queries from its encoder tokens but has '
     'only 340'),
    (['--rounds', '1'], '--rounds: must be >= 2, got 1'),
    (['--threads', '0'], '--threads: must be >= 1, got 0'),
    (['--backbones', 'r101vd'], "--backbones: ['r101vd'] unknown; choose from ['r18vd', "
     "'r50vd']"),
    (['--modes', 'infer'], "--modes: ['infer'] unknown; choose from ['eval', 'train']"),
])
def test_bad_arguments_are_explained(tool, tmp_path, capsys, argv, message):
    out = tmp_path / 'never.json'
    with pytest.raises(SystemExit) as exit_info:
        tool.main([*argv, '--out', str(out)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cuda_requested_without_a_gpu(tool, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit):
        tool.main(['--device', 'cuda'])
    assert '--device cuda: no CUDA device is available here' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(['--out', str(tmp_path)])
    assert re.search(r"--out: '.*' is a directory", capsys.readouterr().err)
