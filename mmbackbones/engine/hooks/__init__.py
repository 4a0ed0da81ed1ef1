# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Training hooks registered in mmdet's HOOKS registry (importing this package registers them)."""

__all__: list = []
