# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The named pretrained weights (``mmbackbones://<name>``), read from ``registry.yaml``.

``registry.yaml`` is data: per publisher (``sources``) where the URLs are published, the licence
and the checkpoint format; per weight (``weights``) the backbone config it fills, the URL exactly
as published and, once known, its sha256 and size. This module reads and checks it, and offers
:func:`override` for tests and private registries.
"""
import contextlib
import os
import re
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import yaml

from .cache import safe_file_name

SCHEME = 'mmbackbones://'
MIRROR_ENV = 'MMBACKBONES_WEIGHTS_MIRROR'
REGISTRY_FILE = Path(__file__).with_name('registry.yaml')

_SOURCE_KEYS = {'publisher', 'published_in', 'licence', 'format', 'imagenet',
                'hash_in_file_name', 'note', 'backbones'}
_WEIGHT_KEYS = {'source', 'backbone', 'url', 'file', 'sha256', 'size', 'published_in', 'note',
                'alias_of', 'licence', 'imagenet'}


@dataclass(frozen=True)
class WeightEntry:
    """One named weight.

    Attributes:
        name: ``family/arch`` (official releases) or ``timm/<model>.<tag>``.
        backbone: the backbone config the weights fill (``type``, ``arch`` and any argument
            they need, e.g. ``ese_layout='last'`` for timm's VoVNets).
        url: the URL exactly as the publisher publishes it.
        file: the name of the file in the cache and on a mirror (the URL's file name unless that
            is ambiguous, as every timm ``model.safetensors`` is).
        source: key of the publisher in ``registry.yaml`` ``sources``.
        published_in: the file (README or code) that publishes the URL.
        licence: the weights' licence as the publisher states it.
        format: the :mod:`mmbackbones.converters.formats` format of the file.
        backbones: backbone types the weights can initialise (the first is ``backbone['type']``;
            timm weights also load into ``TimmBackbone`` without conversion).
        sha256: the file's sha256 when known (full digest or a published prefix).
        size: its size in bytes when known.
        imagenet: the ``docs/published_results.yaml`` source id of its ImageNet top-1, if any.
    """
    name: str
    backbone: Dict[str, Any]
    url: str
    file: str
    source: str
    publisher: str
    published_in: str
    licence: str
    format: str
    backbones: tuple = ()
    sha256: Optional[str] = None
    size: Optional[int] = None
    imagenet: Optional[str] = None
    note: str = ''
    alias_of: Optional[str] = None
    hash_in_file_name: bool = False

    @property
    def backbone_type(self) -> str:
        return self.backbone['type']

    @property
    def uri(self) -> str:
        return SCHEME + self.name

    @property
    def backbone_kwargs(self) -> Dict[str, Any]:
        """The backbone arguments the weights need, other than ``type``."""
        return {k: v for k, v in self.backbone.items() if k != 'type'}

    def expected_sha256(self) -> Optional[str]:
        """What the publisher says the sha256 is: the registry's value, or the hash prefix in
        the file name for publishers that put one there (torchvision: ``<name>-<sha256[:n]>``)."""
        if self.sha256:
            return self.sha256
        if self.hash_in_file_name:
            match = re.search(r'-([0-9a-f]{6,64})\.[A-Za-z]+$', self.file)
            if match:
                return match.group(1)
        return None

    def download_url(self) -> str:
        """Where the file is fetched from: ``$MMBACKBONES_WEIGHTS_MIRROR/<file>`` when a mirror
        is set, else the published URL (a ``www.dropbox.com`` share link gets ``dl=1``, Dropbox's
        parameter for the file itself instead of its preview page)."""
        mirror = os.environ.get(MIRROR_ENV, '').strip()
        if mirror:
            return mirror.rstrip('/') + '/' + urllib.parse.quote(self.file)
        parts = urllib.parse.urlsplit(self.url)
        if parts.netloc == 'www.dropbox.com' and 'dl=' not in parts.query:
            query = '&'.join(filter(None, [parts.query, 'dl=1']))
            return urllib.parse.urlunsplit(parts._replace(query=query))
        return self.url

    def init_cfg(self) -> str:
        """The one-line ``init_cfg`` that loads these weights."""
        return f"init_cfg=dict(type='Pretrained', checkpoint='{self.uri}')"

    def backbone_config(self) -> str:
        """The one-line backbone config these weights fill, ``init_cfg`` included."""
        fields = ''.join(f'{k}={v!r}, ' for k, v in self.backbone.items())
        return f'backbone=dict({fields}{self.init_cfg()})'


class _Registry:
    def __init__(self) -> None:
        self._entries: Optional[Dict[str, WeightEntry]] = None

    def entries(self) -> Dict[str, WeightEntry]:
        if self._entries is None:
            self._entries = parse_registry(REGISTRY_FILE)
        return self._entries


_REGISTRY = _Registry()


def _file_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit('/', 1)[-1])


def _load_yaml(path: os.PathLike) -> Mapping:
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, Mapping) or set(data) != {'sources', 'weights'}:
        raise ValueError(f'{path}: expected the two sections sources and weights.')
    for key, source in data['sources'].items():
        unknown = set(source) - _SOURCE_KEYS
        missing = {'publisher', 'published_in', 'licence', 'format'} - set(source)
        if unknown or missing:
            raise ValueError(f'{path}: source {key!r} has unknown keys {sorted(unknown)} / lacks '
                             f'{sorted(missing)}; valid keys: {sorted(_SOURCE_KEYS)}.')
    return data


def make_entry(name: str, spec: Mapping[str, Any],
               sources: Optional[Mapping[str, Mapping]] = None) -> WeightEntry:
    """A :class:`WeightEntry` from a ``weights:`` item of the registry (``source``,
    ``backbone``, ``url``, optional ``file``, ``sha256``, ...); the publisher's fields come from
    ``sources`` (default: the shipped registry's)."""
    where = 'registry'
    if sources is None:
        sources = _load_yaml(REGISTRY_FILE)['sources']
    unknown = set(spec) - _WEIGHT_KEYS
    if unknown:
        raise ValueError(f'{where}: weight {name!r} has unknown keys {sorted(unknown)}; valid '
                         f'keys: {sorted(_WEIGHT_KEYS)}.')
    if spec.get('source') not in sources:
        raise ValueError(f'{where}: weight {name!r} has source {spec.get("source")!r}; choose '
                         f'one of {", ".join(sources)}.')
    for key in ('backbone', 'url'):
        if not spec.get(key):
            raise ValueError(f'{where}: weight {name!r} has no {key}.')
    source = sources[spec['source']]
    file = spec.get('file') or _file_of(spec['url'])
    if safe_file_name(file) != file:
        raise ValueError(f'{where}: weight {name!r} has file {file!r}; a cache file name has '
                         f'letters, digits and ._+- only.')
    backbone = dict(spec['backbone'])
    backbones = tuple(dict.fromkeys([backbone['type'], *source.get('backbones', [])]))
    return WeightEntry(
        name=name, backbone=backbone, url=spec['url'],
        file=file, source=spec['source'],
        publisher=source['publisher'], published_in=spec.get('published_in', source['published_in']),
        licence=spec.get('licence', source['licence']), format=source['format'],
        backbones=backbones, sha256=spec.get('sha256'), size=spec.get('size'),
        imagenet=spec.get('imagenet', source.get('imagenet')),
        note=spec.get('note', source.get('note', '')), alias_of=spec.get('alias_of'),
        hash_in_file_name=bool(source.get('hash_in_file_name')))


def parse_registry(path: os.PathLike) -> Dict[str, WeightEntry]:
    """Read and check a registry file; every problem is an error naming the entry and key."""
    data = _load_yaml(path)
    entries = {name: make_entry(name, spec, data['sources'])
               for name, spec in data['weights'].items()}
    files: Dict[str, str] = {}
    for entry in entries.values():
        other = files.setdefault(entry.file, entry.name)
        if other != entry.name and entry.url != entries[other].url:
            raise ValueError(f'{path}: weights {other!r} and {entry.name!r} both use the file name '
                             f'{entry.file!r} for different URLs; give one a distinct file:.')
    return entries


def entries() -> Dict[str, WeightEntry]:
    """Every named weight, by name."""
    return dict(_REGISTRY.entries())


def names_for(backbone: str) -> List[str]:
    return [name for name, entry in _REGISTRY.entries().items() if backbone in entry.backbones]


def is_named(checkpoint: object) -> bool:
    return isinstance(checkpoint, str) and checkpoint.startswith(SCHEME)


def get(name: str) -> WeightEntry:
    """The entry for ``name`` (with or without the ``mmbackbones://`` scheme)."""
    if name.startswith(SCHEME):
        name = name[len(SCHEME):]
    known = _REGISTRY.entries()
    if name not in known:
        family = name.split('/', 1)[0]
        same = [n for n in known if n.split('/', 1)[0] == family]
        choices = same or sorted({n.split('/', 1)[0] + '/...' for n in known})
        raise ValueError(f'{SCHEME}{name} is not a named weight; choose one of '
                       f'{", ".join(choices)} (python tools/fetch_weights.py --list shows all).')
    return known[name]


@contextlib.contextmanager
def override(new_entries: Optional[Mapping[str, Any]] = None, **changes: Any
             ) -> Iterator[Dict[str, WeightEntry]]:
    """Use other registry entries inside a ``with`` block (tests, private registries).

    ``new_entries`` maps names to :class:`WeightEntry` objects or to registry-style dicts
    (``source``, ``backbone``, ``url``, ...), added to (or replacing) the shipped ones;
    ``changes`` maps a name to fields to change in an existing entry, e.g.
    ``override(**{'vovnet/V-39-eSE': dict(sha256=...)})``.
    """
    saved = _REGISTRY._entries
    current = dict(_REGISTRY.entries())
    for name, entry in (new_entries or {}).items():
        current[name] = entry if isinstance(entry, WeightEntry) else make_entry(name, entry)
    for name, fields in changes.items():
        current[name] = replace(get(name), **fields)
    _REGISTRY._entries = current
    try:
        yield current
    finally:
        _REGISTRY._entries = saved


__all__ = ['SCHEME', 'MIRROR_ENV', 'WeightEntry', 'make_entry', 'parse_registry', 'entries', 'names_for',
           'is_named', 'get', 'override']
