# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Hostile checkpoints, written the way an attacker would, and the side effects each would cause.

Every payload is a real torch checkpoint (``torch.save`` of objects whose pickling is steered with
``__reduce__`` or a temporarily replaced ``__getstate__``), so it reaches the loaders exactly as a
downloaded file would. :data:`ATTACKS` maps a name to ``(build(tmp_dir) -> bytes, kind)`` where
kind is ``'code'`` (runs code: leaves a marker file / sets an env var), ``'state'`` (rewrites
process state: HistoryBuffer's shared statistics), ``'crash'`` (numpy array protocol: SIGSEGV when
the result is handed to numpy) or ``'data'`` (malformed data the rebuilders must refuse).
"""
from __future__ import annotations

import contextlib
import copyreg
import io
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

MARKER_ENV = 'MMB_SECURITY_PWNED'

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore


def evil_interface(address: int = 16) -> dict:
    """``__array_interface__`` that makes numpy read ``address``: a segfault at a low address."""
    return {'data': (address, False), 'shape': (64, ), 'typestr': '<f8', 'version': 3}


def save_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class Reduce:
    """Pickles as ``func(*args)`` (+ BUILD with ``state`` when given)."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        if self.state is None:
            return self.func, self.args
        return self.func, self.args, self.state


@contextlib.contextmanager
def history_buffer_state(state_of: Callable[[HistoryBuffer], dict]):
    """While active, HistoryBuffers pickle ``state_of(buffer)`` as their state."""
    original = HistoryBuffer.__getstate__
    HistoryBuffer.__getstate__ = state_of
    try:
        yield
    finally:
        HistoryBuffer.__getstate__ = original


def plain_hb_state(buffer: HistoryBuffer) -> dict:
    return {'max_length': buffer.max_length, '_log_history': buffer._log_history,
            '_count_history': buffer._count_history}


def wrap(payload: object) -> dict:
    """A payload inside an otherwise normal checkpoint."""
    return {'state_dict': {'backbone.w': torch.zeros(2)}, 'meta': {'x': payload}}


def np_dtype(code: str = 'f8', copy: bool = True, state=(3, '<', None, None, None, -1, -1, 0)):
    return Reduce(np.dtype, (code, False, copy), state)


def np_array(shape, dtype, data, fortran=False):
    return Reduce(_multiarray._reconstruct, (np.ndarray, (0, ), b'b'),
                  (1, tuple(shape), dtype, fortran, data))


# ---------------------------------------------------------------- code execution


def rce_system(tmp: Path) -> bytes:
    return save_bytes(wrap(Reduce(os.system, (f'touch {tmp / "pwned"}', ))))


def rce_exec(tmp: Path) -> bytes:
    code = f'import os; os.environ[{MARKER_ENV!r}] = "1"; open({str(tmp / "pwned")!r}, "w")'
    return save_bytes(wrap(Reduce(exec, (code, ))))


def rce_getattr(tmp: Path) -> bytes:
    """getattr reaching os.system through an allowlisted class's module globals."""
    return save_bytes(wrap(Reduce(getattr, (HistoryBuffer, '__init__'))))


def rce_import(tmp: Path) -> bytes:
    return save_bytes(wrap(Reduce(__import__, ('antigravity', ))))


def rce_reconstructor(tmp: Path) -> bytes:
    """copyreg._reconstructor building an arbitrary class instance."""
    return save_bytes(wrap(Reduce(copyreg._reconstructor, (OrderedDict, dict, {'a': 1}))))


# ---------------------------------------------------------------- process state


def hb_shared_statistics(tmp: Path) -> bytes:
    """HistoryBuffer.__setstate__ merges the pickled statistics into the dict every buffer of the
    process shares: 'mean' would compute the max from then on."""
    buffer = HistoryBuffer([1.0, 2.0], [1, 1])

    def state(self):
        return {**plain_hb_state(self), 'statistics_methods': {'mean': HistoryBuffer.max}}

    with history_buffer_state(state):
        return save_bytes(wrap(buffer))


def hb_class_dict(tmp: Path) -> bytes:
    """BUILD setting ``_statistics_methods`` (and ``__class__``-level names) on the instance."""
    buffer = HistoryBuffer([1.0], [1])

    def state(self):
        return {**plain_hb_state(self), '_statistics_methods': {'mean': HistoryBuffer.max},
                'statistics': 7}

    with history_buffer_state(state):
        return save_bytes(wrap(buffer))


# ---------------------------------------------------------------- crashes (numpy array protocol)


def crash_hb_interface(tmp: Path) -> bytes:
    """A HistoryBuffer whose pickled dict carries ``__array_interface__``."""
    buffer = HistoryBuffer([1.0], [1])

    def state(self):
        return {**plain_hb_state(self), '__array_interface__': evil_interface()}

    with history_buffer_state(state):
        return save_bytes(wrap(buffer))


def crash_tensor_interface(tmp: Path) -> bytes:
    """A tensor with an ``__array_interface__`` attribute (torch's own allowlist builds it)."""
    tensor = torch.zeros(4)
    tensor.__array_interface__ = evil_interface()
    return save_bytes({'state_dict': {'backbone.w': tensor}})


