# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/demo.py on the quickstart config, shortened: float32 and ``--amp`` (bf16 autocast).

Two iterations on 8 generated images, validation on 4, predictions drawn: the demo's own path
end to end, with the real quickstart config (only its length and data size changed). On a CPU
without bf16 kernels the bf16 run sets MMBACKBONES_ALLOW_EMULATED_BF16=1 (reference kernels:
same numbers, slower), and the refusal is checked with such a CPU simulated.
"""
import pytest
from PIL import Image

from mmbackbones.engine import amp

QUICK = ['--max-iters', '2', '--num-train', '8', '--num-val', '4', '--num-vis', '2',
         '--score-thr', '0.0', '--cfg-options', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
         'val_dataloader.persistent_workers=False']


@pytest.fixture
def demo(load_tool):
    return load_tool('demo')


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_demo_trains_evaluates_and_draws(demo, precision, tmp_path, capsys, monkeypatch):
    extra = []
    if precision == 'bf16':
        extra = ['--amp']
        if not amp.cpu_supports_bf16():
            monkeypatch.setenv(amp.ALLOW_EMULATED_ENV, '1')
    work_dir = tmp_path / 'work'
    out = demo.main(['--data-root', str(tmp_path / 'data'), '--work-dir', str(work_dir),
                     *extra, *QUICK])
    printed = capsys.readouterr().out
    assert 0.0 <= out['metrics']['coco/bbox_mAP'] <= 1.0
    with Image.open(out['picture']) as picture:
        assert picture.size == (2 * 2 * 192, 2 * 192)  # two tiles side by side, drawn at 2x
    under = ' under bf16 autocast' if precision == 'bf16' else ''
    assert f'[demo] trained 2 iterations{under} in ' in printed
    logs = list(work_dir.rglob('*.log'))
    assert logs, list(work_dir.rglob('*'))
    log = logs[0].read_text()
    wrapper = 'CPUBF16AmpOptimWrapper' if precision == 'bf16' else "type='OptimWrapper'"
    assert wrapper in log
    assert ("type='CPUBF16ValLoop'" in log) == (precision == 'bf16')


def test_demo_amp_on_a_cpu_without_bf16_is_refused(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(amp, 'cpu_supports_bf16', lambda: False)
    monkeypatch.delenv(amp.ALLOW_EMULATED_ENV, raising=False)
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cpu')
    with pytest.raises(SystemExit) as exit_info:
        demo.main(['--data-root', str(tmp_path / 'data'), '--work-dir', str(tmp_path / 'w'),
                   '--amp', *QUICK])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'demo.py: error: --amp: bfloat16 autocast on the CPU needs bf16 kernels' in err
    assert not (tmp_path / 'data').exists() and not (tmp_path / 'w').exists()  # nothing made
