# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Safe, crash-tolerant checkpoint loading and saving for MMEngine runs.

Why this module exists
----------------------
Loading. Every checkpoint a user opens may be hostile. MMEngine 0.10.7 calls ``torch.load``
without ``weights_only`` for local files and with ``weights_only=False`` (through torch.hub) for
URLs, and an MMEngine training checkpoint holds objects (``HistoryBuffer``, numpy arrays) that
torch's own weights-only unpickler refuses. At import this module replaces MMEngine's loaders for
every scheme it knows (local paths, ``http(s)://``, ``torchvision://`` / ``modelzoo://``,
``open-mmlab://`` / ``openmmlab://``, ``mmcls://``, ``s3://`` / ``petrel://``, ``pavi://``) with
loaders that end in :func:`load_checkpoint_weights_only`, so ``Runner.resume``,
``Runner.load_checkpoint``, ``load_from`` and ``init_cfg=dict(type='Pretrained')`` all get the
same checked loading. URLs are downloaded (bounded socket timeout and size, temporary file renamed
into torch.hub's cache) and then loaded from the local file.

:func:`load_checkpoint_weights_only` runs ``torch.load(weights_only=True)`` with extra globals that
are *rebuilders*, not the classes themselves: the pickled name ``HistoryBuffer`` resolves to a
stand-in whose ``__setstate__`` checks the keys, types, dtypes and shapes of the pickled state and
builds a fresh ``HistoryBuffer`` through its constructor; ``numpy.dtype``, ``numpy.ndarray``'s
``_reconstruct`` and ``numpy``'s scalar helper likewise accept only plain numeric dtypes and data
whose length matches the shape. No attribute from the file is ever set on an object, no class
state is touched, and object dtypes never exist. After unpickling, the whole result is walked once:
stand-ins are swapped for the objects they built, and anything that is not plain data (tensors,
containers, numbers, strings, numeric numpy values, rebuilt ``HistoryBuffer`` s) is refused,
including attributes a pickle attached to tensors or dicts.

The extra globals exist only inside our loads (added on entry, removed on exit; torch's
process-wide allowlist is otherwise untouched), so after ``import mmbackbones`` a plain
``torch.load(weights_only=True)`` elsewhere in the process accepts exactly what it accepted before.

A checkpoint that needs anything else is refused with :class:`UnsafeCheckpointError`, naming the
globals; a trusted file can be opened after :func:`allow_globals`, which refuses callables that can
run code (``builtins``, ``os``, ``subprocess``, ``importlib``, ``functools.partial``, ...). A
truncated or corrupt file raises :class:`CorruptCheckpointError` naming the path.

Resuming. MMEngine's auto-resume trusts ``<work_dir>/last_checkpoint`` blindly. A run killed while
saving can leave a half-written ``iter_N.pth``; :func:`find_latest_valid_checkpoint` validates the
candidate cheaply and falls back to the newest valid ``iter_*.pth`` / ``epoch_*.pth``. A candidate
is valid only if its zip end record ends exactly at the end of the file and its central directory
sits right before it (torch writes nothing after the end record): ``zipfile`` alone also accepts a
file cut just after a zip archive stored inside it.

Saving. MMEngine writes a checkpoint with ``file_backend.put(bytes, path)``, which for local paths
opens the final path and writes in place, so a kill mid-write leaves a truncated file under the real
name. We register a file backend ``'atomic_local'`` (:class:`AtomicLocalBackend`) whose ``put``
writes a hidden temporary file in the same directory, fsyncs it and ``os.replace``-s it over the
target, so a checkpoint name only ever refers to a complete file. We chose this over the two
alternatives because it is opt-in and small: replacing MMEngine's global ``'local'`` backend would
change every file MMEngine writes (logs, dumps, visualisations) for every user of the process, and a
``CheckpointHook`` subclass would force users to change ``default_hooks`` in their configs. Our
``tools/train.py`` selects the backend for the checkpoint hook (``backend_args``) when the config
did not choose one; any config can opt in with
``default_hooks=dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))``.
The small ``last_checkpoint`` pointer is still written in place by MMEngine; a torn pointer is
handled by the validation on resume.
"""
from __future__ import annotations

import contextlib
import glob
import http.client
import importlib
import logging
import math
import os
import os.path as osp
import pickle
import re
import struct
import tempfile
import threading
import types
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import numpy as np
import torch
import torch.serialization
from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend
from mmengine.logging import print_log
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader

from mmbackbones.fileio import atomic_write_bytes  # the package's one atomic writer

__all__ = [
    'SAFE_GLOBALS', 'CheckpointLoadError', 'UnsafeCheckpointError', 'CorruptCheckpointError',
    'CheckpointDownloadError', 'allow_globals', 'load_checkpoint_weights_only',
    'load_from_local_weights_only', 'load_from_http_weights_only', 'download_checkpoint',
    'check_checkpoint_file', 'is_valid_checkpoint', 'find_latest_valid_checkpoint',
    'AtomicLocalBackend', 'atomic_write_bytes', 'ATOMIC_BACKEND_NAME',
]

_TAG = '[mmbackbones refused] '  # marks our own refusals inside torch's re-raised messages


def _qualified(obj: Any) -> str:
    return f'{getattr(obj, "__module__", None)}.{getattr(obj, "__qualname__", type(obj).__name__)}'


class _Refused(pickle.UnpicklingError):
    """Raised by the rebuilders while torch unpickles; torch re-raises it as UnpicklingError."""

    def __init__(self, message: str) -> None:
        super().__init__(_TAG + message)


# --------------------------------------------------------------------------- rebuilders

#: numpy dtype kinds a training checkpoint may hold: bool, signed/unsigned int, float, complex
_NUMERIC_KINDS = frozenset('biufc')
_MAX_NDIM = 32
_MAX_ARRAY_BYTES = 1 << 31  # one array of a message hub; weights are tensors, not numpy arrays
_HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'mean', 'current'})


class _PickledDtype:
    """Stands for ``numpy.dtype`` while unpickling: a plain numeric dtype, nothing else.

    numpy pickles a dtype as ``numpy.dtype(code, align, copy)`` followed by BUILD with
    ``(version, byteorder, subarray, names, fields, elsize, alignment, flags)``; numpy's own
    ``__setstate__`` would accept structured, object or resized layouts, so the state is checked
    here and only the byte order is taken from it.
    """
    __slots__ = ('dtype', 'built')

    def __new__(cls, *args: Any) -> '_PickledDtype':
        # numpy writes (code, False, True); numpy < 1.17 wrote the flags as 0 and 1
        if len(args) != 3 or type(args[0]) is not str or len(args[0]) > 8 \
                or type(args[1]) not in (bool, int) or args[1] != 0 \
                or type(args[2]) not in (bool, int) or args[2] != 1:
            raise _Refused(f'numpy.dtype{_short(args)}: only numpy.dtype(<numeric code>, False, '
                           'True) as numpy pickles a plain numeric dtype is accepted.')
        try:
            dtype = np.dtype(args[0])
        except (TypeError, ValueError) as exc:
            raise _Refused(f'numpy.dtype({args[0]!r}): {exc}') from None
        _check_numeric_dtype(dtype, f'numpy.dtype({args[0]!r})')
        self = object.__new__(cls)
        self.dtype, self.built = dtype, False
        return self

    def __setstate__(self, state: Any) -> None:
        if self.built:
            raise _Refused('numpy.dtype: its state is set twice.')
        if type(state) is not tuple or len(state) != 8 or state[0] != 3 or type(state[0]) is not int \
                or state[1] not in ('<', '>', '|', '=') \
                or state[2:7] != (None, None, None, -1, -1) or state[7] != 0 \
                or type(state[7]) is not int:
            raise _Refused(f'numpy.dtype state {_short(state)}: only the state of a plain numeric '
                           "dtype, (3, '<'|'>'|'|', None, None, None, -1, -1, 0), is accepted.")
        if state[1] in '<>':
            self.dtype = self.dtype.newbyteorder(state[1])
        self.built = True


def _check_numeric_dtype(dtype: np.dtype, what: str) -> None:
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.hasobject or dtype.metadata is not None:
        raise _Refused(f'{what}: dtype {dtype!r} is not a plain numeric dtype (bool, int, uint, '
                       'float or complex).')


def _built_dtype(obj: Any, what: str) -> np.dtype:
    if type(obj) is not _PickledDtype or not obj.built:
        raise _Refused(f'{what}: expected a numpy dtype, got {_describe(obj)}.')
    return obj.dtype


class _NdarrayName:
    """What the pickled name ``numpy.ndarray`` resolves to: a marker for ``_reconstruct``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise _Refused('numpy.ndarray cannot be called directly; arrays are rebuilt from their '
                       'pickled state only.')


