# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RNGStateHook: the generators' state round-trips through a weights-only checkpoint."""
import random

import numpy as np
import pytest
import torch

from mmbackbones.engine.checkpoint import load_checkpoint_weights_only
from mmbackbones.engine.hooks.rng_state import (RNGStateHook, capture_rng_state,
                                                restore_rng_state)


def draws():
    return (torch.rand(5).tolist(), np.random.rand(5).tolist(), [random.random() for _ in range(5)],
            np.random.randn(1).tolist())


def test_state_round_trips_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.randn(3)  # leaves a cached Gaussian in numpy's state
    path = tmp_path / 'ckpt.pth'
    torch.save({'rng_state': capture_rng_state()}, path)
    want = draws()
    state = load_checkpoint_weights_only(str(path))['rng_state']
    restore_rng_state(state)
    assert draws() == want


class _Runner:
    _resume = True


def test_hook_restores_at_before_train_only_when_resuming():
    hook = RNGStateHook()
    ckpt = {}
    torch.manual_seed(3)
    hook.before_save_checkpoint(_Runner(), ckpt)
    want = torch.rand(3)
    hook.after_load_checkpoint(_Runner(), ckpt)
    torch.manual_seed(0)  # what MMEngine's re-seeding would do in between
    hook.before_train(_Runner())
    assert torch.equal(torch.rand(3), want)

    class Loading(_Runner):
        _resume = False
    hook.after_load_checkpoint(Loading(), ckpt)  # plain load_from: generators untouched
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    hook.before_train(Loading())
    assert torch.equal(torch.rand(3), expected)


def _state():
    return capture_rng_state()


@pytest.mark.parametrize('damage, part', [
    (lambda s: s.pop('numpy'), 'the entry'),
    (lambda s: s.__setitem__('torch', torch.zeros(3, dtype=torch.uint8)), 'torch'),
    (lambda s: s['numpy'].__setitem__('keys', torch.zeros(10, dtype=torch.int64)), 'numpy'),
    (lambda s: s['numpy'].__setitem__('name', 'PCG64'), 'numpy'),
    (lambda s: s['numpy']['keys'].__setitem__(0, -1), 'numpy keys'),
    (lambda s: s['python'].__setitem__('words', [1, 2]), 'python'),
    (lambda s: s.__setitem__('cuda', ['x']), 'cuda'),
])
def test_damaged_state_is_refused_and_nothing_changes(damage, part):
    state = _state()
    damage(state)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with pytest.raises(ValueError, match=rf"rng_state'\]: {part} is invalid"):
        RNGStateHook().after_load_checkpoint(_Runner(), {'rng_state': state})
    assert torch.equal(torch.rand(2), expected)
