# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Reading a weights file of any format the publishers use, without running code from it.

* ``.safetensors`` (timm's hub files): ``safetensors.torch.load_file``, which unpickles nothing.
* torch files: :func:`mmbackbones.engine.checkpoint.load_checkpoint_weights_only`.
* an ultralytics ``.pt`` (it pickles the whole model, which weights-only loading refuses):
  ultralytics' restricted reader, :func:`mmbackbones.converters.load_ultralytics_checkpoint`,
  which builds nothing the file names.
"""
import os
from typing import Any, Mapping

_SAFETENSORS_SUFFIXES = ('.safetensors', )


def _looks_like_safetensors(path: str) -> bool:
    """A safetensors file starts with an 8-byte header length and a JSON header."""
    if path.endswith(_SAFETENSORS_SUFFIXES):
        return True
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') < 1 << 28


def read_weights_file(path: os.PathLike, map_location: Any = 'cpu') -> Mapping:
    """The content of a weights file as a dict (a checkpoint or a bare state dict).

    Raises:
        FileNotFoundError, CorruptCheckpointError, UnsafeCheckpointError: from the weights-only
            reader (a pickled ultralytics model is read by the restricted reader instead).
    """
    from mmbackbones.engine.checkpoint import UnsafeCheckpointError, load_checkpoint_weights_only
    path = os.fspath(path)
    if _looks_like_safetensors(path) and os.path.isfile(path):
        from safetensors.torch import load_file
        device = map_location if isinstance(map_location, str) else 'cpu'
        return load_file(path, device=device)
    try:
        return load_checkpoint_weights_only(path, map_location=map_location)
    except UnsafeCheckpointError as err:
        if not any(name.startswith('ultralytics.') for name in err.globals):
            raise
    from mmbackbones.converters.ultralytics_yolov8 import load_ultralytics_checkpoint
    return load_ultralytics_checkpoint(path)


__all__ = ['read_weights_file']
