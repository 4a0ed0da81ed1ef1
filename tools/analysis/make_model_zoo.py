"""Generate docs/model_zoo.md: every named arch of every registered mmbackbones backbone.

    python tools/analysis/make_model_zoo.py            # regenerate (FLOPs only where stale)
    python tools/analysis/make_model_zoo.py --check    # docs/model_zoo.md current? (else exit 1)

Measured here: parameters, out_channels / strides (the backbone built with its default
arguments on the ``meta`` device), FLOPs at 224x224 and 640x640 (mmengine's ``FlopAnalyzer`` on
CPU under ``no_grad``: it traces a real forward, which the meta device cannot do; one multiply-add
is one FLOP), and CPU latency against the peer implementation read from
``docs/benchmarks/*.json`` (written by ``tools/analysis/benchmark_backbones.py --json``).
Published: ImageNet top-1 and COCO results with their source, from
``docs/published_results.yaml`` (transcribed from the shared architecture reference).
Pretrained weights: every named weight of ``mmbackbones/weights/registry.yaml``, with its
published file, licence and the one-line ``init_cfg`` that loads it.

FLOPs take minutes for the large archs at 640, so they are kept in ``docs/model_zoo_flops.json``
next to the parameter count they were measured with; an entry whose arch is new or whose
parameter count changed is measured again (``--no-measure`` skips that: such archs read "not
measured yet"). ``--check`` measures nothing: it rebuilds everything else, fails if a FLOPs entry
is stale, and compares the page.
"""
import argparse
import copy
import difflib
import functools
import glob
import importlib.util
import json
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Tuple

import torch
import yaml

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import mmbackbones  # noqa: E402,F401
from mmbackbones.engine.checkpoint import atomic_write_bytes  # noqa: E402
from mmbackbones.models import registered_backbones  # noqa: E402

DOCS = osp.join(REPO, 'docs')
SIZES = (224, 640)


def meta_info(cls: type, arch: str) -> Dict:
    """Parameters, out_channels and out_strides of ``cls(arch=arch)``, built on meta."""
    return copy.deepcopy(_meta_info(cls, arch))


@functools.lru_cache(maxsize=None)  # building 50 archs takes seconds; --check runs it repeatedly
def _meta_info(cls: type, arch: str) -> Dict:
    with torch.device('meta'):
        model = cls(arch=arch)
    return dict(params=sum(p.numel() for p in model.parameters()),
                out_channels=list(model.out_channels), out_strides=list(model.out_strides))


def measure_flops(family: str, arch: str) -> Dict[str, int]:
    spec = importlib.util.spec_from_file_location(
        'mmb_get_flops', osp.join(REPO, 'tools', 'analysis', 'get_flops.py'))
    get_flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_flops)
    return {f'flops_{size}': get_flops.backbone_complexity(family, arch, (3, size, size))['flops']
            for size in SIZES}


def _norm(arch: str) -> str:
    return re.sub(r'[^0-9a-z]', '', arch.lower())


def load_benchmarks(bench_dir: str) -> Dict[Tuple[str, str], List[dict]]:
    """Eval rows at 1x3x320x320 (the every-family sweep's input) of every benchmark JSON file,
    by (backbone class, normalised arch name)."""
    rows: Dict[Tuple[str, str], List[dict]] = {}
    for path in sorted(glob.glob(osp.join(bench_dir, '*.json'))):
        with open(path) as f:
            data = json.load(f)
        for row in data.get('rows', []):
            if row.get('mode') != 'eval' or list(row['input']) != [1, 3, 320, 320]:
                continue
            arch, _, against = row['arch'].partition(':')  # 'xtiny:resnet18': vs mmdet ResNet-18
            peer = (f'mmdet {against}' if against
                    else data.get('peer', 'peer').split(', or ')[0])
            rows.setdefault((row['backbone'], _norm(arch)), []).append(dict(
                row, peer=peer, where=data.get('where', ''), file=osp.relpath(path, REPO)))
    return rows


