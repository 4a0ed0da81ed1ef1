# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Save the random number generators' state in each checkpoint and restore it on resume.

MMEngine re-seeds a resumed run with the seed it started with, so the generators restart from
the state of iteration 0, not of the checkpoint's iteration. Whatever a model draws while
training (RT-DETR's denoising noise, drop-path, dropout) then differs from an uninterrupted run.
:class:`RNGStateHook` stores torch's CPU (and CUDA) generator, numpy's global generator and
Python's ``random`` in ``checkpoint['rng_state']``; when the runner resumes, it checks the state in
``after_load_checkpoint`` and puts it back in ``before_train`` (after MMEngine's own re-seeding),
so a resumed run continues the same random stream. ``tools/train.py`` adds it to every run.

Everything is stored as tensors and plain numbers, so the weights-only checkpoint loader reads it
with nothing extra allowed; a state of the wrong shape or type is refused with a clear error.
"""
import logging
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmdet.registry import HOOKS

_NUMPY_KEY_WORDS = 624  # MT19937 state words (numpy's legacy global generator)
_PYTHON_STATE_WORDS = 625  # random.getstate()[1]: 624 words and the position


def capture_rng_state() -> Dict[str, Any]:
    """The current state of torch's, numpy's and Python's global generators, as tensors and
    plain numbers."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, words, gauss_next = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(name=str(name), keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), gauss=float(gauss)),
        python=dict(version=int(version), words=torch.tensor(words, dtype=torch.int64),
                    gauss_next=None if gauss_next is None else float(gauss_next)))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = [torch.cuda.get_rng_state()]  # this process's device
    return state


def _bad(what: str, value: Any) -> ValueError:
    return ValueError(f"checkpoint['rng_state']: {what} is invalid ({type(value).__name__}: "
                      f'{value!r:.80}); the checkpoint was not written by RNGStateHook or is '
                      'damaged. Delete the rng_state entry to resume without it.')


def check_rng_state(state: Any) -> None:
    """Refuse anything but a state :func:`capture_rng_state` made."""
    if not isinstance(state, dict) or not {'torch', 'numpy', 'python'} <= set(state):
        raise _bad('the entry', state)
    cpu = state['torch']
    if not (isinstance(cpu, torch.Tensor) and cpu.dtype == torch.uint8 and cpu.dim() == 1
            and cpu.numel() == torch.get_rng_state().numel()):
        raise _bad('torch', cpu)
    npy = state['numpy']
    if not (isinstance(npy, dict) and npy.get('name') == 'MT19937'
            and isinstance(npy.get('keys'), torch.Tensor)
            and tuple(npy['keys'].shape) == (_NUMPY_KEY_WORDS, )
            and isinstance(npy.get('pos'), int) and isinstance(npy.get('has_gauss'), int)
            and isinstance(npy.get('gauss'), float)):
        raise _bad('numpy', npy)
    py = state['python']
    if not (isinstance(py, dict) and isinstance(py.get('version'), int)
            and isinstance(py.get('words'), torch.Tensor)
            and tuple(py['words'].shape) == (_PYTHON_STATE_WORDS, )
            and (py.get('gauss_next') is None or isinstance(py['gauss_next'], float))):
        raise _bad('python', py)
    keys = npy['keys']
    if int(keys.min()) < 0 or int(keys.max()) >= 2**32:
        raise _bad('numpy keys', keys)
    cuda = state.get('cuda')
    if cuda is not None and not (isinstance(cuda, list) and all(
            isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1
            for t in cuda)):
        raise _bad('cuda', cuda)


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Put back a state from :func:`capture_rng_state`, after checking every part."""
    check_rng_state(state)
    cpu, npy, py, keys = state['torch'], state['numpy'], state['python'], state['numpy']['keys']
    torch.set_rng_state(cpu)
    np.random.set_state((npy['name'], keys.numpy().astype(np.uint32), npy['pos'],
                         npy['has_gauss'], npy['gauss']))
    random.setstate((py['version'], tuple(int(w) for w in py['words'].tolist()),
                     py['gauss_next']))
    cuda = state.get('cuda')
    if cuda and torch.cuda.is_available():  # checked by check_rng_state
        torch.cuda.set_rng_state(cuda[0])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Store the generators' state in every checkpoint; restore it when a run resumes.

    Plain weight loading (``load_from`` without resume) leaves the generators alone. MMEngine
    writes checkpoints on rank 0 only, so only rank 0's state is stored: a distributed run
    (world size > 1) resumes with MMEngine's re-seeding, as without this hook, and says so.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        checkpoint['rng_state'] = capture_rng_state()

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        state = checkpoint.get('rng_state')
        if state is None or not getattr(runner, '_resume', False):
            return
        check_rng_state(state)
        if get_world_size() > 1:
            print_log('RNGStateHook: the checkpoint holds rank 0\'s generator state only; with '
                      f'{get_world_size()} processes the resumed run re-seeds as MMEngine does, '
                      'so its random draws differ from an uninterrupted run.',
                      logger='current', level=logging.WARNING)
            return
        self._pending = state

    def before_train(self, runner: Any) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None
