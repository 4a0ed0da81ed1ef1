# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Atomic file writing: a reader sees the old file or the complete new one, never a part.

Every file the package writes (converted checkpoints, training checkpoints through
``AtomicLocalBackend``, the demo dataset's annotations, generated docs) goes through
:func:`atomic_write`:

1. the data goes to a temporary file in the target's directory (same filesystem, so the rename is
   atomic), named ``.<target name>.<host>.<pid>.<random>.tmp``: hidden, recognisable, and naming
   the process that owns it;
2. it is flushed and fsynced, then renamed over the target with ``os.replace``;
3. on any exception (``KeyboardInterrupt`` included) the temporary file is removed;
4. a process killed outright (SIGKILL, power loss) cannot clean up, so every write first removes
   the temporary files of the same target left by processes of this host that no longer run.
"""
import os
import os.path as osp
import re
import secrets
import socket
from typing import BinaryIO, Callable, List, Union

PathLike = Union[str, os.PathLike]

_SUFFIX = '.tmp'


def _host() -> str:
    return re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname()) or 'localhost'


def _temp_prefix(path: str) -> str:
    return f'.{osp.basename(path)}.{_host()}.'


def temp_path(path: PathLike) -> str:
    """A fresh temporary file name for ``path``, owned by this process."""
    path = os.fspath(path)
    name = f'{_temp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}{_SUFFIX}'
    return osp.join(osp.dirname(path), name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    try:  # a killed child that nobody has reaped yet is a zombie: it will never write again
        with open(f'/proc/{pid}/stat', encoding='ascii') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True


def remove_stale_temps(path: PathLike) -> List[str]:
    """Remove the temporary files of ``path`` whose writer (same host) no longer runs.

    Returns the removed paths. Temporary files of live processes, of other hosts (a shared
    filesystem) and of other targets are left alone.
    """
    path = os.fspath(path)
    directory = osp.dirname(path) or '.'
    prefix = _temp_prefix(path)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_SUFFIX)):
            continue
        match = re.fullmatch(r'(\d+)\.[0-9a-f]+', name[len(prefix):-len(_SUFFIX)])
        if match is None or _pid_alive(int(match[1])):
            continue
        stale = osp.join(directory, name)
        try:
            os.unlink(stale)
        except FileNotFoundError:  # another writer cleaned it first
            continue
        removed.append(stale)
    return removed


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` with what ``write(f)`` writes into the binary file ``f``.

    The target's directory is created if missing. The file gets mode 0o666 minus the umask, like
    a plain ``open(path, 'wb')``. If ``write`` (or anything before the rename) raises, ``path`` is
    unchanged and no temporary file remains.
    """
    path = os.fspath(path)
    directory = osp.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory or '.')


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable; not possible on every platform or filesystem."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data))


def atomic_save(obj: object, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch
    atomic_write(path, lambda f: torch.save(obj, f))