def _latency(rows: Optional[List[dict]]) -> str:
    if not rows:
        return 'not measured'
    return '; '.join(f'{r["ours_ms"]:.1f} vs {r["peer_ms"]:.1f} ms ({r["ratio"]:.2f}x {r["peer"]}, '
                     f'{"x".join(map(str, r["input"]))}, {r["where"]})' for r in rows)


def _giga(flops: Optional[int]) -> str:
    return 'not measured yet' if flops is None else f'{flops / 1e9:.2f}'


def _published(entries: Optional[List[dict]]) -> str:
    if not entries:
        return '-'
    return '; '.join(f'{e["value"]} [{e["source"]}]' for e in entries)


def _converters(family: str, arch: str, converters: Dict[str, dict]) -> List[str]:
    commands = []
    for script, spec in converters.items():
        names = spec.get('names')
        if (names is not None and arch not in names) or arch not in spec.get('archs', [arch]):
            continue
        source = f'{names[arch]}.pth' if names and not names[arch].endswith('.pt') \
            else (names[arch] if names else 'SRC.pth')
        weights = re.sub(r'[^0-9a-z]+', '-', spec['weights'].split(' (')[0].lower()).strip('-')
        dst = f'checkpoints/{family.lower()}_{_norm(arch)}_{weights}.pth'
        extra = (' ' + spec['extra'].format(arch=arch)) if spec.get('extra') else ''
        commands.append(f'`python {script} {source} {dst}{extra}` ({spec["weights"]})')
    return commands


WEIGHTS_INTRO = [
    '## Pretrained weights',
    '',
    'Every weight below loads with one line in the backbone config, e.g. '
    "`backbone=dict(type='VoVNet', arch='V-39-eSE', init_cfg=dict(type='Pretrained', "
    "checkpoint='mmbackbones://vovnet/V-39-eSE'))`. The publisher's file is downloaded once "
    '(progress bar; an interrupted download is never kept), checked (the sha256 the publisher '
    'publishes, an `init_cfg` `sha256=` pin, and the sha256 recorded at first download: a '
    'cached file that changes is refused), converted and cached in both forms. The same names '
    "work as mmengine checkpoints: `load_from='mmbackbones://...'` or "
    '`tools/test.py CONFIG mmbackbones://...` load the backbone weights into a detector '
    '(`backbone.` keys).',
    '',
    '- Cache: `$MMBACKBONES_CACHE`, default `~/.cache/mmbackbones/weights/` (`downloads/`, '
    '`converted/`, `sha256.json`).',
    '- No internet on the compute nodes: `python tools/fetch_weights.py NAME...` (or `--all`) '
    'where there is, copy the cache, set `MMBACKBONES_OFFLINE=1`; a missing file is then an '
    'error naming its URL and the exact path to put it at.',
    '- `$MMBACKBONES_WEIGHTS_MIRROR`: download `<mirror>/<file>` instead of the published URL '
    '(a proxy, or a served copy of a cache\'s `downloads/`).',
    '- `python tools/fetch_weights.py --list`: every name with URL, publishing file, licence, '
    'size and sha256 once known, and the published ImageNet top-1.',
    '- A file that is not a named weight (local path or URL of an official, timm, torchvision '
    'or ultralytics checkpoint) works in `init_cfg` as it is: its format is recognised from its '
    'keys and converted on load.',
    '',
    '**Licences differ.** The vovnet-detectron2 weights are CC BY-NC 4.0 (non-commercial use '
    'only); the ultralytics weights are AGPL-3.0. Check the licence column before you ship a '
    'model trained from them.',
    '',
]


