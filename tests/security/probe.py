# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Run in a subprocess by the security tests: load files with one loader each, then hand every
loaded object to numpy, as downstream code would; a crash shows as the process's exit status.

    python tests/security/probe.py JOBS.json

``JOBS.json`` is a list of ``[loader, target]``. For each job one line is printed:
``<loader> <target> LOADED`` or ``<loader> <target> REFUSED <ErrorType>``; an exception of any
other type is printed as ``OTHER <type>: <message>``. ``loader`` is one of :data:`LOADERS`, or
``old-allowlist`` / ``plain-torch`` (controls: torch's loader with the process-wide allowlist
mmbackbones used to install, or with torch's defaults only).
"""
import faulthandler
import json
import pickle
import sys

import numpy as np
import torch


def consume(obj, seen=None, depth=0):
    """What downstream code does with loaded values: numpy views of everything array-like."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 50:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        if type(obj) is not dict:
            np.array(obj)  # a copy: reads the data
        for value in list(obj.values()):
            consume(value, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            consume(value, seen, depth + 1)
    elif isinstance(obj, torch.Tensor):
        np.array(obj)  # a copy: reads the data
    elif hasattr(obj, '__dict__'):
        np.array(obj)  # a copy: reads the data
        for value in list(vars(obj).values()):
            consume(value, seen, depth + 1)


def old_allowlist():
    """The process-wide allowlist mmbackbones installed before: the classes themselves, and
    getattr limited to HistoryBuffer's four statistics."""
    from mmengine.logging.history_buffer import HistoryBuffer
    from numpy._core.multiarray import _reconstruct, scalar

    def statistics_getattr(obj, name):
        if obj is HistoryBuffer and name in ('min', 'max', 'mean', 'current'):
            return getattr(HistoryBuffer, name)
        raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r})')

    torch.serialization.add_safe_globals([
        (statistics_getattr, 'builtins.getattr'),
        HistoryBuffer, np.ndarray, np.dtype, type(np.dtype(np.float64)),
        type(np.dtype(np.int64)), (_reconstruct, 'numpy._core.multiarray._reconstruct'),
        (scalar, 'numpy._core.multiarray.scalar')])


def load(loader, target):
    if loader == 'old-allowlist':
        old_allowlist()
        return torch.load(target, map_location='cpu', weights_only=True)
    if loader == 'plain-torch':
        return torch.load(target, map_location='cpu', weights_only=True)
    import mmbackbones  # noqa: F401
    from mmengine.runner import CheckpointLoader
    from mmengine.runner import load_checkpoint as mm_load_checkpoint
    if loader == 'CheckpointLoader':
        return CheckpointLoader.load_checkpoint(target, map_location='cpu')
    if loader == 'mmengine.load_checkpoint':
        return mm_load_checkpoint(torch.nn.Linear(2, 2), target, map_location='cpu')
    if loader == 'load_source_checkpoint':
        from mmbackbones.converters.core import load_source_checkpoint
        return load_source_checkpoint(target)
    if loader == 'ultralytics':
        from mmbackbones.converters.ultralytics_yolov8 import load_ultralytics_checkpoint
        return load_ultralytics_checkpoint(target)
    raise ValueError(f'unknown loader {loader!r}')


def main():
    faulthandler.enable()
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for loader, target in jobs:
        try:
            result = load(loader, target)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            bases = {cls.__name__ for cls in type(exc).__mro__}
            if bases & {'CheckpointLoadError', 'ConversionError'}:
                print(loader, target, 'REFUSED', type(exc).__name__, flush=True)
                continue
            print(loader, target, 'OTHER', f'{type(exc).__name__}: {exc}'.replace('\n', ' ')[:300],
                  flush=True)
            continue
        consume(result)
        print(loader, target, 'LOADED', flush=True)


if __name__ == '__main__':
    main()
