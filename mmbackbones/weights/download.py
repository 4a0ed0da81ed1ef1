# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Downloading one file: to a temporary file next to its destination, checked, then renamed.

An interrupted, short or mismatching download leaves nothing under the destination name: the
bytes go to ``.<name>.<pid>.<random>.part``, the length is compared with ``Content-Length``, the
sha256 with what the caller expects, and only then is the file renamed into place.
"""
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence, Tuple

from mmbackbones.fileio import remove_stale_temps, temp_path

from .cache import IntegrityError, matches

OFFLINE_ENV = 'MMBACKBONES_OFFLINE'
TIMEOUT_ENV = 'MMBACKBONES_DOWNLOAD_TIMEOUT'
MAX_BYTES_ENV = 'MMBACKBONES_MAX_DOWNLOAD_BYTES'
DEFAULT_MAX_BYTES = 16 << 30
DEFAULT_TIMEOUT = 60.0  # seconds without progress before a download is abandoned
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be downloaded (offline, network failure, HTTP error, short read)."""


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, '').strip().lower() not in ('', '0', 'false', 'no')


def timeout() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ValueError(f'{TIMEOUT_ENV}={value!r} must be a positive number of seconds.')
    return seconds


def max_bytes() -> int:
    """The largest file a download may deliver: ``$MMBACKBONES_MAX_DOWNLOAD_BYTES``, 16 GiB."""
    value = os.environ.get(MAX_BYTES_ENV)
    if not value:
        return DEFAULT_MAX_BYTES
    if not value.strip().isdigit() or int(value) <= 0:
        raise ValueError(f'{MAX_BYTES_ENV}={value!r} must be a positive number of bytes.')
    return int(value)


class _Progress:
    """A one-line progress bar on stderr (a line at start and end when stderr is not a tty)."""

    def __init__(self, label: str, total: Optional[int], enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last = 0.0
        if enabled and not self.tty:
            size = f' ({self.total / 2**20:.1f} MiB)' if self.total else ''
            print(f'Downloading {label}{size}', file=sys.stderr, flush=True)

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.tty or now - self.last < 0.2:
            return
        self.last = now
        if self.total:
            width = 30
            filled = int(width * done / self.total)
            bar = '#' * filled + '-' * (width - filled)
            text = f'{done / 2**20:.1f}/{self.total / 2**20:.1f} MiB [{bar}] {done / self.total:.0%}'
        else:
            text = f'{done / 2**20:.1f} MiB'
        print(f'\rDownloading {self.label}: {text}', end='', file=sys.stderr, flush=True)

    def close(self, done: int, ok: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.last = 0.0
            self.update(done)
            print(file=sys.stderr, flush=True)
        if ok and not self.tty:
            print(f'Downloaded {self.label} ({done / 2**20:.1f} MiB)', file=sys.stderr, flush=True)


def download(url: str, dest: Path, expected: Sequence[Tuple[str, str]] = (),
             progress: bool = True) -> Tuple[str, int]:
    """Download ``url`` to ``dest``; return its sha256 and size.

    ``expected``: ``(what, sha256)`` pairs (a full digest or a prefix, e.g. ``('the sha256
    torchvision publishes', 'f707e712')``), each checked before the file is renamed into place.
    Every socket operation has a timeout (``$MMBACKBONES_DOWNLOAD_TIMEOUT``, default 60 s).

    Raises:
        DownloadError: the server could not be reached, answered with an error, or the
            connection ended before ``Content-Length`` bytes arrived.
        IntegrityError: the bytes do not have the expected sha256.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)  # left by a download that was killed
    part = Path(temp_path(dest))
    request = urllib.request.Request(url, headers={'User-Agent': 'mmbackbones'})
    digest, done, ok = hashlib.sha256(), 0, False
    bar: Optional[_Progress] = None
    limit = max_bytes()
    try:
        with urllib.request.urlopen(request, timeout=timeout()) as response:
            length = response.headers.get('Content-Length')
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise DownloadError(f'{url} is {total} bytes, more than the limit of {limit} '
                                    f'({MAX_BYTES_ENV}); nothing was downloaded.')
            bar = _Progress(dest.name, total, progress)
            with open(part, 'wb') as f:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    if done + len(block) > limit:
                        raise DownloadError(f'{url} sent more than {limit} bytes '
                                            f'({MAX_BYTES_ENV}); nothing was kept.')
                    f.write(block)
                    digest.update(block)
                    done += len(block)
                    bar.update(done)
                f.flush()
                os.fsync(f.fileno())
        if total is not None and done != total:
            raise DownloadError(f'the download of {url} ended after {done} of {total} bytes; '
                                f'nothing was kept. Try again.')
        sha256 = digest.hexdigest()
        for what, value in expected:
            if not matches(sha256, value):
                raise IntegrityError(f'{url} has sha256 {sha256}, not {what} ({value}); the '
                                     f'download was not kept.')
        os.replace(part, dest)
        ok = True
        return sha256, done
    except urllib.error.HTTPError as err:
        raise DownloadError(f'{url} answered HTTP {err.code} ({err.reason}).') from err
    except (http.client.IncompleteRead, ConnectionError) as err:
        raise DownloadError(f'the download of {url} was interrupted after {done} bytes ({err}); '
                            f'nothing was kept. Try again.') from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, 'reason', err)
        raise DownloadError(f'{url} could not be downloaded ({reason}).') from err
    finally:
        if bar is not None:
            bar.close(done, ok)
        if not ok:
            try:
                part.unlink()
            except FileNotFoundError:
                pass


__all__ = ['DownloadError', 'OFFLINE_ENV', 'TIMEOUT_ENV', 'MAX_BYTES_ENV', 'offline', 'timeout',
           'max_bytes', 'download']