def _weights_rows(family: str, named: List[str]) -> List[str]:
    """The pretrained-weights table of one backbone family."""
    from mmbackbones import weights
    rows = []
    known = weights.entries()
    entries = [e for e in known.values() if e.backbone_type == family]
    order = {arch: i for i, arch in enumerate(named)}
    entries.sort(key=lambda e: (order.get(e.backbone.get('arch'), len(order)),
                                e.name.startswith('timm/'), e.name))
    for entry in entries:
        extra = ''.join(f'{k}={v!r}, ' for k, v in entry.backbone.items()
                        if k not in ('type', 'arch', 'model_name'))
        arch = entry.backbone.get('arch', entry.backbone.get('model_name', '-'))
        source = entry.published_in.split(' (')[0]
        rows.append(f'| {arch} | `{entry.name}` | [{entry.file}]({entry.url}) ([published]'
                    f'({source}) by {entry.publisher}) | {entry.licence} | '
                    f'`{extra}{entry.init_cfg()}` |')
    if not rows:
        return []
    return ['Pretrained weights:', '', '| arch | name | file | licence | backbone config |',
            '|---|---|---|---|---|'] + rows + ['']


def render(families: Dict[str, type], info: Dict[str, Dict[str, Dict]], published: Dict,
           bench: Dict) -> str:
    lines = [
        '# Model zoo',
        '',
        '<!-- Generated by tools/analysis/make_model_zoo.py; do not edit. Sources: the backbone '
        'registry, docs/published_results.yaml, docs/model_zoo_flops.json, '
        'docs/benchmarks/*.json, mmbackbones/weights/registry.yaml. -->',
        '',
        'Every named arch of every backbone registered by mmbackbones.',
        '',
        '- **Measured here**: params, FLOPs, out_channels / strides and CPU latency. Params, '
        'channels and strides are those of the backbone built with its default arguments (all '
        'stages; the train form for VanillaNet). FLOPs: mmengine `FlopAnalyzer`, batch 1, eval, '
        'one multiply-add = 1 FLOP, activations and elementwise ops not counted. Latency: '
        '`tools/analysis/benchmark_backbones.py --json`, ours vs the peer implementation with '
        'the same weights, eval forward at 1x3x320x320 on 2 CPU threads (median over the '
        'processes merged into the file); "not measured" where no benchmark file has the arch.',
        '- **Published** (not reproduced here): ImageNet top-1 and COCO results, each with its '
        'source, transcribed into docs/published_results.yaml. Detector results belong to the '
        'detector and schedule named, not to our configs.',
        '',
    ] + WEIGHTS_INTRO
    for family, cls in families.items():
        pub = published.get(family, {})
        lines += [f'## {family}', '']
        if not cls.arch_settings:
            lines += [pub.get('note', f'{family} has no named variants.'), '']
            lines += _weights_rows(family, [])
            continue
        lines += ['| arch | params (M) | FLOPs 224 (G) | FLOPs 640 (G) | out_channels | strides '
                  '| ImageNet top-1 (published) | COCO (published) | CPU latency, ours vs peer '
                  '(measured) |',
                  '|---|---|---|---|---|---|---|---|---|']
        archs = pub.get('archs', {})
        for arch in cls.arch_settings:
            row = info[family][arch]
            numbers = archs.get(arch, {})
            lines.append(
                f'| {arch} | {row["params"] / 1e6:.2f} | {_giga(row["flops_224"])} | '
                f'{_giga(row["flops_640"])} | {", ".join(map(str, row["out_channels"]))} | '
                f'{", ".join(map(str, row["out_strides"]))} | '
                f'{_published(numbers.get("imagenet"))} | {_published(numbers.get("coco"))} | '
                f'{_latency(bench.get((family, _norm(arch))))} |')
        lines.append('')
        for key in ('imagenet_note', 'coco_note'):
            if pub.get(key):
                what = 'ImageNet' if key.startswith('imagenet') else 'COCO'
                lines += [f'{what}: {pub[key]}.', '']
        if pub.get('sources'):
            sources = '; '.join(f'[{k}] {v}' for k, v in pub['sources'].items())
            lines += [f'Sources: {sources}.', '']
        converters = pub.get('converters', {})
        if converters:
            lines += ['Converting weights (SRC is the downloaded file):', '',
                      '| arch | command |', '|---|---|']
            for arch in cls.arch_settings:
                commands = _converters(family, arch, converters)
                shown = '<br>'.join(commands) if commands else 'no published weights'
                lines.append(f'| {arch} | {shown} |')
            lines.append('')
        lines += _weights_rows(family, list(cls.arch_settings))
    return '\n'.join(lines)