class _PickledArray:
    """Stands for a numpy array while unpickling; BUILD checks the state and makes the array."""
    __slots__ = ('array',)

    def __new__(cls, *args: Any) -> '_PickledArray':
        if args:
            raise _Refused('numpy arrays are rebuilt from their pickled state only.')
        self = object.__new__(cls)
        self.array = None
        return self

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise _Refused('numpy array: its state is set twice.')
        if type(state) is not tuple or len(state) != 5 or state[0] != 1:
            raise _Refused(f'numpy array state {_short(state)}: expected (1, shape, dtype, '
                           'is_fortran, data).')
        _, shape, dtype, fortran, data = state
        dtype = _built_dtype(dtype, 'numpy array')
        if type(shape) is not tuple or len(shape) > _MAX_NDIM \
                or any(type(n) is not int or n < 0 for n in shape):
            raise _Refused(f'numpy array: shape {_short(shape)} is not a tuple of at most '
                           f'{_MAX_NDIM} non-negative ints.')
        if type(fortran) is not bool or type(data) is not bytes:
            raise _Refused('numpy array: the order flag must be a bool and the data bytes, got '
                           f'{_describe(fortran)} and {_describe(data)}.')
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != len(data) or nbytes > _MAX_ARRAY_BYTES:
            raise _Refused(f'numpy array: shape {shape} of {dtype} needs {nbytes} bytes, the '
                           f'file holds {len(data)} (at most {_MAX_ARRAY_BYTES} accepted).')
        flat = np.frombuffer(data, dtype=dtype).copy()
        self.array = flat.reshape(shape, order='F' if fortran else 'C')


def _np_reconstruct(cls: Any, shape: Any, typecode: Any) -> _PickledArray:
    """Stand-in for ``numpy.core.multiarray._reconstruct`` (what numpy's ``__reduce__`` names)."""
    if cls is not _NdarrayName or shape != (0,) or typecode != b'b':
        raise _Refused(f'numpy _reconstruct{_short((cls, shape, typecode))}: only '
                       "_reconstruct(numpy.ndarray, (0,), b'b') as numpy pickles arrays.")
    return _PickledArray()


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """Stand-in for ``numpy.core.multiarray.scalar``: a numeric scalar from its raw bytes."""
    dtype = _built_dtype(dtype, 'numpy scalar')
    if type(data) is not bytes or len(data) != dtype.itemsize:
        raise _Refused(f'numpy scalar of {dtype}: expected {dtype.itemsize} bytes of data, got '
                       f'{_describe(data)}.')
    return np.frombuffer(data, dtype=dtype)[0]


class _PickledHistoryBuffer:
    """Stands for MMEngine's ``HistoryBuffer`` while unpickling.

    ``HistoryBuffer.__setstate__`` would copy every key of the pickled dict onto the instance and
    merge the pickled ``statistics_methods`` into the dict shared by *all* buffers of the process.
    Here the state must have exactly the keys MMEngine writes, two equally long 1-d numeric arrays
    and an int ``max_length``; the buffer is then made by ``HistoryBuffer(...)``.
    """
    __slots__ = ('buffer',)
    _KEYS = frozenset({'max_length', '_log_history', '_count_history'})

    def __new__(cls, *args: Any) -> '_PickledHistoryBuffer':
        if args:
            raise _Refused('HistoryBuffer is rebuilt from its pickled state only.')
        self = object.__new__(cls)
        self.buffer = None
        return self

    def __setstate__(self, state: Any) -> None:
        if self.buffer is not None:
            raise _Refused('HistoryBuffer: its state is set twice.')
        if type(state) is not dict or not all(type(k) is str for k in state) \
                or not self._KEYS <= set(state) <= self._KEYS | {'statistics_methods'}:
            keys = sorted(map(repr, state)) if isinstance(state, dict) else _describe(state)
            raise _Refused(f'HistoryBuffer state with keys {keys}: expected exactly max_length, '
                           '_log_history, _count_history (and statistics_methods).')
        methods = state.get('statistics_methods', {})
        if type(methods) is not dict or any(
                name not in _HISTORY_BUFFER_STATISTICS or method is not getattr(HistoryBuffer, name)
                for name, method in methods.items()):
            raise _Refused('HistoryBuffer.statistics_methods: only the built-in min, max, mean '
                           'and current (under their own names) are accepted.')
        max_length = state['max_length']
        if type(max_length) is not int or max_length < 1:
            raise _Refused(f'HistoryBuffer.max_length: expected a positive int, got '
                           f'{_describe(max_length)}.')
        arrays = []
        for key in ('_log_history', '_count_history'):
            value = state[key]
            if type(value) is not _PickledArray or value.array is None:
                raise _Refused(f'HistoryBuffer.{key}: expected a numpy array, got '
                               f'{_describe(value)}.')
            if value.array.ndim != 1 or value.array.dtype.kind not in 'biuf':
                raise _Refused(f'HistoryBuffer.{key}: expected a 1-d real array, got shape '
                               f'{value.array.shape} of {value.array.dtype}.')
            arrays.append(value.array)
        if len(arrays[0]) != len(arrays[1]) or len(arrays[0]) > max_length:
            raise _Refused(f'HistoryBuffer: {len(arrays[0])} values and {len(arrays[1])} counts '
                           f'(max_length {max_length}) do not match.')
        self.buffer = HistoryBuffer(arrays[0], arrays[1], max_length)


