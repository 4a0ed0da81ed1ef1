# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Where downloaded and converted weights live, and the sha256 record that guards them.

Layout of the cache directory (``$MMBACKBONES_CACHE``, default ``~/.cache/mmbackbones/weights``)::

    downloads/<file>                  the publisher's file, under its published name
    converted/<file>.<Backbone>.pth   the same weights converted for an mmbackbones backbone
    sha256.json                       sha256 and size of every file above, recorded when it was
                                      written (or first seen), checked each time it is used

A file whose sha256 no longer matches its record is refused, never silently replaced.
"""
import contextlib
import datetime
import hashlib
import json
import os
import os.path as osp
import re
import threading
from pathlib import Path
from typing import Dict, Iterator, Optional

CACHE_ENV = 'MMBACKBONES_CACHE'
DEFAULT_CACHE = '~/.cache/mmbackbones/weights'
RECORDS = 'sha256.json'


class IntegrityError(RuntimeError):
    """A weights file does not have the sha256 it must have (published, pinned or recorded)."""


def cache_dir() -> Path:
    """The weights cache: ``$MMBACKBONES_CACHE`` or ``~/.cache/mmbackbones/weights``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


_SAFE_PART = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+-]*')


def safe_file_name(name: str, default: str = 'weights') -> str:
    """``name`` reduced to a plain file name (letters, digits, ``._+-``; no leading dot), so a
    name taken from a URL can never be a path (``..%2F..%2Fx.pth``) or a hidden file."""
    name = re.sub(r'[^A-Za-z0-9._+-]', '_', name).lstrip('._-')
    return name or default


def _in_cache(*parts: str) -> Path:
    """``cache_dir()/parts...``, refusing any part that is not a plain file name."""
    root = cache_dir()
    for part in parts:
        if not _SAFE_PART.fullmatch(part) or part in ('.', '..'):
            raise ValueError(f'weights cache: {"/".join(parts)!r} is not a plain relative file '
                             f'name (each part letters, digits and ._+- only); refusing to write '
                             f'outside {root}.')
    return root.joinpath(*parts)


def download_path(file: str) -> Path:
    return _in_cache('downloads', *file.split('/'))


def converted_path(file: str, backbone: str) -> Path:
    *dirs, name = file.split('/')
    return _in_cache('converted', *dirs, f'{name}.{backbone}.pth')


def sha256_of(path: os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


_THREAD_LOCK = threading.RLock()
_depth = 0


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialise cache writes between processes and threads (the ranks of a distributed run
    start together: one downloads, the others wait and then find the file). Re-entrant; the
    inter-process part is a no-op where ``fcntl`` is missing."""
    global _depth
    with _THREAD_LOCK:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        directory = cache_dir()
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle = open(directory / '.lock', 'a')
        except OSError:  # a read-only copy of a filled cache: reading it needs no lock
            handle, fcntl = contextlib.nullcontext(), None
        with handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            _depth = 1
            try:
                yield
            finally:
                _depth = 0
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)


def _relative(path: Path) -> str:
    return osp.relpath(path, cache_dir())


def read_records() -> Dict[str, dict]:
    path = cache_dir() / RECORDS
    if not path.is_file():
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise IntegrityError(f'{path} cannot be read ({err}); it records the sha256 of every '
                             f'cached weights file. Delete it (and the files under '
                             f'{cache_dir()}) to start the cache afresh.') from err
    return data.get('files', {})


def record_of(path: Path) -> Optional[dict]:
    return read_records().get(_relative(path))


def write_record(path: Path, sha256: str, source: str) -> None:
    """Record ``path``'s sha256 and size (call inside :func:`locked`)."""
    from mmbackbones.engine.checkpoint import atomic_write_bytes
    records = read_records()
    records[_relative(path)] = dict(
        sha256=sha256, size=path.stat().st_size, source=source,
        recorded=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
    data = json.dumps(dict(files=records), indent=1, sort_keys=True) + '\n'
    atomic_write_bytes(data.encode(), cache_dir() / RECORDS)


def check_against_record(path: Path) -> Optional[str]:
    """The sha256 of a cached file, after checking it against its record; None if unrecorded.

    Raises:
        IntegrityError: the file changed since it was recorded.
    """
    record = record_of(path)
    if record is None:
        return None
    actual = sha256_of(path)
    if actual != record['sha256']:
        raise IntegrityError(
            f'{path} has changed since it was recorded on {record.get("recorded", "?")}: sha256 '
            f'{actual} instead of {record["sha256"]} (size {path.stat().st_size} bytes, recorded '
            f'{record.get("size")}). It is refused. Delete it to download (or convert) it again.')
    return actual


def matches(sha256: str, expected: str) -> bool:
    """``expected`` is a full sha256 or a prefix of one (at least 8 hex digits)."""
    return sha256.lower().startswith(expected.lower())


__all__ = ['CACHE_ENV', 'IntegrityError', 'cache_dir', 'download_path', 'converted_path',
           'sha256_of', 'locked', 'read_records', 'record_of', 'write_record',
           'check_against_record', 'matches']
