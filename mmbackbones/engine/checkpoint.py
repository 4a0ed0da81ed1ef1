# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Safe, crash-tolerant checkpoint loading and saving for MMEngine runs.

Why this module exists
----------------------
Loading. Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``. MMEngine 0.10.7 calls
``torch.load(filename, map_location=...)`` without ``weights_only``, so resuming an MMEngine
training checkpoint (which holds a pickled ``MessageHub`` with ``HistoryBuffer`` objects and numpy
arrays) fails with ``Unsupported global``. The tempting fix, ``weights_only=False``, lets a
checkpoint run arbitrary code when it is opened. Instead, at import this module

* allowlists exactly the globals MMEngine/MMDetection training checkpoints contain
  (:data:`SAFE_GLOBALS`, found by saving real runs and listing what ``weights_only`` refused), with
  ``torch.serialization.add_safe_globals``; and
* replaces MMEngine's loader for local paths (``CheckpointLoader`` scheme ``''``) with
  :func:`load_from_local_weights_only`, which always passes ``weights_only=True`` explicitly, so
  ``Runner.resume``, ``Runner.load_checkpoint``, ``load_from`` and
  ``init_cfg=dict(type='Pretrained')`` all get the same checked loading, whatever default a
  torch version has.

A checkpoint that needs anything else is refused with :class:`UnsafeCheckpointError`, naming the
globals; a trusted file can be opened after :func:`allow_globals`. A truncated or corrupt file
raises :class:`CorruptCheckpointError` naming the path.

Resuming. MMEngine's auto-resume trusts ``<work_dir>/last_checkpoint`` blindly. A run killed while
saving can leave a half-written ``iter_N.pth``; :func:`find_latest_valid_checkpoint` validates the
candidate cheaply (torch checkpoints are zip archives whose central directory is written last, so a
truncated file cannot be opened as a zip) and falls back to the newest valid ``iter_*.pth`` /
``epoch_*.pth``. This check is the hard guarantee.

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

import glob
import importlib
import logging
import os
import os.path as osp
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.serialization
from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend
from mmengine.logging import print_log
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader

__all__ = [
    'SAFE_GLOBALS', 'CheckpointLoadError', 'UnsafeCheckpointError', 'CorruptCheckpointError',
    'allow_globals', 'load_checkpoint_weights_only', 'load_from_local_weights_only',
    'check_checkpoint_file', 'is_valid_checkpoint', 'find_latest_valid_checkpoint',
    'AtomicLocalBackend', 'atomic_write_bytes', 'ATOMIC_BACKEND_NAME',
]

# --------------------------------------------------------------------------- the allowlist

try:  # numpy >= 2 keeps the pickle helpers in numpy._core; numpy 1.x in numpy.core.
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - only on numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore
    from numpy.core.multiarray import scalar as _np_scalar  # type: ignore

_NP_FLOAT64_DTYPE = type(np.dtype(np.float64))  # numpy.dtypes.Float64DType on numpy >= 1.25
_NP_INT64_DTYPE = type(np.dtype(np.int64))  # numpy.dtypes.Int64DType


def _qualified(obj: Any) -> str:
    return f'{obj.__module__}.{obj.__qualname__}'


# The only attributes a training checkpoint reads through ``getattr``: HistoryBuffer pickles its
# ``statistics_methods`` (see its ``__getstate__``), and the four built-in statistics are methods of
# the class, which pickle protocol 2 stores as ``getattr(HistoryBuffer, 'min')``.
_HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'mean', 'current'})


def _history_buffer_getattr(obj: Any, name: str, *default: Any) -> Any:
    """Stand-in for ``builtins.getattr`` inside checked unpickling.

    A general ``getattr`` would let a pickle reach any attribute of any allowlisted object (and so
    any function), which defeats the allowlist. This one answers only the lookups MMEngine's
    ``HistoryBuffer`` pickles and refuses everything else.
    """
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS and not default:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Refused global builtins.getattr({_describe(obj)}, {name!r}): the checkpoint allowlist '
        'only permits getattr(HistoryBuffer, <built-in statistic>).')


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return _qualified(obj)
    return type(obj).__qualname__ + ' object'


