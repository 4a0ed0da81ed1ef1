"""ultralytics YOLOv8 detection checkpoints -> mmbackbones ``YOLOv8CSPDarknet``.

Layers ``model.0`` ... ``model.9`` of a ``DetectionModel`` are the backbone; the neck and the
head (``model.10`` and up) are dropped.

A released or trained ultralytics ``.pt`` pickles the whole model object (classes from the
``ultralytics`` package), which ``torch.load(weights_only=True)`` refuses. Unpickling it the
ordinary way would import and run whatever code the file names. :func:`load_ultralytics_checkpoint`
instead reads it with a restricted unpickler: only torch's tensor-rebuilding functions and plain
containers are resolved; every other class the file names becomes an inert placeholder that just
records its pickled attributes, from which the parameters and buffers are collected. Nothing
from the file is imported or executed. Only when that fails does loading need an explicit
``trust_pickle=True`` (``--trust-pickle``), for files from a source you trust.
"""
import _compat_pickle
import argparse
import pickle
import types
from collections import OrderedDict
from typing import Any, Dict, Mapping, Tuple

import torch
from torch import nn

from .core import (ConversionError, ConversionResult, StateDict, apply_rules,
                   extract_state_dict, to_tensors)


def _stage(layer: str) -> int:
    """ultralytics layer index -> our stage index (1,2 -> 0; 3,4 -> 1; 5,6 -> 2; 7,8,9 -> 3)."""
    return min((int(layer) - 1) // 2, 3)


YOLOV8_RULES = [
    (r'model\.0\.(conv|bn)\.(\w+)', r'stem.0.\1.\2'),
    (r'model\.([1357])\.(conv|bn)\.(\w+)', lambda m: f'stages.{_stage(m[1])}.0.{m[2]}.{m[3]}'),
    (r'model\.([2468])\.cv1\.(conv|bn)\.(\w+)',
     lambda m: f'stages.{_stage(m[1])}.1.main_conv.{m[2]}.{m[3]}'),
    (r'model\.([2468])\.cv2\.(conv|bn)\.(\w+)',
     lambda m: f'stages.{_stage(m[1])}.1.final_conv.{m[2]}.{m[3]}'),
    (r'model\.([2468])\.m\.(\d+)\.cv([12])\.(conv|bn)\.(\w+)',
     lambda m: f'stages.{_stage(m[1])}.1.blocks.{m[2]}.conv{m[3]}.{m[4]}.{m[5]}'),
    (r'model\.9\.cv([12])\.(conv|bn)\.(\w+)', r'stages.3.2.conv\1.\2.\3'),
]
#: the neck and the detection head
YOLOV8_DROP = [r'model\.(1\d|[2-9]\d)\..*']


def convert_ultralytics_yolov8(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert a YOLOv8 ``DetectionModel`` state dict (``model.<layer>.`` keys)."""
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v
                  for k, v in state_dict.items()}
    return apply_rules(state_dict, YOLOV8_RULES, drop=YOLOV8_DROP)


# ---------------------------------------------------------------- reading an ultralytics .pt
class _Inert:
    """Stands in for a class named in a pickle: records constructor arguments and pickled
    state, runs nothing."""
    _pickled_name = '?'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__['_args'] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__['_state'] = state

    def __setitem__(self, key: Any, value: Any) -> None:  # dict subclasses (SETITEMS)
        self.__dict__.setdefault('_items', {})[key] = value

    def append(self, value: Any) -> None:  # list subclasses (APPENDS)
        self.__dict__.setdefault('_list', []).append(value)

    def extend(self, values: Any) -> None:
        for value in values:
            self.append(value)


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copyreg._reconstructor`` for placeholders only."""
    if isinstance(cls, type) and issubclass(cls, _Inert):
        return cls.__new__(cls)
    raise pickle.UnpicklingError(f'refusing to reconstruct {cls!r}')


_ALLOWED = {
    ('torch._utils', '_rebuild_tensor'): torch._utils._rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): torch._utils._rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): torch._utils._rebuild_parameter_with_state,
    ('collections', 'OrderedDict'): OrderedDict,
    ('torch', 'Size'): torch.Size,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('copyreg', '_reconstructor'): _safe_reconstructor,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # torch.save writes pickle protocol 2, with Python 2 names (__builtin__, copy_reg)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (_Inert, ), {'_pickled_name': f'{module}.{name}'})


#: what ``torch.load(pickle_module=...)`` needs of a pickle module
_RESTRICTED_PICKLE = types.ModuleType('mmbackbones_restricted_pickle')
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
_RESTRICTED_PICKLE.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
_RESTRICTED_PICKLE.UnpicklingError = pickle.UnpicklingError


def _inert_module_state(module: Any, prefix: str = '') -> StateDict:
    """The ``state_dict()`` a pickled ``nn.Module`` placeholder would have had."""
    state = module.__dict__.get('_state')
    if not isinstance(state, Mapping) or '_modules' not in state:
        raise ConversionError(f'{prefix or "the model"} is not a pickled torch module.')
    out: StateDict = {}
    for name, param in (state.get('_parameters') or {}).items():
        if param is not None:
            out[prefix + name] = param.detach()
    skip = state.get('_non_persistent_buffers_set') or set()
    for name, buf in (state.get('_buffers') or {}).items():
        if buf is not None and name not in skip:
            out[prefix + name] = buf
    for name, child in (state.get('_modules') or {}).items():
        if child is not None:
            out.update(_inert_module_state(child, f'{prefix}{name}.'))
    return out


def _model_entry(ckpt: Mapping) -> Any:
    """ultralytics' choice of weights in a checkpoint: the EMA model, else ``model``."""
    model = ckpt.get('ema') or ckpt.get('model')
    if model is None:
        raise ConversionError(f"no 'ema' or 'model' entry in the checkpoint (keys: "
                              f'{", ".join(map(str, ckpt))}).')
    return model


def _to_float(state_dict: StateDict) -> StateDict:
    """Released checkpoints are fp16; the backbone is built in fp32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def load_ultralytics_checkpoint(path: str, trust_pickle: bool = False) -> StateDict:
    """Read the detection model's weights from an ultralytics ``.pt`` or a plain state dict.

    Tried in order: ``torch.load(weights_only=True)`` (plain state dicts); the restricted
    unpickler (whole pickled models, as ultralytics saves them; nothing is imported or run);
    and, only with ``trust_pickle=True``, a full unpickle, which imports ``ultralytics`` and
    runs any code the file names.
    """
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise
    except Exception:  # noqa: BLE001 - a pickled model: try the restricted reader next
        ckpt = None
    if isinstance(ckpt, Mapping):
        return _to_float(to_tensors(extract_state_dict(ckpt)))

    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=False,
                          pickle_module=_RESTRICTED_PICKLE)
        if not isinstance(ckpt, Mapping):
            raise ConversionError(f'expected a checkpoint dict, got {type(ckpt).__name__}.')
        model = _model_entry(ckpt)
        state = model if isinstance(model, Mapping) else _inert_module_state(model)
        return _to_float(to_tensors(state))
    except Exception as err:  # noqa: BLE001 - explained below, or read with trust
        restricted_error = err
    if not trust_pickle:
        raise ConversionError(
            f'{path}: the restricted reader cannot rebuild its weights ({restricted_error}). '
            f'Reading it fully means unpickling arbitrary objects, which imports ultralytics and '
            f'can run any code the file names; pass --trust-pickle (trust_pickle=True) only for a '
            f'file from a source you trust, or re-save its model.state_dict() first.')
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    model = _model_entry(ckpt) if isinstance(ckpt, Mapping) else ckpt
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return _to_float(to_tensors(state))


def add_ultralytics_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--trust-pickle', action='store_true',
                        help='if the restricted reader cannot rebuild the weights, unpickle the '
                             'file fully (imports ultralytics and runs code named in the file; '
                             'only for files you trust)')


def load_for_cli(path: str, args: argparse.Namespace) -> StateDict:
    return load_ultralytics_checkpoint(path, trust_pickle=args.trust_pickle)


# ---------------------------------------------------------------- the target model
def yolov8_factory(state_dict: StateDict) -> Tuple[nn.Module, Dict[str, Any]]:
    """A YOLOv8CSPDarknet for converted weights: the scale and stem are read off the weights."""
    from mmbackbones.models import YOLOv8CSPDarknet
    focus = 'stem.0.conv.conv.weight' in state_dict
    stem_key = 'stem.0.conv.conv.weight' if focus else 'stem.0.conv.weight'
    if stem_key not in state_dict:
        raise ConversionError(f'no stem weight {stem_key!r} in the converted weights.')
    widths = [int(state_dict[f'stages.{i}.0.conv.weight'].shape[0]) for i in range(4)
              if f'stages.{i}.0.conv.weight' in state_dict]
    blocks = [1 + max((int(k.split('.')[4]) for k in state_dict
                       if k.startswith(f'stages.{i}.1.blocks.')), default=-1) for i in range(4)]
    arch = YOLOv8CSPDarknet.arch_from_widths(int(state_dict[stem_key].shape[0]), widths, blocks)
    stem_type = 'focus' if focus else 'conv'
    model = YOLOv8CSPDarknet(arch=arch, stem_type=stem_type)
    return model, dict(type='YOLOv8CSPDarknet', arch=arch, stem_type=stem_type)


__all__ = ['YOLOV8_RULES', 'convert_ultralytics_yolov8', 'load_ultralytics_checkpoint',
           'yolov8_factory', 'add_ultralytics_arguments', 'load_for_cli']
