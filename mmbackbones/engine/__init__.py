# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Engine pieces: safe checkpoint loading/saving (installed at import) and training hooks."""
from . import checkpoint, hooks  # noqa: F401  (checkpoint installs the weights-only loader)
from .checkpoint import (SAFE_GLOBALS, CheckpointLoadError, CorruptCheckpointError,
                         UnsafeCheckpointError, allow_globals, find_latest_valid_checkpoint,
                         load_checkpoint_weights_only)

__all__ = [
    'checkpoint', 'hooks', 'SAFE_GLOBALS', 'CheckpointLoadError', 'CorruptCheckpointError',
    'UnsafeCheckpointError', 'allow_globals', 'find_latest_valid_checkpoint',
    'load_checkpoint_weights_only',
]