def crash_dict_interface(tmp: Path) -> bytes:
    """An OrderedDict with an ``__array_interface__`` attribute (BUILD on OrderedDict)."""
    state = OrderedDict(w=torch.zeros(2))
    state.__array_interface__ = evil_interface()
    return save_bytes({'state_dict': state})


def crash_nested_interface(tmp: Path) -> bytes:
    """A HistoryBuffer whose ``_log_history`` is another buffer claiming ``__array_interface__``."""
    inner = HistoryBuffer([1.0], [1])
    outer = HistoryBuffer([1.0], [1])

    def state(self):
        if self is outer:
            return {**plain_hb_state(self), '_log_history': inner}
        return {**plain_hb_state(self), '__array_interface__': evil_interface()}

    with history_buffer_state(state):
        return save_bytes(wrap(outer))


# ---------------------------------------------------------------- malformed data


def dtype_object(tmp: Path) -> bytes:
    return save_bytes(wrap(np_array((2, ), np_dtype('O', state=(3, '|', None, None, None, -1,
                                                                -1, 63)), [1, 2])))


def dtype_structured_state(tmp: Path) -> bytes:
    """numpy.dtype BUILD turning a float64 dtype into a structured one with an object field."""
    state = (3, '|', None, ('a', ), {'a': (np.dtype('O'), 0)}, 8, 1, 0x3f)
    return save_bytes(wrap(np_dtype('f8', state=state)))


def dtype_singleton(tmp: Path) -> bytes:
    """numpy.dtype(copy=False) is numpy's shared float64 descriptor; BUILD would rewrite it."""
    return save_bytes(wrap(np_dtype('f8', copy=False, state=(3, '>', None, None, None, -1, -1,
                                                               0))))


def array_size_mismatch(tmp: Path) -> bytes:
    return save_bytes(wrap(np_array((1 << 20, ), np_dtype('f8'), b'\0' * 8)))


def array_bad_shape(tmp: Path) -> bytes:
    return save_bytes(wrap(np_array((-1, ), np_dtype('f8'), b'\0' * 8)))


def array_reconstruct_args(tmp: Path) -> bytes:
    return save_bytes(wrap(Reduce(_multiarray._reconstruct, (np.ndarray, (1 << 40, ), b'b'))))


def scalar_object(tmp: Path) -> bytes:
    return save_bytes(wrap(Reduce(_multiarray.scalar, (np_dtype('O', state=(3, '|', None, None,
                                                                          None, -1, -1, 63)),
                                                       [1]))))


def scalar_short(tmp: Path) -> bytes:
    return save_bytes(wrap(Reduce(_multiarray.scalar, (np_dtype('f8'), b'\0'))))


def hb_unbuilt(tmp: Path) -> bytes:
    """A HistoryBuffer created without its state (NEWOBJ, no BUILD)."""
    with history_buffer_state(lambda self: None):
        return save_bytes(wrap(HistoryBuffer([1.0], [1])))


def hb_bad_arrays(tmp: Path) -> bytes:
    buffer = HistoryBuffer([1.0, 2.0], [1, 1])

    def state(self):
        return {**plain_hb_state(self), '_count_history': 'not an array'}

    with history_buffer_state(state):
        return save_bytes(wrap(buffer))


def deep_nesting(tmp: Path) -> bytes:
    """50,000 nested lists (built without recursion)."""
    ops = bytearray(b'\x80\x02')
    ops += b']' * 50_000  # EMPTY_LIST
    ops += b'a' * 49_999  # APPEND
    ops += b'.'
    return torch_zip(bytes(ops))


def torch_zip(pickle_bytes: bytes, base: bytes = b'') -> bytes:
    """A torch zip checkpoint whose data.pkl is ``pickle_bytes`` (other records from ``base``)."""
    base = base or save_bytes({})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as src, \
            zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith('/data.pkl'):
                data = pickle_bytes
            dst.writestr(info.filename, data)
    return out.getvalue()


#: name -> (builder, kind)
ATTACKS: Dict[str, Tuple[Callable[[Path], bytes], str]] = {
    'rce_system': (rce_system, 'code'),
    'rce_exec': (rce_exec, 'code'),
    'rce_getattr': (rce_getattr, 'code'),
    'rce_import': (rce_import, 'code'),
    'rce_reconstructor': (rce_reconstructor, 'code'),
    'hb_shared_statistics': (hb_shared_statistics, 'state'),
    'hb_class_dict': (hb_class_dict, 'state'),
    'crash_hb_interface': (crash_hb_interface, 'crash'),
    'crash_tensor_interface': (crash_tensor_interface, 'crash'),
    'crash_dict_interface': (crash_dict_interface, 'crash'),
    'crash_nested_interface': (crash_nested_interface, 'crash'),
    'dtype_object': (dtype_object, 'data'),
    'dtype_structured_state': (dtype_structured_state, 'data'),
    'dtype_singleton': (dtype_singleton, 'data'),
    'array_size_mismatch': (array_size_mismatch, 'data'),
    'array_bad_shape': (array_bad_shape, 'data'),
    'array_reconstruct_args': (array_reconstruct_args, 'data'),
    'scalar_object': (scalar_object, 'data'),
    'scalar_short': (scalar_short, 'data'),
    'hb_unbuilt': (hb_unbuilt, 'data'),
    'hb_bad_arrays': (hb_bad_arrays, 'data'),
    'deep_nesting': (deep_nesting, 'data'),
}
