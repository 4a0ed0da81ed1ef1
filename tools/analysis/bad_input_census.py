# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Run the bad-input table of ``tests/test_bad_inputs.py`` and count the outcomes.

Each case is *clear* (a ValueError / TypeError whose message names the argument), *unclear*
(another exception, or a message that does not name it) or *silent* (accepted); *strict* counts
the clear ones that also have the expected type and show the bad value (what
``test_bad_input_case`` asserts). Prints a table per category and lists the cases that are not
clear.

Usage::

    python tools/analysis/bad_input_census.py [--json OUT.json]
"""
import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', help='also write the counts and the non-clear cases here')
    args = parser.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    sys.path.insert(0, str(REPO))
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    from tests.test_bad_inputs import census
    counts = census()
    bad = counts.pop('_bad')
    print(f'{"category":14s} {"clear":>6s} {"unclear":>8s} {"silent":>7s} {"strict":>7s}')
    for category, row in sorted(counts.items(), key=lambda item: item[0] == 'all'):
        print(f'{category:14s} {row["clear"]:6d} {row["unclear"]:8d} {row["silent"]:7d} '
              f'{row["strict"]:7d}')
    for line in bad:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(counts=counts, not_clear=bad), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
