"""Markdown tables from the JSON files ``benchmark_backbones.py --json`` writes.

    python tools/analysis/benchmark_tables.py docs/benchmarks/yolov8.json docs/benchmarks/presnet.json
    python tools/analysis/benchmark_tables.py --merge docs/benchmarks/yolov8.json run1.json run2.json

One table per file: for every arch and input, ours / peer milliseconds and the ratio (median of
the per-round ratios) with its 90% bootstrap interval, for eval and for the train step. A ratio
whose interval lies entirely below 1.0 is faster than the peer in that run; one whose interval
contains 1.0 is not told apart from it.

On a shared machine one process can sit a few percent off another for the same work (memory
placement, neighbours' load), more than a run's interval shows. ``--merge OUT IN...`` combines
runs of the same benchmark made in separate processes: each row's ratio becomes the median of
the runs' ratios, its interval the lowest and highest run ratio (``runs`` lists them), and the
milliseconds the medians. The table then reads "ratio (min-max over runs)".
"""
import argparse
import json
import math
import statistics
from typing import Dict, List, Optional, Tuple


def _ratio_cell(row: Optional[dict]) -> str:
    if row is None:
        return '-'
    low, high = row.get('ratio_low', math.nan), row.get('ratio_high', math.nan)
    if math.isnan(low) or math.isnan(high):
        return f'{row["ratio"]:.3f}'
    return f'{row["ratio"]:.3f} ({low:.3f}-{high:.3f})'


def _ms_cell(row: Optional[dict]) -> str:
    return '-' if row is None else f'{row["ours_ms"]:.1f} / {row["peer_ms"]:.1f}'


def _row_key(row: dict) -> Tuple[str, Tuple[int, ...], str]:
    return row['arch'], tuple(row['input']), row['mode']


def merge(runs: List[dict]) -> dict:
    """One benchmark document from runs of the same benchmark in separate processes."""
    first = runs[0]
    for other in runs[1:]:
        for field in ('family', 'peer', 'where', 'amp', 'layout'):
            if other[field] != first[field]:
                raise ValueError(f'cannot merge runs with different {field}: '
                                 f'{first[field]!r} vs {other[field]!r}')
    by_key: Dict[tuple, List[dict]] = {}
    for run in runs:
        for row in run['rows']:
            by_key.setdefault(_row_key(row), []).append(row)
    rows = []
    for row in first['rows']:
        group = by_key[_row_key(row)]
        if len(group) != len(runs):
            raise ValueError(f'row {_row_key(row)} is missing from some runs')
        ratios = [r['ratio'] for r in group]
        rows.append(dict(row, ours_ms=statistics.median(r['ours_ms'] for r in group),
                         peer_ms=statistics.median(r['peer_ms'] for r in group),
                         ratio=statistics.median(ratios), ratio_low=min(ratios),
                         ratio_high=max(ratios), runs=ratios))
    return dict(first, rounds=[run['rounds'] for run in runs], processes=len(runs), rows=rows)


def table(data: dict) -> str:
    """The markdown table (with its one-line heading) of one benchmark JSON document."""
    cases: Dict[Tuple[str, str], Dict[str, dict]] = {}
    for row in data['rows']:
        key = (row['arch'], 'x'.join(map(str, row['input'])))
        cases.setdefault(key, {})[row['mode']] = row
    if data.get('processes'):
        runs = (f'{data["processes"]} processes of '
                f'{"/".join(map(str, data["rounds"]))} rounds')
        spread = 'min-max over processes'
    else:
        runs, spread = f'{data["rounds"]} rounds', '90% interval'
    lines = [f'**{data["family"]}** (peer: {data["peer"]}; {data["where"]}, {data["amp"]}, '
             f'{runs}, ours with its {data["layout"]} layout)', '',
             f'| arch | input | eval ours / peer ms | eval ratio ({spread}) | '
             f'train ours / peer ms | train ratio ({spread}) |',
             '|---|---|---|---|---|---|']
    for (arch, shape), modes in cases.items():
        ev, tr = modes.get('eval'), modes.get('train')
        lines.append(f'| {arch} | {shape} | {_ms_cell(ev)} | {_ratio_cell(ev)} | {_ms_cell(tr)} | '
                     f'{_ratio_cell(tr)} |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('json', nargs='+', help='benchmark JSON files')
    parser.add_argument('--merge', metavar='OUT',
                        help='merge the JSON files (runs of one benchmark) into OUT and print '
                        'its table')
    args = parser.parse_args(argv)
    docs = []
    for path in args.json:
        with open(path) as f:
            docs.append(json.load(f))
    if args.merge:
        merged = merge(docs)
        with open(args.merge, 'w') as f:
            f.write(json.dumps(merged, indent=1) + '\n')
        docs = [merged]
    for doc in docs:
        print(table(doc))


if __name__ == '__main__':
    main()