def _history_buffer_getattr(obj: Any, name: str, *default: Any) -> Any:
    """Stand-in for ``builtins.getattr``: only ``HistoryBuffer.min/max/mean/current``.

    Pickle protocol 2 stores the methods HistoryBuffer pickles in its ``statistics_methods`` as
    ``getattr(HistoryBuffer, 'min')``. A general getattr would reach any attribute of any
    allowlisted object (and so any function).
    """
    if obj is _PickledHistoryBuffer and type(name) is str \
            and name in _HISTORY_BUFFER_STATISTICS and not default:
        return getattr(HistoryBuffer, name)
    raise _Refused(f'Refused global builtins.getattr({_describe(obj)}, {name!r}): the checkpoint '
                   'allowlist only permits getattr(HistoryBuffer, <built-in statistic>).')


def _describe(obj: Any) -> str:
    if obj is _PickledHistoryBuffer:
        return _qualified(HistoryBuffer)
    if isinstance(obj, type):
        return _qualified(obj)
    return type(obj).__qualname__ + ' object'


def _short(obj: Any, limit: int = 120) -> str:
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 - a description only
        text = _describe(obj)
    return text if len(text) <= limit else text[:limit] + '...'


#: The globals an MMEngine 0.10 / MMDetection 3.3 training checkpoint names beyond torch's built-in
#: ``weights_only`` allowlist, as ``(rebuilder, pickled name)``. Found by saving real
#: RetinaNet/SGD/LinearLR/MultiStepLR runs and listing what
#: ``torch.serialization.get_unsafe_globals_in_checkpoint`` reported:
#:
#: * ``HistoryBuffer``: ``checkpoint['message_hub']['log_scalars']`` holds one per logged scalar.
#: * ``builtins.getattr`` (guarded): HistoryBuffer's pickled ``statistics_methods`` refer to
#:   ``HistoryBuffer.min/max/mean/current`` through getattr.
#: * ``numpy.ndarray``, ``numpy._core.multiarray._reconstruct``, ``numpy.dtype``: the arrays
#:   inside each HistoryBuffer (``_log_history``, ``_count_history``).
#: * ``numpy._core.multiarray.scalar``: numpy scalars in the message hub (the ``np.float64``
#:   ``runtime_info['eta']`` written by the logger hook).
#: * ``numpy.core.multiarray._reconstruct`` / ``numpy.core.multiarray.scalar``: the same two
#:   functions under the names numpy 1.x writes, so checkpoints saved in a numpy<2 environment (most
#:   of the OpenMMLab ecosystem) still load.
#:
#: They are active only inside :func:`load_checkpoint_weights_only`.
SAFE_GLOBALS: Tuple[Tuple[Any, str], ...] = (
    (_PickledHistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (_history_buffer_getattr, 'builtins.getattr'),
    (_NdarrayName, 'numpy.ndarray'),
    (_PickledDtype, 'numpy.dtype'),
    (_np_reconstruct, 'numpy._core.multiarray._reconstruct'),
    (_np_scalar, 'numpy._core.multiarray.scalar'),
    (_np_reconstruct, 'numpy.core.multiarray._reconstruct'),
    (_np_scalar, 'numpy.core.multiarray.scalar'),
)
_SAFE_NAMES = frozenset(name for _, name in SAFE_GLOBALS)
#: torch runs BUILD only on instances of allowlisted types; ``_np_reconstruct`` returns these (the
#: name is never written by numpy; a file naming it gets an empty stand-in that needs BUILD too)
_BUILD_TARGETS: Tuple[Tuple[Any, str], ...] = (
    (_PickledArray, 'mmbackbones.engine.checkpoint._PickledArray'),
)
_STAND_INS = {_PickledHistoryBuffer: 'buffer', _PickledArray: 'array', _PickledDtype: 'dtype'}


# --------------------------------------------------------------------------- errors


class CheckpointLoadError(RuntimeError):
    """Base class of the checkpoint errors raised by :mod:`mmbackbones.engine.checkpoint`."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


class UnsafeCheckpointError(CheckpointLoadError, pickle.UnpicklingError):
    """A checkpoint references a global outside the allowlist, or holds data that fails the checks.

    Attributes:
        path: the checkpoint file.
        globals: the refused global names, as written in the pickle (e.g. ``'posix.system'``).
    """

    def __init__(self, path: str, refused: Sequence[str], detail: str = '') -> None:
        self.globals = tuple(refused)
        if self.globals:
            what = (f'it references the global(s) {", ".join(self.globals)}, which are not on the '
                    'allowlist of types an MMEngine/MMDetection checkpoint needs '
                    '(mmbackbones.engine.checkpoint.SAFE_GLOBALS)')
        else:
            what = 'it holds data that is not plain weights or MMEngine training state'
        message = (
            f"Refused to load checkpoint '{path}': {what}. Unpickling arbitrary objects can "
            'execute arbitrary code when the file is loaded, so checkpoints are opened with '
            'torch.load(weights_only=True) and checked rebuilders. To use this file, convert it '
            'to a plain state dict with a tool you trust (e.g. in an isolated environment: load '
            "it, then torch.save(ckpt['state_dict'], 'clean.pth'))")
        dangerous = [n for n in self.globals if _unsafe_name_reason(n) is not None]
        if self.globals and not dangerous:
            listed = ', '.join(repr(n) for n in self.globals)
            message += (', or, only if you trust where it came from, allow exactly these globals '
                        'first: from mmbackbones.engine.checkpoint import allow_globals; '
                        f'allow_globals([{listed}]).')
        elif dangerous:
            message += (f'. {", ".join(dangerous)} cannot be allowed at all: '
                        f'{_unsafe_name_reason(dangerous[0])}.')
        else:
            message += '.'
        if detail:
            message += f' ({detail})'
        super().__init__(message, path)


class CorruptCheckpointError(CheckpointLoadError):
    """A checkpoint file is truncated or otherwise not a readable torch checkpoint."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"Checkpoint '{path}' is truncated or corrupt and cannot be loaded ({reason}). This "
            'usually means the process writing it was killed mid-save or the copy was incomplete. '
            'Delete it and use an earlier checkpoint; with tools/train.py --resume auto, the '
            'newest valid checkpoint in the work dir is picked automatically.', path)


