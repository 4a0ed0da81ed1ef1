# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Write the deterministic synthetic demo detection data set (COCO format).

    python tools/dataset/make_demo_data.py --out data/demo --seed 0 \\
        --num-train 600 --num-val 150 --size 256 256 [--overwrite]

Same options as ``python -m mmbackbones.datasets.synthetic --help``; re-running with the same
options is a no-op.
"""
import os
import sys

if __name__ == '__main__':
    # Allow running from a checkout without installing the package.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from mmbackbones.datasets.synthetic import main
    sys.exit(main())
