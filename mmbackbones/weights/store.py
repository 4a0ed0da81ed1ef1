# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Named weights and URLs, from the publisher to a backbone's state dict.

``mmbackbones://<name>`` resolves through the registry to the published URL. The file is
downloaded once into the cache (:mod:`.download`: temporary file, length and sha256 checked,
then renamed), checked against what the publisher publishes, an ``init_cfg`` ``sha256=`` pin,
and the sha256 recorded at first download; converted by the format's converter; and the
converted weights are cached too, so a second load reads one local file.
"""
import hashlib
import inspect
import logging
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log

from . import cache, registry
from .cache import (IntegrityError, check_against_record, download_path, locked, matches,
                    safe_file_name)
from .download import DownloadError, OFFLINE_ENV, download, offline
from .files import read_weights_file
from .registry import WeightEntry

StateDict = Dict[str, torch.Tensor]


class WeightsNotAvailable(DownloadError):
    """A weights file is not in the cache and cannot be downloaded (offline or no network)."""


def _how_to_provide(what: str, url: str, path: Path, name: Optional[str]) -> str:
    fetch = (f'run `python tools/fetch_weights.py {name}` on a machine with internet access and '
             f'copy its cache ({cache.cache_dir()}, or set ${cache.CACHE_ENV}), or ')
    return (f'To use {what} here, {fetch if name else ""}download {url} yourself and put the '
            f'file at {path}')


def ensure_file(path: Path, url: str, expected: Sequence[Tuple[str, str]] = (),
                name: Optional[str] = None, progress: bool = True) -> str:
    """Make sure ``path`` holds the verified file published at ``url``; return its sha256.

    A cached file is checked against the sha256 recorded when it was first written; a file put
    there by hand is checked against ``expected`` and then recorded. A missing file is
    downloaded unless ``$MMBACKBONES_OFFLINE`` is set.
    """
    what = registry.SCHEME + name if name else url
    with locked():
        if path.is_file():
            sha256 = check_against_record(path)
            if sha256 is None:  # placed by hand (an offline machine): verify, then record
                sha256 = cache.sha256_of(path)
                for label, value in expected:
                    if not matches(sha256, value):
                        raise IntegrityError(f'{path} has sha256 {sha256}, not {label} ({value}); '
                                             f'it is refused. Delete it and put the file from '
                                             f'{url} there.')
                cache.write_record(path, sha256, url)
                print_log(f'{what}: recorded sha256 {sha256} of {path}', logger='current')
        else:
            if offline():
                raise WeightsNotAvailable(
                    f'{what}: {path.name} is not in the weights cache and downloads are off '
                    f'({OFFLINE_ENV}=1). ' + _how_to_provide(what, url, path, name) + '.')
            download_url = registry.get(name).download_url() if name else url
            try:
                sha256, _ = download(download_url, path, expected, progress=progress)
            except DownloadError as err:
                raise WeightsNotAvailable(f'{what}: {err} ' + _how_to_provide(what, url, path, name)
                                          + '.') from err
            cache.write_record(path, sha256, download_url)
    for label, value in expected:
        if not matches(sha256, value):
            raise IntegrityError(f'{path} ({url}) has sha256 {sha256}, not {label} ({value}); '
                                 f'it is refused.')
    return sha256


def check_pin(pin: Any) -> None:
    """A ``sha256=`` pin is a hex digest or a prefix of at least 8 hex digits."""
    if not isinstance(pin, str) or not 8 <= len(pin) <= 64 or any(
            c not in '0123456789abcdefABCDEF' for c in pin):
        raise ValueError(f'sha256={pin!r} must be a sha256 hex digest or a prefix of at least '
                         f'8 hex digits.')


def _expected(entry: Optional[WeightEntry], pin: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    checks = []
    if pin:
        check_pin(pin)
        checks.append(('the sha256 pinned in init_cfg', pin))
    published = entry.expected_sha256() if entry is not None else None
    if published:
        checks.append((f'the sha256 {entry.publisher} publishes', published))
    return tuple(checks)


def fetch(name: str, sha256: Optional[str] = None, progress: bool = True) -> Path:
    """Download (once) and verify the publisher's file of a named weight; return its path."""
    entry = registry.get(name)
    path = download_path(entry.file)
    ensure_file(path, entry.url, _expected(entry, sha256), name=entry.name, progress=progress)
    return path