#: Every global an MMEngine 0.10 / MMDetection 3.3 training checkpoint needs beyond torch's built-in
#: ``weights_only`` allowlist (tensors, OrderedDict, Counter, ...), as ``(object, pickled name)``.
#: Found empirically by saving real RetinaNet/SGD/LinearLR/MultiStepLR runs and listing what
#: ``torch.serialization.get_unsafe_globals_in_checkpoint`` reported:
#:
#: * ``HistoryBuffer``: ``checkpoint['message_hub']['log_scalars']`` holds one per logged scalar.
#: * ``builtins.getattr`` (guarded, see :func:`_history_buffer_getattr`): HistoryBuffer's pickled
#:   ``statistics_methods`` refer to ``HistoryBuffer.min/max/mean/current`` through getattr.
#: * ``numpy.ndarray``, ``numpy._core.multiarray._reconstruct``, ``numpy.dtype``: the arrays
#:   inside each HistoryBuffer (``_log_history``, ``_count_history``).
#: * ``numpy.dtypes.Float64DType``, ``numpy.dtypes.Int64DType``: the concrete classes of the
#:   float64 (logged values) and int64 (counts) dtypes of those arrays; unpickling a dtype builds
#:   an instance of them, and torch only builds instances of allowlisted classes.
#: * ``numpy._core.multiarray.scalar``: numpy scalars in the message hub (the ``np.float64``
#:   ``runtime_info['eta']`` written by the logger hook).
#: * ``numpy.core.multiarray._reconstruct`` / ``numpy.core.multiarray.scalar``: the same two
#:   functions under the names numpy 1.x writes, so checkpoints saved in a numpy<2 environment (most
#:   of the OpenMMLab ecosystem) still load.
SAFE_GLOBALS: Tuple[Tuple[Any, str], ...] = (
    (HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (_history_buffer_getattr, 'builtins.getattr'),
    (np.ndarray, 'numpy.ndarray'),
    (np.dtype, 'numpy.dtype'),
    (_NP_FLOAT64_DTYPE, _qualified(_NP_FLOAT64_DTYPE)),
    (_NP_INT64_DTYPE, _qualified(_NP_INT64_DTYPE)),
    (_np_reconstruct, 'numpy._core.multiarray._reconstruct'),
    (_np_scalar, 'numpy._core.multiarray.scalar'),
    (_np_reconstruct, 'numpy.core.multiarray._reconstruct'),
    (_np_scalar, 'numpy.core.multiarray.scalar'),
)


# --------------------------------------------------------------------------- errors


class CheckpointLoadError(RuntimeError):
    """Base class of the checkpoint errors raised by :mod:`mmbackbones.engine.checkpoint`."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


class UnsafeCheckpointError(CheckpointLoadError, pickle.UnpicklingError):
    """A checkpoint references a global (function or class) outside the allowlist.

    Attributes:
        path: the checkpoint file.
        globals: the refused global names, as written in the pickle (e.g. ``'posix.system'``).
    """

    def __init__(self, path: str, refused: Sequence[str], detail: str = '') -> None:
        self.globals = tuple(refused)
        names = ', '.join(self.globals) if self.globals else '(unnamed)'
        allowable = [n for n in self.globals if not n.startswith('builtins.getattr')]
        message = (
            f"Refused to load checkpoint '{path}': it references the global(s) {names}, which are "
            'not on the allowlist of types an MMEngine/MMDetection checkpoint needs '
            '(mmbackbones.engine.checkpoint.SAFE_GLOBALS). Unpickling arbitrary globals can '
            'execute arbitrary code when the file is loaded, so checkpoints are opened with '
            'torch.load(weights_only=True). To use this file, convert it to a plain state dict '
            'with a tool you trust (e.g. in an isolated environment: load it, then '
            "torch.save(ckpt['state_dict'], 'clean.pth'))")
        if allowable and len(allowable) == len(self.globals):
            listed = ', '.join(repr(n) for n in allowable)
            message += (', or, only if you trust where it came from, allow exactly these globals '
                        'first: from mmbackbones.engine.checkpoint import allow_globals; '
                        f'allow_globals([{listed}]).')
        else:
            message += ('; a getattr outside the allowlist cannot be allowed, because it would '
                        'reach any attribute of any object.' if len(allowable) < len(self.globals)
                        else '.')
        if detail:
            message += f' (torch said: {detail})'
        super().__init__(message, path)


class CorruptCheckpointError(CheckpointLoadError):
    """A checkpoint file is truncated or otherwise not a readable torch checkpoint."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"Checkpoint '{path}' is truncated or corrupt and cannot be loaded ({reason}). This "
            'usually means the process writing it was killed mid-save or the copy was incomplete. '
            'Delete it and use an earlier checkpoint; with tools/train.py --resume auto, the '
            'newest valid checkpoint in the work dir is picked automatically.', path)


# --------------------------------------------------------------------------- allowlist extension


