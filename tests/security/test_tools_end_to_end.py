# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tools/test.py (load_from) and tools/train.py --resume with a hostile checkpoint: the real
Runner refuses it, the payload never runs, the tool exits with an error."""
import pytest

from tests.security.payloads import ATTACKS


@pytest.mark.parametrize('tool', ['test', 'train'])
def test_tools_refuse_a_checkpoint_that_runs_code(tool, tmp_path, run_tool, tiny_config,
                                                  tiny_cfg_options):
    evil = tmp_path / 'iter_2.pth'
    evil.write_bytes(ATTACKS['rce_system'][0](tmp_path))
    if tool == 'test':
        args = ['test.py', tiny_config, evil]
    else:
        args = ['train.py', tiny_config, '--resume', evil]
    proc = run_tool(*args, '--work-dir', tmp_path / 'work', '--cfg-options', *tiny_cfg_options,
                    'train_cfg.max_iters=4', timeout=300)
    assert proc.returncode != 0, proc.stdout[-4000:]
    assert 'UnsafeCheckpointError' in proc.stdout and 'posix.system' in proc.stdout, \
        proc.stdout[-4000:]
    assert not (tmp_path / 'pwned').exists()