def fetch_url(url: str, sha256: Optional[str] = None, progress: bool = True) -> Path:
    """Download (once) a weights file given by URL into the cache; return its path."""
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    base = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit('/', 1)[-1])
    path = download_path(f'urls/{key}/{safe_file_name(base)}')
    ensure_file(path, url, _expected(None, sha256), progress=progress)
    return path


def _converter_id(convert: Any) -> str:
    """Changes whenever the converter's module changes, so stale converted caches are redone."""
    module = sys.modules[convert.__module__]
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:16]


def convert_file(path: Path, fmt_name: str, what: str) -> StateDict:
    """Read a weights file and convert it with the named format's converter."""
    from mmbackbones.converters.core import to_tensors
    from mmbackbones.converters.formats import get_format
    from mmbackbones.models.pretrained import sample_keys
    fmt = get_format(fmt_name)
    state = to_tensors(fmt.select(read_weights_file(path)))
    if not fmt.recognises(state):
        raise IntegrityError(f'{what}: {path} is not a {fmt.description} checkpoint, which the '
                             f'registry says it is; its keys look like {sample_keys(state)}. '
                             f'Delete it to download it again.')
    return fmt.convert(state).check(fmt.description).state_dict


def converted_state(name: str, backbone: str, sha256: Optional[str] = None,
                    progress: bool = True) -> Tuple[StateDict, Dict[str, Any]]:
    """The weights of ``name`` for a ``backbone`` type, from the cache or freshly converted.

    Returns:
        (state dict with the backbone's keys, info dict: name, format, file, converted,
        source_sha256, cached).
    """
    from mmbackbones.fileio import atomic_save
    from mmbackbones.converters.formats import get_format
    from mmbackbones.engine.checkpoint import load_checkpoint_weights_only
    entry = registry.get(name)
    if backbone not in entry.backbones:
        raise ValueError(_wrong_family(entry, backbone))
    raw = download_path(entry.file)
    expected = _expected(entry, sha256)
    info: Dict[str, Any] = dict(name=entry.name, format=entry.format, file=str(raw),
                                converted=None, cached=False)
    fmt = get_format(entry.format) if entry.format else None
    if fmt is None or backbone != fmt.backbone:  # timm weights into TimmBackbone: timm's keys
        info['source_sha256'] = ensure_file(raw, entry.url, expected, entry.name, progress)
        content = read_weights_file(raw)
        return dict(fmt.select(content) if fmt else content), info
    target = cache.converted_path(entry.file, backbone)
    info['converted'] = str(target)
    converter = _converter_id(fmt.convert)
    with locked():
        source_sha = None
        if raw.is_file() or not target.is_file():
            source_sha = ensure_file(raw, entry.url, expected, entry.name, progress)
        if target.is_file() and check_against_record(target) is not None:
            ckpt = load_checkpoint_weights_only(target, map_location='cpu')
            meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
            if source_sha is None:  # the download was deleted; the conversion remembers it
                source_sha = meta.get('source_sha256')
                for label, value in expected:
                    if not source_sha or not matches(source_sha, value):
                        raise IntegrityError(f'{target} was converted from a file with sha256 '
                                             f'{source_sha}, not {label} ({value}); refused.')
            if meta.get('source_sha256') == source_sha and meta.get('converter') == converter:
                info.update(source_sha256=source_sha, cached=True)
                return ckpt['state_dict'], info
        if source_sha is None or not raw.is_file():  # stale conversion of a deleted download
            source_sha = ensure_file(raw, entry.url, expected, entry.name, progress)
        state = convert_file(raw, entry.format, registry.SCHEME + entry.name)
        meta = dict(name=entry.name, url=entry.url, format=entry.format, source_sha256=source_sha,
                    converter=converter, backbone=dict(entry.backbone))
        atomic_save(dict(state_dict=state, meta=meta), str(target))
        cache.write_record(target, cache.sha256_of(target), f'{entry.format} conversion of {raw}')
        print_log(f'{registry.SCHEME}{entry.name}: converted {raw.name} ({fmt.description}) for '
                  f'{backbone}, cached at {target}', logger='current', level=logging.INFO)
    info['source_sha256'] = source_sha
    return state, info