class CheckpointDownloadError(CheckpointLoadError):
    """A checkpoint URL could not be downloaded completely (status, timeout, size, truncation)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Could not download checkpoint '{url}': {reason}. Nothing was written "
                         'to the cache; check the URL and the connection, or download the file '
                         'yourself and pass its local path.', url)


# --------------------------------------------------------------------------- allowlist extension

#: modules whose callables can run code, import, touch files/processes or reach any attribute
_DENIED_MODULES = (
    'builtins', '__builtin__', 'os', 'posix', 'nt', 'posixpath', 'ntpath', 'sys', 'subprocess',
    'importlib', 'imp', 'pkgutil', 'runpy', 'code', 'codeop', 'pickle', '_pickle', 'copyreg',
    'copy_reg', 'marshal', 'shelve', 'dill', 'cloudpickle', 'joblib', 'shutil', 'tempfile',
    'pathlib', 'io', '_io', 'ctypes', '_ctypes', 'cffi', 'functools', '_functools', 'operator',
    '_operator', 'types', 'inspect', 'ast', 'gc', 'weakref', 'threading', '_thread',
    'multiprocessing', 'concurrent', 'asyncio', 'signal', 'socket', 'pty', 'platform', 'webbrowser',
    'pdb', 'bdb', 'timeit', 'trace', 'profile', 'cProfile', 'atexit', 'site', 'sysconfig',
    'zipimport', 'urllib', 'http', 'ftplib', 'smtplib', 'telnetlib', 'xmlrpc', 'logging', 'yaml',
    'torch._C', 'torch._ops', 'torch.ops', 'torch.jit', 'torch.hub', 'torch.package',
    'torch.serialization', 'torch._dynamo', 'torch.fx', 'torch.utils.cpp_extension',
    'torch.compiler', 'torch._inductor', 'torch.autograd', 'torch.library', 'numpy.lib',
    'numpy.ctypeslib', 'numpy.f2py', 'numpy.testing', 'numpy.distutils', 'mmengine.config',
    'mmengine.registry', 'mmengine.utils', 'mmengine.fileio',
)
#: names that run code, import or load wherever they live
_DENIED_NAMES = frozenset({
    'eval', 'exec', 'execfile', 'compile', '__import__', 'import_module', 'getattr', 'setattr',
    'delattr', 'globals', 'locals', 'vars', 'open', 'system', 'popen', 'spawn', 'fork', 'run',
    'call', 'check_call', 'check_output', 'Popen', 'load', 'loads', 'load_url', 'partial',
    'attrgetter', 'itemgetter', 'methodcaller', 'apply', 'breakpoint', 'input', 'interact',
    '__reduce__', '__reduce_ex__', '__setstate__', '__getattr__', '__getattribute__',
    'build_from_cfg', 'fromfile', 'from_cfg',
})


def _unsafe_name_reason(name: str) -> Optional[str]:
    """Why the global named ``name`` must never be allowed, or None."""
    module, _, attr = name.rpartition('.')
    if not module:
        return f'{name!r} is not a dotted module.attribute name'
    for denied in _DENIED_MODULES:
        if module == denied or module.startswith(denied + '.'):
            return (f'callables of module {denied!r} can run code, import modules, or reach files, '
                    'processes or arbitrary attributes')
    last = attr.rpartition('.')[2]
    if last in _DENIED_NAMES or last.startswith('exec') or last.startswith('spawn'):
        return f'a callable named {last!r} can run code or import modules'
    if name in _SAFE_NAMES:
        return (f'{name} is already handled by a checked rebuilder; allowing the real object would '
                'bypass its checks')
    return None


def _unsafe_object_reason(obj: Any) -> Optional[str]:
    if isinstance(obj, types.ModuleType):
        return 'a module object gives access to everything in it'
    if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType,
                        types.MethodWrapperType, types.WrapperDescriptorType,
                        types.MethodDescriptorType, types.ClassMethodDescriptorType,
                        types.MethodType, types.GetSetDescriptorType)):
        return (f'{_short(obj)} is a built-in function or bound method; these can run code or '
                'reach arbitrary objects')
    if obj is type or obj is object or isinstance(obj, (classmethod, staticmethod, property)):
        return f'{_short(obj)} constructs or reaches arbitrary types'
    if getattr(obj, '__module__', None) in ('builtins', '__builtin__'):
        return f'{_short(obj)} is a builtin'
    if not callable(obj):
        return f'{_short(obj)} is not a class or function'
    return None


#: globals added by :func:`allow_globals`, used only inside :func:`load_checkpoint_weights_only`
_USER_GLOBALS: List[Tuple[Any, str]] = []
_USER_LOCK = threading.Lock()


class _AllowedGlobals:
    """Handle returned by :func:`allow_globals`; leaving a ``with`` block removes the globals."""

    def __init__(self, entries: List[Tuple[Any, str]]) -> None:
        with _USER_LOCK:
            self.entries = [e for e in dict.fromkeys(entries) if e not in _USER_GLOBALS]
            _USER_GLOBALS.extend(self.entries)
        self._active = True

    def remove(self) -> None:
        """Take the globals added by this call off the allowlist again."""
        if self._active:
            with _USER_LOCK:
                for entry in self.entries:
                    if entry in _USER_GLOBALS:
                        _USER_GLOBALS.remove(entry)
            self._active = False

    def __enter__(self) -> '_AllowedGlobals':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _resolve_dotted(name: str) -> Any:
    """Import ``'pkg.module.Class.attr'`` (longest importable module prefix wins)."""
    parts = name.split('.')
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        return obj
    raise ValueError(f'allow_globals: cannot import {name!r}; pass the object itself or a full '
                     "dotted path such as 'package.module.ClassName'.")


def allow_globals(globals_: Iterable[Union[Any, str, Tuple[Any, str]]]) -> _AllowedGlobals:
    """Trust extra globals for checkpoint loading, for a file whose source you trust.

    Each item is the object itself (registered under ``module.qualname``), a dotted name as printed
    in :class:`UnsafeCheckpointError` (imported here), or an ``(object, 'pickled.name')`` pair. The
    globals apply only to the loads of this module (:func:`load_checkpoint_weights_only` and the
    MMEngine loaders it backs), never to other ``torch.load`` calls; they stay allowed until
    :meth:`remove` or, used as ``with allow_globals([...]):``, the end of the block. Instances of an
    allowed class are trusted as they come out of the file (their attributes are not checked).

    Callables that can run code are refused with ``ValueError``: anything from ``builtins``,
    ``os``, ``subprocess``, ``sys``, ``importlib``, ``pickle``, ``functools``, ``operator``, torch
    internals and similar modules, names such as ``eval``/``exec``/``getattr``/``load``, built-in
    functions and methods, and module objects. Convert such a file to a plain state dict instead.
    """
    if isinstance(globals_, (str, bytes)) or not isinstance(globals_, Iterable):
        raise TypeError('allow_globals expects a list of globals, e.g. '
                        "allow_globals(['mypkg.mymodule.MyClass']), got "
                        f'{type(globals_).__name__}: {globals_!r}')
    entries: List[Tuple[Any, str]] = []
    for item in globals_:
        if isinstance(item, str):
            reason = _unsafe_name_reason(item)
            if reason is None:
                entry = (_resolve_dotted(item), item)
            else:
                entry = (None, item)
        elif isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise TypeError('allow_globals: a tuple item must be (object, "dotted.name"), '
                                f'got {item!r}')
            entry = (item[0], item[1])
        else:
            entry = (item, _qualified(item))
        reason = _unsafe_name_reason(entry[1])
        if reason is None:
            reason = _unsafe_object_reason(entry[0])
            if reason is None and entry[1] != _qualified(entry[0]):
                reason = _unsafe_name_reason(_qualified(entry[0]))
        if reason is not None:
            raise ValueError(
                f'allow_globals: {entry[1]} cannot be allowed: {reason}. Letting a checkpoint call '
                'it means the file can execute arbitrary code when it is loaded. Convert the file '
                'to a plain state dict with a tool you trust instead.')
        entries.append(entry)
    return _AllowedGlobals(entries)


# --------------------------------------------------------------------------- scoped allowlist


def _entry_name(entry: Any) -> str:
    return entry[1] if isinstance(entry, tuple) else _qualified(entry)


_SCOPE_LOCK = threading.Lock()
_scope_state: Dict[str, Any] = dict(depth=0, added=[], shadowed=[])


@contextlib.contextmanager
def _scoped_globals() -> Iterator[List[Tuple[Any, str]]]:
    """Put our rebuilders (and :func:`allow_globals` entries) on torch's allowlist for one load;
    yields the :func:`allow_globals` entries.

    Re-entrant and thread-safe for our own loads: the first one in adds, the last one out removes.
    Entries someone else put on torch's allowlist under one of our names (e.g. the real
    ``HistoryBuffer``) are taken off for that time, so our checks cannot be bypassed, and restored.
    """
    with _SCOPE_LOCK:
        if _scope_state['depth'] == 0:
            with _USER_LOCK:
                ours = list(SAFE_GLOBALS) + list(_BUILD_TARGETS) + list(_USER_GLOBALS)
            names = {name for _, name in ours}
            current = torch.serialization.get_safe_globals()
            shadowed = [g for g in current if _entry_name(g) in names and g not in ours]
            added = [g for g in ours if g not in current]
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(
                [g for g in current if g not in shadowed] + added)
            _scope_state.update(added=added, shadowed=shadowed)
        _scope_state['depth'] += 1
        with _USER_LOCK:
            user_entries = list(_USER_GLOBALS)
    try:
        yield user_entries
    finally:
        with _SCOPE_LOCK:
            _scope_state['depth'] -= 1
            if _scope_state['depth'] == 0:
                added = _scope_state['added']
                current = torch.serialization.get_safe_globals()
                torch.serialization.clear_safe_globals()
                torch.serialization.add_safe_globals(
                    [g for g in current if g not in added] + _scope_state['shadowed'])
                _scope_state.update(added=[], shadowed=[])


# --------------------------------------------------------------------------- checking the result

_MAX_DEPTH = 200
_ATOMS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device,
          torch.layout, torch.memory_format, torch.qscheme)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_STORAGE_TYPES = (torch.storage.TypedStorage, torch.storage.UntypedStorage)


class _Finalizer:
    """Swap stand-ins for what they built and refuse anything that is not plain data."""

    def __init__(self, trusted_types: Sequence[type]) -> None:
        self.trusted = tuple(trusted_types)
        self.memo: Dict[int, Any] = {}
        self.tuples_in_progress: Dict[int, bool] = {}
        self.trail: List[str] = []
        self.keep: List[Any] = []  # keep objects alive so their ids stay unique

    def refuse(self, what: str) -> None:
        where = ''.join(self.trail) or '(top level)'
        raise _Refused(f'{what} at checkpoint{where if where != "(top level)" else ""}.')

    def key(self, key: Any) -> None:
        if type(key) in _ATOMS:
            return
        if type(key) is tuple:
            for item in key:
                self.key(item)
            return
        self.refuse(f'a dict key of type {_describe(key)}')

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        kind = type(obj)
        if kind in _ATOMS:
            return obj
        oid = id(obj)
        if oid in self.memo:
            if oid in self.tuples_in_progress:
                self.tuples_in_progress[oid] = True
            return self.memo[oid]
        if depth > _MAX_DEPTH:
            self.refuse(f'nesting deeper than {_MAX_DEPTH} levels')
        self.keep.append(obj)
        if kind in _STAND_INS:
            built = getattr(obj, _STAND_INS[kind])
            if built is None or (kind is _PickledDtype and not obj.built):
                self.refuse(f'a {_describe(obj)} whose state was never set')
            result = built
        elif isinstance(obj, torch.Tensor):
            if kind not in _TENSOR_TYPES:
                self.refuse(f'a tensor of type {_describe(obj)}')
            attrs = sorted(vars(obj))
            if attrs or obj._backward_hooks:
                self.refuse(f'a tensor with attributes {attrs or ["_backward_hooks"]}')
            result = obj
        elif kind in _STORAGE_TYPES or kind is torch.Size:
            result = obj
        elif kind in (dict, OrderedDict, Counter):
            self.memo[oid] = obj
            attrs = set(vars(obj)) if kind is not dict else set()
            if attrs - ({'_metadata'} if kind is OrderedDict else set()):
                self.refuse(f'a {kind.__name__} with attributes {sorted(attrs)}')
            if attrs:
                self.trail.append('._metadata')
                obj._metadata = self(obj._metadata, depth + 1)
                self.trail.pop()
            for key, value in list(obj.items()):
                self.key(key)
                self.trail.append(f'[{_short(key, 60)}]')
                new = self(value, depth + 1)
                self.trail.pop()
                if new is not value:
                    obj[key] = new
            return obj
        elif kind is list:
            self.memo[oid] = obj
            for i, value in enumerate(obj):
                self.trail.append(f'[{i}]')
                new = self(value, depth + 1)
                self.trail.pop()
                if new is not value:
                    obj[i] = new
            return obj
        elif kind in (set, frozenset):
            for item in obj:
                self.key(item)
            result = obj
        elif kind is tuple:
            self.memo[oid] = obj
            self.tuples_in_progress[oid] = False
            items = []
            for i, value in enumerate(obj):
                self.trail.append(f'[{i}]')
                items.append(self(value, depth + 1))
                self.trail.pop()
            changed = any(a is not b for a, b in zip(items, obj))
            if changed and self.tuples_in_progress[oid]:
                self.refuse('a tuple that contains itself and rebuilt objects')
            del self.tuples_in_progress[oid]
            result = tuple(items) if changed else obj
        elif kind is np.ndarray and obj.dtype.kind in _NUMERIC_KINDS and not obj.dtype.hasobject:
            result = obj  # from torch._utils._rebuild_device_tensor_from_numpy's input, say
        elif isinstance(obj, np.generic) and kind.__module__ == 'numpy' \
                and np.dtype(kind).kind in _NUMERIC_KINDS:
            result = obj
        elif self.trusted and isinstance(obj, self.trusted):
            result = obj  # allowed explicitly by the user with allow_globals
        else:
            self.refuse(f'a {_describe(obj)} (not plain data)')
        self.memo[oid] = result
        return result


def _finalize(obj: Any, trusted_types: Sequence[type]) -> Any:
    return _Finalizer(trusted_types)(obj)


# --------------------------------------------------------------------------- loading

_REFUSED_PATTERNS = (
    re.compile(r'GLOBAL (\S+) was not an allowed global'),
    re.compile(r'unsupported GLOBAL (\S+) whose module'),
    re.compile(r'Refused global (builtins\.getattr\(.*?\))'),
    re.compile(r'unrecognized function (.+?)(?: which belongs to|$)', re.M),
    # BUILD / NEWOBJ on an instance of a class that is not allowlisted
    re.compile(r"but got <class '([^']+)'>"),
)


def _refused_globals(path: str, message: str) -> List[str]:
    """Names of the globals weights-only unpickling refused, read without executing the pickle."""
    found: List[str] = []
    for pattern in _REFUSED_PATTERNS:
        found += [m.group(1).strip() for m in pattern.finditer(message)]
    try:
        found += sorted(n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path)
                        if n not in _SAFE_NAMES)
    except Exception:  # noqa: BLE001 - a best-effort static listing only
        pass
    return list(dict.fromkeys(found))


_CORRUPT_KEYS = ('PytorchStreamReader', 'zip archive', 'central directory', 'file not found',
                 'invalid header', 'truncated', 'invalid load key', 'Unsupported operand', 'EOF',
                 'could not find MARK', 'not enough data', 'unpack requires', 'out of range',
                 'pop from empty list', 'index out of range', 'Invalid magic number',
                 'Invalid protocol version')


def _classify(path: str, exc: BaseException) -> CheckpointLoadError:
    """Our error for an exception raised while torch unpickled ``path``."""
    text = str(exc)
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    if _TAG in text:
        detail = text[text.index(_TAG) + len(_TAG):].strip().splitlines()[0]
        refused = re.findall(r'Refused global (builtins\.getattr\(.*?\))', detail)
        return UnsafeCheckpointError(path, refused, detail)
    if 'legacy .tar format' in text:
        return UnsafeCheckpointError(path, (), 'the legacy (torch < 0.4) .tar format cannot be '
                                     'loaded weights-only')
    if isinstance(exc, pickle.UnpicklingError):
        refused = _refused_globals(path, text)
        if refused:
            return UnsafeCheckpointError(path, refused)
        if any(key in text for key in ('Can only', 'persistent_load', 'Only persistent_load')):
            return UnsafeCheckpointError(path, (), f'torch said: {last}')
    if isinstance(exc, (EOFError, zipfile.BadZipFile)):
        return CorruptCheckpointError(path, f'{type(exc).__name__}: {text or "unexpected end of file"}')
    for key in _CORRUPT_KEYS:
        if key in text:
            return CorruptCheckpointError(path, last)
    return CorruptCheckpointError(path, f'{type(exc).__name__}: {last}')


def load_checkpoint_weights_only(filename: Union[str, os.PathLike],
                                 map_location: Any = None) -> Any:
    """``torch.load(filename, weights_only=True)`` with checked rebuilders and actionable errors.

    Raises:
        FileNotFoundError: the path is not a file.
        UnsafeCheckpointError: the file references a global outside the allowlist, or its data
            fails the checks (attributes on tensors, object dtypes, malformed training state).
        CorruptCheckpointError: the file is truncated or not a torch checkpoint.
    """
    path = osp.expanduser(os.fspath(filename))
    if not osp.isfile(path):
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist or is not a file.")
    if osp.getsize(path) == 0:
        raise CorruptCheckpointError(path, 'the file is empty')
    with open(path, 'rb') as f:
        is_zip = f.read(4) == b'PK\x03\x04'
    if is_zip:
        # torch >= 1.6 format: a truncated file has no end record at its end; say so before
        # torch's internal reader reports it as a miniz or OS error.
        check_checkpoint_file(path)
    with _scoped_globals() as user_entries:
        trusted = [obj for obj, _ in user_entries if isinstance(obj, type)]
        try:
            loaded = torch.load(path, map_location=map_location, weights_only=True)
            return _finalize(loaded, trusted)
        except CheckpointLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes one of our errors
            if 'Attempting to deserialize object on' in str(exc):
                raise  # map_location/device problem of the caller, not of the file
            raise _classify(path, exc) from None


def load_from_local_weights_only(filename: str, map_location: Any = None) -> Any:
    """MMEngine ``CheckpointLoader`` scheme for local paths (registered for prefix ``''``).

    The name matters: MMEngine logs ``Loads checkpoint by <name[10:]> backend``.
    """
    return load_checkpoint_weights_only(filename, map_location)


# --------------------------------------------------------------------------- URLs

_CHUNK = 1 << 20


def _default_model_dir() -> str:
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def download_checkpoint(url: str, model_dir: Optional[str] = None,
                        timeout: Optional[float] = None,
                        max_bytes: Optional[int] = None) -> str:
    """Download ``url`` into ``model_dir`` (torch.hub's ``<hub dir>/checkpoints``) and return the
    local path; a file already there is reused, as torch.hub does.

    The body goes to a temporary file in the same directory that is renamed into place only when
    it is complete (``Content-Length`` reached), so an interrupted download never leaves a file
    under the checkpoint's name. ``timeout`` bounds the connect and every read;
    ``max_bytes`` bounds the size.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ('http', 'https'):
        raise CheckpointDownloadError(url, f'scheme {parsed.scheme!r} is not http or https')
    name = osp.basename(parsed.path)
    if not name or name in ('.', '..'):
        raise CheckpointDownloadError(url, 'the URL path names no file')
    model_dir = model_dir or _default_model_dir()
    os.makedirs(model_dir, exist_ok=True)
    target = osp.join(model_dir, name)
    if osp.isfile(target):
        return target
    # $MMBACKBONES_DOWNLOAD_TIMEOUT (seconds per connect / read) and
    # $MMBACKBONES_MAX_DOWNLOAD_BYTES, read (and checked) when a download starts
    from mmbackbones.fileio import remove_stale_temps, temp_path
    from mmbackbones.weights import download as limits
    timeout = limits.timeout() if timeout is None else timeout
    max_bytes = limits.max_bytes() if max_bytes is None else max_bytes
    remove_stale_temps(target)  # left by a download that was killed
    tmp = temp_path(target)
    try:
        with open(tmp, 'wb') as out:
            request = urllib.request.Request(url, headers={'User-Agent': 'mmbackbones'})
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                length = response.headers.get('Content-Length')
                expected = int(length) if length and length.isdigit() else None
                if expected is not None and expected > max_bytes:
                    raise CheckpointDownloadError(
                        url, f'it is {expected} bytes, more than the limit of {max_bytes} '
                        '(MMBACKBONES_MAX_DOWNLOAD_BYTES)')
                received = 0
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > max_bytes:
                        raise CheckpointDownloadError(
                            url, f'more than {max_bytes} bytes (MMBACKBONES_MAX_DOWNLOAD_BYTES)')
                    out.write(chunk)
            if expected is not None and received != expected:
                raise CheckpointDownloadError(
                    url, f'the server announced {expected} bytes and sent {received}')
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except CheckpointDownloadError:
        _unlink(tmp)
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        _unlink(tmp)
        reason = getattr(exc, 'reason', None) or exc
        if isinstance(exc, urllib.error.HTTPError):
            reason = f'HTTP {exc.code} {exc.reason}'
        raise CheckpointDownloadError(url, f'{type(exc).__name__}: {reason}') from None
    except BaseException:
        _unlink(tmp)
        raise
    return target


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def load_from_http_weights_only(filename: str, map_location: Any = None,
                                model_dir: Optional[str] = None) -> Any:
    """MMEngine scheme for ``http://`` / ``https://``: download, then the weights-only load.

    In a distributed run rank 0 downloads first and the others wait, then read the cached file
    (or, where they do not share its file system, download it themselves). A failed download on
    rank 0 still releases the others, so no rank hangs at the barrier.
    """
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()
    path, error = None, None
    if rank == 0:
        try:
            path = download_checkpoint(filename, model_dir)
        except CheckpointDownloadError as exc:
            error = exc
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = download_checkpoint(filename, model_dir)
    if error is not None:
        raise error
    return load_checkpoint_weights_only(path, map_location)


def _mmengine_checkpoint() -> types.ModuleType:
    # looked up at call time: the URL tables of MMEngine are read when a name is resolved
    from mmengine.runner import checkpoint
    return checkpoint


def _lookup(table: Dict[str, str], name: str, scheme: str) -> str:
    if name not in table:
        close = sorted(k for k in table if name.lower() in k.lower())[:8]
        raise KeyError(f'{scheme}{name}: no such model in MMEngine\'s {scheme} table'
                       + (f'; similar names: {", ".join(close)}' if close else ''))
    return table[name]


def load_from_torchvision_weights_only(filename: str, map_location: Any = None) -> Any:
    """``torchvision://NAME`` / ``modelzoo://NAME``: MMEngine's torchvision URL table, then
    :func:`load_from_http_weights_only`."""
    mm = _mmengine_checkpoint()
    urls = mm.get_torchvision_models()
    if filename.startswith('modelzoo://'):
        name = filename[len('modelzoo://'):]
    else:
        name = filename[len('torchvision://'):]
    if name not in urls and '_Weights.' in name:  # torchvision's own spelling, as MMEngine allows
        cls_name, _, weight = name.partition('.')
        name = f'{cls_name[:-len("_Weights")].lower()}.{weight.lower()}'
    return load_from_http_weights_only(_lookup(urls, name, 'torchvision://'), map_location)


def load_from_openmmlab_weights_only(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: MMEngine's table (with its deprecated
    names and local entries under ``MMENGINE_HOME``), then the weights-only load."""
    mm = _mmengine_checkpoint()
    urls = mm.get_external_models()
    prefix = 'open-mmlab://' if filename.startswith('open-mmlab://') else 'openmmlab://'
    name = filename[len(prefix):]
    deprecated = mm.get_deprecated_model_names()
    if name in deprecated:
        print_log(f'{prefix}{name} is deprecated in favor of {prefix}{deprecated[name]}',
                  logger='current', level=logging.WARNING)
        name = deprecated[name]
    url = _lookup(urls, name, prefix)
    if url.startswith(('http://', 'https://')):
        return load_from_http_weights_only(url, map_location)
    return load_checkpoint_weights_only(osp.join(mm._get_mmengine_home(), url), map_location)


def load_from_mmcls_weights_only(filename: str, map_location: Any = None) -> Any:
    """``mmcls://NAME``: MMEngine's mmcls table, the weights-only load, then MMEngine's own
    backbone-key extraction."""
    mm = _mmengine_checkpoint()
    url = _lookup(mm.get_mmcls_models(), filename[len('mmcls://'):], 'mmcls://')
    return mm._process_mmcls_checkpoint(load_from_http_weights_only(url, map_location))


def load_from_ceph_weights_only(filename: str, map_location: Any = None,
                                backend: str = 'petrel') -> Any:
    """``s3://`` / ``petrel://``: the bytes from the file backend, then the weights-only load."""
    from mmengine.fileio import get_file_backend
    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, osp.basename(filename) or 'checkpoint.pth')
        with open(path, 'wb') as f:
            f.write(data)
        return load_checkpoint_weights_only(path, map_location)


