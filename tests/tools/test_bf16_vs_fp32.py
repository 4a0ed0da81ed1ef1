# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/analysis/bf16_vs_fp32.py: arguments, the refusal without bf16, what is paired, output."""
import json

import pytest

from mmbackbones.analysis import backbone_study as bs
from mmbackbones.engine import amp


def test_bad_arguments_name_the_argument_and_the_choices(load_tool, capsys):
    tool = load_tool('analysis/bf16_vs_fp32')
    for argv, expected in (
            (['--candidates', 'YOLOv8n'], "did you mean 'YOLOv8-n'?); choose from "),
            (['--candidates', 'YOLOv8-n', 'YOLOv8-n'], "['YOLOv8-n'] given more than once"),
            (['--rounds', '1'], '--rounds 1 must be >= 2'),
            (['--threads', '0'], '--threads: 0 must be >= 1')):
        with pytest.raises(SystemExit) as exc:
            tool.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert 'bf16_vs_fp32.py: error: ' in err and expected in err, (argv, err)


def test_a_cpu_without_bf16_is_refused_and_writes_nothing(load_tool, capsys, monkeypatch,
                                                           tmp_path):
    tool = load_tool('analysis/bf16_vs_fp32')
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: False)
    monkeypatch.delenv(amp.ALLOW_EMULATED_ENV, raising=False)
    out = tmp_path / 'r.json'
    assert tool.main(['--json', str(out), '--data-root', str(tmp_path / 'data')]) == 2
    err = capsys.readouterr().err
    assert 'bf16_vs_fp32.py: error: bf16_vs_fp32.py: bfloat16 autocast on the CPU needs' in err
    assert not out.exists() and not (tmp_path / 'data').exists()


def test_pairs_the_bf16_detector_with_the_same_fp32_one(load_tool, capsys, monkeypatch,
                                                        tmp_path, tiny_demo_data):
    """The ratio is bf16 over fp32 of the same candidate's detector (first the bf16 config,
    then the fp32 one, on one shared batch); the table and the JSON carry what was measured."""
    tool = load_tool('analysis/bf16_vs_fp32')
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: True)
    calls = []

    def fake_pair(first, second, inputs, *, rounds, warmup):
        calls.append((first.model.backbone.type, bs.is_bf16(first), bs.is_bf16(second),
                      first.model.backbone == second.model.backbone, id(inputs), rounds,
                      warmup))
        slow = 1.25 if first.model.backbone.type == 'YOLOv8CSPDarknet' else 0.6
        return {kind: dict(ms=100 * slow, ref_ms=100.0, ratio=slow, ratio_low=slow - 0.05,
                           ratio_high=slow + 0.05, rounds=rounds) for kind in ('train', 'infer')}

    monkeypatch.setattr(bs, 'measure_pair', fake_pair)
    out = tmp_path / 'sub' / 'r.json'
    assert tool.main(['--candidates', 'YOLOv8-n', bs.REFERENCE, '--rounds', '3', '--warmup',
                      '0', '--data-root', tiny_demo_data['root'], '--json', str(out)]) == 0
    assert [c[:4] for c in calls] == [('YOLOv8CSPDarknet', True, False, True),
                                      ('mmdet.ResNet', True, False, True)]
    assert calls[0][4] == calls[1][4] and calls[0][5:] == (3, 0)  # one batch, the rounds asked
    text = capsys.readouterr().out
    assert '| YOLOv8-n | 100 | 125 | 1.25 [1.20, 1.30] | 100.0 | 125.0 | 1.25 [1.20, 1.30] |' in text
    assert '| mmdet-ResNet-18 | 100 | 60 | 0.60 [0.55, 0.65] |' in text
    data = json.loads(out.read_text())
    assert list(data['rows']) == ['YOLOv8-n', bs.REFERENCE]
    assert data['rows']['YOLOv8-n']['train'] == dict(bf16_ms=125.0, fp32_ms=100.0, ratio=1.25,
                                                     ratio_low=1.2, ratio_high=1.3)
    assert data['rounds'] == 3 and data['threads'] == 2 and data['cpu'] and data['bf16_kind']
