# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Dataset helpers: the deterministic synthetic COCO-format demo data set.

Importing this package registers :class:`DemoShapesDataset` in mmdet's ``DATASETS`` registry.
"""
import warnings

# ``python -m mmbackbones.datasets.synthetic`` runs a module that this package has already
# imported; runpy then warns about it although nothing is wrong (the module guards its
# registration). Silence exactly that message.
warnings.filterwarnings(
    'ignore', message=r"'mmbackbones\.datasets\.synthetic' found in sys\.modules",
    category=RuntimeWarning, module='runpy')

from .synthetic import (DEMO_CLASSES, DEMO_PALETTE, DemoShapesDataset,  # noqa: E402
                        make_demo_dataset, use_demo_data_root)

__all__ = ['DEMO_CLASSES', 'DEMO_PALETTE', 'DemoShapesDataset', 'make_demo_dataset',
           'use_demo_data_root']
