# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""mmbackbones: modern detection backbones for MMDetection 3.x.

Importing the package registers every backbone, hook and dataset helper in mmdet's registries,
so ``custom_imports = dict(imports=['mmbackbones'], allow_failed_imports=False)`` is all a config
needs.
"""
from .version import __version__
from .config_scope import register_config_scope

register_config_scope()
from .engine import checkpoint as _checkpoint  # noqa: F401  (installs safe checkpoint loading)
from . import datasets, engine, models  # noqa: F401  (registration side effects)
from . import weights  # noqa: F401  (registers the mmbackbones:// checkpoint scheme)
from .models import get_feature_info

__all__ = ['__version__', 'get_feature_info']