def load_from_pavi_weights_only(filename: str, map_location: Any = None) -> Any:
    """``pavi://``: download with pavi's model cloud, then the weights-only load."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError('Please install pavi to load checkpoint from modelcloud.') from None
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, model.name)
        model.download(path)
        return load_checkpoint_weights_only(path, map_location)


#: MMEngine ``CheckpointLoader`` prefixes -> our loaders (every scheme MMEngine 0.10 registers)
SCHEMES: Tuple[Tuple[Tuple[str, ...], Callable[..., Any]], ...] = (
    (('', ), load_from_local_weights_only),
    (('http://', 'https://'), load_from_http_weights_only),
    (('modelzoo://', 'torchvision://'), load_from_torchvision_weights_only),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab_weights_only),
    (('mmcls://', ), load_from_mmcls_weights_only),
    ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), load_from_ceph_weights_only),
    (('pavi://', ), load_from_pavi_weights_only),
)


# --------------------------------------------------------------------------- validating / finding

_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')
_EOCD = struct.Struct('<4sHHHHIIH')  # end of central directory record (22 bytes)
_ZIP64_LOCATOR = struct.Struct('<4sIQI')  # 20 bytes
_ZIP64_EOCD = struct.Struct('<4sQHHIIQQQQ')  # 56 bytes


def _check_end_record(path: str) -> None:
    """The zip end record must end exactly at EOF and the central directory sit right before it.

    ``zipfile`` searches the last 64 KiB for the end record signature and accepts a record that
    is not at the end of the file, so a checkpoint cut just after a zip stored inside it (a nested
    archive in a tensor or record) passes ``zipfile.ZipFile``; torch writes its end record last.
    """
    size = osp.getsize(path)
    if size < _EOCD.size:
        raise CorruptCheckpointError(path, f'{size} bytes is too short for a zip archive')
    with open(path, 'rb') as f:
        tail_len = min(size, _EOCD.size + 0xFFFF)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        found = None
        pos = tail.rfind(b'PK\x05\x06')
        while pos >= 0:
            fields = _EOCD.unpack_from(tail, pos) if pos + _EOCD.size <= len(tail) else None
            if fields is not None and pos + _EOCD.size + fields[7] == len(tail):
                found = (size - tail_len + pos, fields)
                break
            pos = tail.rfind(b'PK\x05\x06', 0, pos)
        if found is None:
            raise CorruptCheckpointError(path, 'no zip end record ends at the end of the file '
                                         '(the file was cut or has trailing data)')
        eocd_at, fields = found
        cd_size, cd_offset, directory_end = fields[5], fields[6], eocd_at
        locator = b''
        if eocd_at >= _ZIP64_LOCATOR.size:
            f.seek(eocd_at - _ZIP64_LOCATOR.size)
            locator = f.read(_ZIP64_LOCATOR.size)
        if locator[:4] == b'PK\x06\x07':  # torch (miniz) always writes zip64 end records
            _, _, z64_at, _ = _ZIP64_LOCATOR.unpack(locator)
            if z64_at + _ZIP64_EOCD.size > eocd_at - _ZIP64_LOCATOR.size:
                raise CorruptCheckpointError(path, 'the zip64 end locator is invalid')
            f.seek(z64_at)
            z64 = _ZIP64_EOCD.unpack(f.read(_ZIP64_EOCD.size))
            if z64[0] != b'PK\x06\x06' or z64_at + 12 + z64[1] != eocd_at - _ZIP64_LOCATOR.size:
                raise CorruptCheckpointError(path, 'the zip64 end record is invalid')
            cd_size, cd_offset, directory_end = z64[8], z64[9], z64_at
        elif 0xFFFFFFFF in (cd_size, cd_offset) or 0xFFFF in fields[2:5]:
            raise CorruptCheckpointError(path, 'the zip64 end locator is missing')
        if cd_offset + cd_size != directory_end:
            raise CorruptCheckpointError(
                path, f'the central directory ({cd_size} bytes at {cd_offset}) does not end where '
                f'the end record starts ({directory_end}): not one complete archive')


def check_checkpoint_file(path: Union[str, os.PathLike]) -> None:
    """Raise :class:`CorruptCheckpointError` unless ``path`` looks like a complete torch checkpoint.

    Cheap: it reads only the zip end record (at the end of the file, written last, so a truncated
    file fails; it must end exactly at the end of the file, see :func:`_check_end_record`) and the
    central directory, and checks the pickle record is listed. It does not unpickle anything.
    Checkpoints in torch's pre-1.6 non-zip format are reported as invalid; MMEngine never writes
    them.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise CorruptCheckpointError(path, 'no such file')
    try:
        _check_end_record(path)
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except CorruptCheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile also raises NotImplementedError, ...
        raise CorruptCheckpointError(
            path, f'not a complete zip archive: {type(exc).__name__}: {exc}') from None
    if not any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
        raise CorruptCheckpointError(path, 'the archive has no data.pkl record')


