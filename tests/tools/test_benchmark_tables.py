"""tools/analysis/benchmark_tables.py renders the JSON that benchmark_backbones.py writes."""
import importlib.util
import json

import pytest

from mmbackbones.analysis import median_interval
from tests.paths import REPO


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location(
        'benchmark_tables', f'{REPO}/tools/analysis/benchmark_tables.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tables_from_a_benchmark_json(tool, tmp_path, capsys):
    ratios = [0.91, 0.95, 0.93, 0.97, 0.92]
    low, high = median_interval(ratios)
    rows = [dict(arch='m', input=[1, 3, 320, 320], mode='eval', ours_ms=62.4, peer_ms=66.1,
                 ratio=0.93, ratio_low=low, ratio_high=high),
            dict(arch='m', input=[1, 3, 320, 320], mode='train', ours_ms=250.0, peer_ms=251.0,
                 ratio=0.996)]  # written before intervals existed: the ratio alone
    path = tmp_path / 'yolov8.json'
    path.write_text(json.dumps(dict(family='yolov8', peer='ultralytics', where='2 threads',
                                    amp='fp32', rounds=5, layout='default', rows=rows)))
    tool.main([str(path)])
    out = capsys.readouterr().out
    assert '**yolov8** (peer: ultralytics; 2 threads, fp32, 5 rounds' in out
    assert (f'| m | 1x3x320x320 | 62.4 / 66.1 | 0.930 ({low:.3f}-{high:.3f}) | 250.0 / 251.0 | '
            f'0.996 |') in out


def test_merge_runs_from_separate_processes(tool, tmp_path, capsys):
    paths = []
    for i, (ratio, ms) in enumerate([(0.97, 100.0), (1.02, 104.0), (0.95, 98.0)]):
        doc = dict(family='presnet', peer='timm', where='2 threads', amp='fp32', rounds=12,
                   layout='default', rows=[dict(arch='R18', input=[1, 3, 320, 320], mode='train',
                                                ours_ms=ms, peer_ms=100.0, ratio=ratio)])
        paths.append(tmp_path / f'run{i}.json')
        paths[-1].write_text(json.dumps(doc))
    out = tmp_path / 'merged.json'
    tool.main(['--merge', str(out)] + [str(p) for p in paths])
    merged = json.loads(out.read_text())
    row = merged['rows'][0]
    assert (row['ratio'], row['ratio_low'], row['ratio_high']) == (0.97, 0.95, 1.02)
    assert row['runs'] == [0.97, 1.02, 0.95] and row['ours_ms'] == 100.0
    assert '3 processes of 12/12/12 rounds' in capsys.readouterr().out
    other = json.loads(paths[0].read_text())
    other['peer'] = 'torchvision'
    paths[0].write_text(json.dumps(other))
    with pytest.raises(ValueError, match='different peer'):
        tool.main(['--merge', str(out)] + [str(p) for p in paths])
