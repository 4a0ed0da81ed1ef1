# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Fetch named pretrained weights into the cache, for machines that train without internet.

    python tools/fetch_weights.py --list                    # every name: URL, licence, size, ...
    python tools/fetch_weights.py vovnet/V-39-eSE yolov8/s  # download, check, convert, cache
    python tools/fetch_weights.py --all

Each file is downloaded once from its published URL (or ``$MMBACKBONES_WEIGHTS_MIRROR``), its
sha256 checked against what the publisher publishes and recorded, and it is converted for its
backbone, so a later ``init_cfg=dict(type='Pretrained', checkpoint='mmbackbones://NAME')``
reads the cache only. The cache is ``$MMBACKBONES_CACHE`` (default
``~/.cache/mmbackbones/weights``): copy it to the cluster and point ``MMBACKBONES_CACHE`` at it
there, with ``MMBACKBONES_OFFLINE=1`` to make sure nothing tries the network.
"""
import argparse
import importlib.util
import os.path as osp
import sys
from typing import Dict, List, Optional

if importlib.util.find_spec('mmbackbones') is None:  # running from a source checkout
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import yaml  # noqa: E402

from mmbackbones import weights  # noqa: E402
from mmbackbones.weights import cache  # noqa: E402

PUBLISHED = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'docs',
                     'published_results.yaml')


def published_top1(entry: weights.WeightEntry, published: Dict) -> str:
    """The published ImageNet top-1 of these weights (docs/published_results.yaml), or '-'.

    Only numbers from the weights' own publisher count; a number that names a timm tag in
    parentheses belongs to that tag only."""
    if not entry.imagenet:
        return '-'
    arch = entry.backbone.get('arch')
    rows = published.get(entry.backbone_type, {}).get('archs', {}).get(arch, {}).get('imagenet', [])
    timm_name = entry.alias_of or entry.name
    tag = timm_name.split('/', 1)[1] if timm_name.startswith('timm/') else None
    for row in rows:
        if row['source'] != entry.imagenet:
            continue
        value = str(row['value'])
        if '(' in value and (tag is None or f'({tag},' not in value):
            continue
        return f'{value} [{row["source"]}]'
    return '-'


def _size(entry: weights.WeightEntry, record: Optional[dict]) -> str:
    size = record['size'] if record else entry.size
    return f'{size / 2**20:.1f} MiB' if size else 'known after download'


def list_weights(names: List[str]) -> int:
    published = {}
    if osp.isfile(PUBLISHED):
        with open(PUBLISHED) as f:
            published = yaml.safe_load(f)
    records = cache.read_records()
    known = weights.entries()
    print(f'{len(names)} named weights; cache: {cache.cache_dir()}')
    for name in names:
        entry = known[name]
        record = records.get(f'downloads/{entry.file}')
        if record:
            sha = f'{record["sha256"]} (recorded {record["recorded"]})'
        elif entry.expected_sha256():
            sha = f'{entry.expected_sha256()}... (published in the file name)' \
                if entry.hash_in_file_name and not entry.sha256 else entry.expected_sha256()
        else:
            sha = 'recorded at first download'
        shown = ', '.join(f'{k}={v!r}' for k, v in entry.backbone.items() if k != 'type')
        print(f'\n{name}')
        print(f'  backbone:  {entry.backbone_type}({shown})')
        print(f'  licence:   {entry.licence}')
        print(f'  url:       {entry.url}')
        print(f'  published: {entry.published_in}')
        print(f'  file:      {entry.file}, {_size(entry, record)}, sha256 {sha}')
        print(f'  top-1:     {published_top1(entry, published)}')
        if entry.note:
            print(f'  note:      {entry.note}')
        print(f'  config:    {entry.backbone_config()}')
    return 0


def fetch_all(names: List[str], convert: bool) -> int:
    failed = []
    for name in names:
        entry = weights.get(name)
        try:
            path = weights.fetch(name)
            record = cache.record_of(path)
            line = f'{name}: {path} ({record["size"]} bytes, sha256 {record["sha256"]})'
            if convert and entry.backbone_type != 'TimmBackbone':
                _, info = weights.converted_state(name, entry.backbone_type)
                line += f'; converted for {entry.backbone_type}: {info["converted"]}'
            print(line + f'; licence: {entry.licence}', flush=True)
        except (weights.DownloadError, weights.IntegrityError, ValueError, RuntimeError) as err:
            print(f'error: {name}: {err}', file=sys.stderr, flush=True)
            failed.append(name)
    if failed:
        print(f'{len(failed)} of {len(names)} failed: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('names', nargs='*', metavar='NAME',
                        help='named weights, e.g. vovnet/V-39-eSE (see --list)')
    parser.add_argument('--all', action='store_true', help='every named weight')
    parser.add_argument('--list', action='store_true',
                        help='print every named weight (or the NAMEs given) and exit')
    parser.add_argument('--no-convert', action='store_true',
                        help='only download and check; convert on first use instead')
    args = parser.parse_args(argv)
    known = weights.entries()
    names = [n[len(weights.SCHEME):] if n.startswith(weights.SCHEME) else n for n in args.names]
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f'error: unknown weight name(s) {", ".join(unknown)}; choose from '
              f'{", ".join(known)}', file=sys.stderr)
        return 2
    if args.list:
        return list_weights(names or list(known))
    if args.all:
        names = list(known)
    if not names:
        parser.error('give NAME..., --all or --list')
    return fetch_all(names, convert=not args.no_convert)


if __name__ == '__main__':
    sys.exit(main())