def _write_json(path: str, data: dict) -> None:
    atomic_write_bytes((json.dumps(data, indent=1, sort_keys=True) + '\n').encode(), path)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='measure nothing; exit 1 if the page or the FLOPs cache is stale')
    parser.add_argument('--out', default=osp.join(DOCS, 'model_zoo.md'))
    parser.add_argument('--published', default=osp.join(DOCS, 'published_results.yaml'))
    parser.add_argument('--flops-cache', default=osp.join(DOCS, 'model_zoo_flops.json'))
    parser.add_argument('--bench-dir', default=osp.join(DOCS, 'benchmarks'))
    parser.add_argument('--refresh-flops', action='store_true', help='measure every FLOPs entry')
    parser.add_argument('--no-measure', action='store_true',
                        help='measure no FLOPs; archs without a cached entry read "not measured '
                        'yet"')
    args = parser.parse_args(argv)

    families = registered_backbones()
    with open(args.published) as f:
        published = yaml.safe_load(f)
    cache = {}
    if osp.isfile(args.flops_cache):
        with open(args.flops_cache) as f:
            cache = json.load(f)
    stale = []
    info: Dict[str, Dict[str, Dict]] = {}
    for family, cls in families.items():
        unknown = sorted(set(published.get(family, {}).get('archs', {})) - set(cls.arch_settings))
        if unknown:
            print(f'error: {args.published}: {family} has no arch {unknown}; valid: '
                  f'{", ".join(cls.arch_settings)}', file=sys.stderr)
            return 1
        info[family] = {}
        for arch in cls.arch_settings:
            row = meta_info(cls, arch)
            key = f'{family}/{arch}'
            cached = cache.get(key)
            frozen = args.check or args.no_measure
            if cached and cached.get('params') != row['params'] and frozen:
                stale.append(key)
                continue
            if not cached and frozen:
                cached = dict(flops_224=None, flops_640=None)
            elif args.refresh_flops or not cached or cached.get('params') != row['params']:
                print(f'measuring FLOPs of {key} at {SIZES}', flush=True)
                cached = cache[key] = dict(params=row['params'], **measure_flops(family, arch))
                _write_json(args.flops_cache, cache)  # keep what took minutes if stopped later
            row.update(flops_224=cached['flops_224'], flops_640=cached['flops_640'])
            info[family][arch] = row
    if stale:
        print(f'error: FLOPs in {args.flops_cache} are stale (parameter count changed) '
              f'for {", ".join(stale)}; run python tools/analysis/make_model_zoo.py',
              file=sys.stderr)
        return 1
    text = render(families, info, published, load_benchmarks(args.bench_dir)) + '\n'
    if args.check:
        current = open(args.out).read() if osp.isfile(args.out) else ''
        if current != text:
            diff = ''.join(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                args.out, 'regenerated', n=0))
            print(f'error: {args.out} is not current; run python tools/analysis/make_model_zoo.py'
                  f'\n{diff[:4000]}', file=sys.stderr)
            return 1
        print(f'{args.out} is current ({sum(map(len, info.values()))} archs).')
        return 0
    keep = {f'{f}/{a}' for f in info for a in info[f]}
    cache = {k: cache[k] for k in sorted(cache) if k in keep}
    _write_json(args.flops_cache, cache)
    atomic_write_bytes(text.encode(), args.out)
    print(f'wrote {args.out} ({sum(map(len, info.values()))} archs)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
