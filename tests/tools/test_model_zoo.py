"""docs/model_zoo.md is generated and current (tools/analysis/make_model_zoo.py --check).

``--check`` rebuilds every arch on the meta device (params, channels, strides), reads the
published numbers and benchmark files, and compares the page; FLOPs come from
docs/model_zoo_flops.json, whose entries must match the current parameter counts.
"""
import json
import shutil

import pytest

from tests.paths import REPO

DOCS = REPO / 'docs'


@pytest.fixture(scope='module')
def zoo(load_tool):
    return load_tool('analysis/make_model_zoo')


def test_model_zoo_page_is_current(zoo, capsys):
    code = zoo.main(['--check'])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    page = (DOCS / 'model_zoo.md').read_text()
    for family, cls in zoo.registered_backbones().items():
        assert f'## {family}' in page
        for arch in cls.arch_settings:
            assert f'| {arch} |' in page, (family, arch)


def test_check_fails_on_a_stale_page_or_flops_entry(zoo, tmp_path, capsys):
    page = tmp_path / 'model_zoo.md'
    page.write_text((DOCS / 'model_zoo.md').read_text() + 'A line typed by hand.\n')
    assert zoo.main(['--check', '--out', str(page)]) == 1
    assert 'is not current' in capsys.readouterr().err

    cache = json.loads((DOCS / 'model_zoo_flops.json').read_text())
    key = sorted(cache)[0]
    cache[key]['params'] += 1  # as if the arch had changed since its FLOPs were measured
    stale = tmp_path / 'flops.json'
    stale.write_text(json.dumps(cache))
    shutil.copy(DOCS / 'model_zoo.md', page)
    assert zoo.main(['--check', '--out', str(page), '--flops-cache', str(stale)]) == 1
    assert f'stale (parameter count changed) for {key}' in capsys.readouterr().err


def test_latency_comes_from_benchmark_files(zoo, tmp_path):
    bench = tmp_path / 'bench'
    bench.mkdir()
    (bench / 'shufflenetv2.json').write_text(json.dumps(dict(
        peer='torchvision', where='2 threads', rows=[dict(
            backbone='ShuffleNetV2', arch='x0.5', input=[1, 3, 320, 320], mode='eval',
            ours_ms=10.0, peer_ms=12.5, ratio=0.8), dict(  # other inputs stay out of the zoo
            backbone='ShuffleNetV2', arch='x0.5', input=[2, 3, 512, 512], mode='eval',
            ours_ms=30.0, peer_ms=40.0, ratio=0.75)])))
    rows = zoo.load_benchmarks(str(bench))
    text = zoo._latency(rows.get(('ShuffleNetV2', zoo._norm('x0_5'))))
    assert text == '10.0 vs 12.5 ms (0.80x torchvision, 1x3x320x320, 2 threads)'
    assert zoo._latency(rows.get(('ShuffleNetV2', zoo._norm('x1_0')))) == 'not measured'


def test_published_numbers_name_their_source(zoo):
    import yaml
    published = yaml.safe_load((DOCS / 'published_results.yaml').read_text())
    families = zoo.registered_backbones()
    for family, entry in published.items():
        assert family in families, f'{family} in published_results.yaml is not registered'
        for arch, results in entry.get('archs', {}).items():
            assert arch in families[family].arch_settings, (family, arch)
            for kind, rows in results.items():
                assert kind in ('imagenet', 'coco'), (family, arch, kind)
                for row in rows:
                    assert set(row) == {'value', 'source'}, (family, arch, row)
                    assert row['source'] in entry['sources'], (family, arch, row)