class _AllowedGlobals:
    """Handle returned by :func:`allow_globals`; leaving a ``with`` block removes the globals."""

    def __init__(self, entries: List[Tuple[Any, str]]) -> None:
        # Only entries torch does not hold yet: removing one later must never take away an entry
        # of SAFE_GLOBALS or one added by someone else.
        present = set(torch.serialization.get_safe_globals())
        self.entries = [e for e in dict.fromkeys(entries) if e not in present]
        # torch's own context manager, entered now so plain calls take effect immediately.
        self._ctx = torch.serialization.safe_globals(self.entries)
        self._ctx.__enter__()
        self._active = True

    def remove(self) -> None:
        """Take the globals added by this call off the allowlist again."""
        if self._active:
            self._ctx.__exit__(None, None, None)
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
    globals stay allowed for the process; used as a context manager (``with allow_globals([...]):``)
    they are removed again at the end of the block.

    ``builtins.getattr`` cannot be allowed: it reaches any attribute of any object, which is the
    same as switching the check off. Convert such a file to a plain state dict instead.
    """
    if isinstance(globals_, (str, bytes)) or not isinstance(globals_, Iterable):
        raise TypeError('allow_globals expects a list of globals, e.g. '
                        "allow_globals(['mypkg.mymodule.MyClass']), got "
                        f'{type(globals_).__name__}: {globals_!r}')
    entries: List[Tuple[Any, str]] = []
    for item in globals_:
        if isinstance(item, str):
            entry = (_resolve_dotted(item), item)
        elif isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise TypeError('allow_globals: a tuple item must be (object, "dotted.name"), '
                                f'got {item!r}')
            entry = (item[0], item[1])
        else:
            entry = (item, _qualified(item))
        if entry[1] in ('builtins.getattr', '__builtin__.getattr'):
            raise ValueError(
                'allow_globals: builtins.getattr cannot be allowed; it gives a checkpoint access '
                'to every attribute of every object (arbitrary code execution). Convert the file '
                'to a plain state dict with a tool you trust instead.')
        entries.append(entry)
    return _AllowedGlobals(entries)


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
        found += sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - a best-effort static listing only
        pass
    return list(dict.fromkeys(found))


def _corrupt_reason(exc: BaseException) -> Optional[str]:
    """A short reason if ``exc`` means the file is damaged, else None."""
    text = str(exc)
    if isinstance(exc, (EOFError, zipfile.BadZipFile)):
        return f'{type(exc).__name__}: {text or "unexpected end of file"}'
    if isinstance(exc, RuntimeError) and any(
            key in text for key in ('PytorchStreamReader', 'zip archive', 'central directory',
                                    'file not found', 'invalid header')):
        return text.splitlines()[0]
    if isinstance(exc, pickle.UnpicklingError) and any(
            key in text for key in ('truncated', 'invalid load key', 'Unsupported operand',
                                    'EOF', 'could not find MARK', 'not enough data')):
        return text.strip().splitlines()[-1]
    return None


def load_checkpoint_weights_only(filename: Union[str, os.PathLike],
                                 map_location: Any = None) -> Any:
    """``torch.load(filename, weights_only=True)`` with the allowlist and actionable errors.

    Raises:
        FileNotFoundError: the path is not a file.
        UnsafeCheckpointError: the file references a global outside the allowlist.
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
        # torch >= 1.6 format: a truncated file has no central directory; say so before torch's
        # internal reader reports it as a miniz or OS error.
        check_checkpoint_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _corrupt_reason(exc)
        refused = _refused_globals(path, str(exc))
        if refused or reason is None:
            detail = str(exc).strip().splitlines()[-1] if not refused else ''
            raise UnsafeCheckpointError(path, refused, detail) from None
        raise CorruptCheckpointError(path, reason) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        reason = _corrupt_reason(exc)
        if reason is None:
            raise
        raise CorruptCheckpointError(path, reason) from exc


def load_from_local_weights_only(filename: str, map_location: Any = None) -> Any:
    """MMEngine ``CheckpointLoader`` scheme for local paths (registered for prefix ``''``).

    The name matters: MMEngine logs ``Loads checkpoint by <name[10:]> backend``.
    """
    return load_checkpoint_weights_only(filename, map_location)


# --------------------------------------------------------------------------- validating / finding

_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def check_checkpoint_file(path: Union[str, os.PathLike]) -> None:
    """Raise :class:`CorruptCheckpointError` unless ``path`` looks like a complete torch checkpoint.

    Cheap: it reads only the zip central directory (at the end of the file, written last, so a
    truncated file fails) and checks the pickle record is listed. It does not unpickle anything.
    Checkpoints in torch's pre-1.6 non-zip format are reported as invalid; MMEngine never writes
    them.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise CorruptCheckpointError(path, 'no such file')
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CorruptCheckpointError(path, f'not a complete zip archive: {exc}') from exc
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


def atomic_write_bytes(data: bytes, path: Union[str, os.PathLike]) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the complete new one.

    The bytes go to a hidden temporary file in the same directory (same filesystem, so the rename
    is atomic), are fsynced, and the file is renamed over ``path`` with ``os.replace``. The
    temporary file is created with mode 0o666 minus the umask, like a plain ``open(path, 'wb')``.
    """
    from mmbackbones.fileio import atomic_write_bytes as write  # the package's one writer
    write(data, path)


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
    torch.serialization.add_safe_globals(list(SAFE_GLOBALS))
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)
    register_backend(ATOMIC_BACKEND_NAME, AtomicLocalBackend, force=True)


_install()