def is_valid_checkpoint(path: Union[str, os.PathLike]) -> bool:
    """True when :func:`check_checkpoint_file` accepts ``path``."""
    try:
        check_checkpoint_file(path)
    except CorruptCheckpointError:
        return False
    return True


class _Candidate(NamedTuple):
    path: str
    kind: str
    step: int
    mtime_ns: int


def _candidates(directories: Iterable[str]) -> List[_Candidate]:
    found = {}
    for directory in directories:
        for path in glob.glob(osp.join(glob.escape(directory), '*.pth')):
            match = _CKPT_NAME.match(osp.basename(path))
            if match and osp.isfile(path):
                real = osp.realpath(path)
                found.setdefault(real, _Candidate(path, match.group(1), int(match.group(2)),
                                                  os.stat(path).st_mtime_ns))
    candidates = list(found.values())
    if len({c.kind for c in candidates}) > 1:
        # iter_ and epoch_ numbers are not comparable; fall back to modification time.
        return sorted(candidates, key=lambda c: (c.mtime_ns, c.step), reverse=True)
    return sorted(candidates, key=lambda c: (c.step, c.mtime_ns), reverse=True)


def find_latest_valid_checkpoint(work_dir: Union[str, os.PathLike],
                                 logger: Union[str, logging.Logger, None] = 'current'
                                 ) -> Optional[str]:
    """The checkpoint to auto-resume from, never a half-written one; None if there is none.

    Uses ``<work_dir>/last_checkpoint`` (what MMEngine's ``CheckpointHook`` writes) when it names a
    valid checkpoint. Otherwise (missing, empty or dangling pointer, truncated target) it warns,
    naming the skipped file, and returns the newest valid ``iter_*.pth`` / ``epoch_*.pth`` in the
    work dir (and in the pointer's directory, for hooks with a separate ``out_dir``), newest by
    step number (by modification time if both kinds are present).
    """
    work_dir = os.fspath(work_dir)
    directories = [work_dir]
    pointer_file = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer_file):
        with open(pointer_file, encoding='utf-8', errors='replace') as f:
            pointed = f.read().strip()
        if not pointed:
            print_log(f"Skipping the auto-resume pointer '{pointer_file}': it is empty.",
                      logger=logger, level=logging.WARNING)
        else:
            try:
                check_checkpoint_file(pointed)
                return pointed
            except CorruptCheckpointError as exc:
                print_log(f"Skipping checkpoint '{pointed}' named by '{pointer_file}': "
                          f'{exc.args[0]}', logger=logger, level=logging.WARNING)
            if osp.isdir(osp.dirname(pointed) or '.'):
                directories.append(osp.dirname(pointed) or '.')
    for candidate in _candidates(directories):
        try:
            check_checkpoint_file(candidate.path)
        except CorruptCheckpointError:
            print_log(f"Skipping checkpoint '{candidate.path}': it is truncated or corrupt "
                      '(not a complete zip archive).', logger=logger, level=logging.WARNING)
            continue
        return candidate.path
    return None


# --------------------------------------------------------------------------- atomic writes

ATOMIC_BACKEND_NAME = 'atomic_local'


class AtomicLocalBackend(LocalBackend):
    """MMEngine local file backend whose ``put``/``put_text`` replace the target atomically.

    Select it per hook with ``backend_args=dict(backend='atomic_local')``.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


# --------------------------------------------------------------------------- install at import


def _install() -> None:
    for prefixes, loader in SCHEMES:
        CheckpointLoader.register_scheme(prefixes=list(prefixes), loader=loader, force=True)
    register_backend(ATOMIC_BACKEND_NAME, AtomicLocalBackend, force=True)


_install()
