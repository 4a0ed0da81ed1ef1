# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Which backbones this package contributes to mmdet's ``MODELS`` registry."""
from typing import Dict


def registered_backbones() -> Dict[str, type]:
    """Backbone classes registered in mmdet's MODELS and defined in the mmbackbones package.

    Sorted by registered name. Every family appears once, whatever else (mmdet's own backbones,
    other extensions) is registered beside it.
    """
    from mmdet.registry import MODELS

    from .backbones.base import BaseBackbone
    return dict(sorted((name, cls) for name, cls in MODELS.module_dict.items()
                       if isinstance(cls, type) and issubclass(cls, BaseBackbone)
                       and cls.__module__.startswith('mmbackbones.')))
