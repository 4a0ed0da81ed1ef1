# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Engine pieces: safe checkpoint loading/saving (installed at import), training hooks and bf16
autocast on the CPU (``CPUBF16AmpOptimWrapper``, ``cpu_autocast``), and the RT-DETR recipe's
optimiser-wrapper constructor (``RTDETROptimWrapperConstructor``)."""
# checkpoint installs the weights-only loader; optim_constructor registers the constructor
from . import amp, checkpoint, hooks, optim_constructor  # noqa: F401
from .amp import CPUBF16AmpOptimWrapper, CPUBF16UnsupportedError, cpu_autocast, cpu_supports_bf16
from .checkpoint import (SAFE_GLOBALS, CheckpointLoadError, CorruptCheckpointError,
                         UnsafeCheckpointError, allow_globals, find_latest_valid_checkpoint,
                         load_checkpoint_weights_only)
from .optim_constructor import RTDETROptimWrapperConstructor

__all__ = [
    'amp', 'checkpoint', 'hooks', 'CPUBF16AmpOptimWrapper', 'CPUBF16UnsupportedError',
    'cpu_autocast', 'cpu_supports_bf16', 'SAFE_GLOBALS', 'CheckpointLoadError',
    'CorruptCheckpointError', 'UnsafeCheckpointError', 'allow_globals',
    'find_latest_valid_checkpoint', 'load_checkpoint_weights_only', 'optim_constructor',
    'RTDETROptimWrapperConstructor',
]