def _wrong_family(entry: WeightEntry, backbone: str) -> str:
    others = registry.names_for(backbone)
    choices = f'; weights for {backbone}: {", ".join(others)}' if others else \
        f'; there are no named weights for {backbone}'
    return (f'{entry.uri} holds {" / ".join(entry.backbones)} weights ({entry.publisher}); it '
            f'cannot initialise a {backbone}. Use it with backbone type={entry.backbone_type!r}'
            f'{choices}.')


def check_backbone(entry: WeightEntry, model: torch.nn.Module) -> None:
    """Refuse a named weight whose family, arch or required arguments the model does not have."""
    cls = type(model)
    name = cls.__name__
    if name not in entry.backbones:
        raise ValueError(_wrong_family(entry, name))
    problems = []
    if name == 'TimmBackbone':
        wanted = entry.backbone.get('model_name') or entry.name.split('/', 1)[-1]
        built = getattr(model, 'model_name', '')
        if built.split('.')[0] != wanted.split('.')[0]:
            problems.append(f'model_name={wanted.split(".")[0]!r} (this one is {built!r})')
    else:
        kwargs = entry.backbone_kwargs
        arch = kwargs.pop('arch', None)
        if isinstance(arch, str) and arch in getattr(cls, 'arch_settings', {}) and \
                isinstance(getattr(model, 'arch', None), dict):
            expected = cls.resolve_arch(arch)
            overrides = {k: kwargs[k] for k in list(kwargs) if k in expected}
            expected = cls.check_arch(dict(expected, **overrides))
            if expected != model.arch:
                built = [n for n in cls.arch_settings if cls.resolve_arch(n) == model.arch]
                problems.append(f'arch={arch!r}' + (f' (this one is {built[0]!r})' if built
                                                    else ' (this one has a custom arch)'))
            for key in overrides:
                kwargs.pop(key)
        for key, value in kwargs.items():
            if hasattr(model, key) and getattr(model, key) != value:
                problems.append(f'{key}={value!r} (this one has {getattr(model, key)!r})')
    if problems:
        shown = ', '.join(f'{k}={v!r}' for k, v in entry.backbone.items())
        raise ValueError(f'{name}: {entry.uri} holds weights for backbone=dict({shown}); this '
                         f'{name} needs {"; ".join(problems)}. Change the backbone config, or '
                         f'pick another weight: {", ".join(registry.names_for(name))}.')


def load_named(checkpoint: str, model: torch.nn.Module, sha256: Optional[str] = None
               ) -> Tuple[StateDict, Dict[str, Any]]:
    """The converted weights of ``mmbackbones://<name>`` for ``model`` (checked to fit it)."""
    entry = registry.get(checkpoint)
    check_backbone(entry, model)
    return converted_state(entry.name, type(model).__name__, sha256)


def load_from_mmbackbones(filename: str, map_location: Any = None) -> Dict[str, Any]:
    """mmengine ``CheckpointLoader`` scheme ``mmbackbones://``: a detector-style checkpoint
    whose ``backbone.`` keys hold the converted weights (for ``load_from`` and
    ``tools/test.py``). The name matters: mmengine logs ``Loads checkpoint by <name[10:]>``."""
    entry = registry.get(filename)
    if entry.backbone_type == 'TimmBackbone':
        raise ValueError(f'{entry.uri} holds timm weights for TimmBackbone, whose keys depend on '
                         f'the model built; load them through the backbone instead: '
                         f'{entry.init_cfg()}.')
    state, info = converted_state(entry.name, entry.backbone_type)
    if map_location not in (None, 'cpu'):
        state = {k: v.to(map_location) for k, v in state.items()}
    return dict(state_dict={f'backbone.{k}': v for k, v in state.items()},
                meta=dict(mmbackbones_weights=entry.name, backbone=dict(entry.backbone),
                          source_sha256=info['source_sha256']))


def register_mmengine_scheme() -> None:
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes=registry.SCHEME, loader=load_from_mmbackbones,
                                     force=True)


__all__ = ['WeightsNotAvailable', 'ensure_file', 'fetch', 'fetch_url', 'convert_file',
           'converted_state', 'check_backbone', 'load_named', 'load_from_mmbackbones',
           'register_mmengine_scheme']
