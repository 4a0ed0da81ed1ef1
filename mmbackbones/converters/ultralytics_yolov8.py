"""ultralytics YOLOv8 detection checkpoints -> mmbackbones ``YOLOv8CSPDarknet``.

Layers ``model.0`` ... ``model.9`` of a ``DetectionModel`` are the backbone; the neck and the
head (``model.10`` and up) are dropped.

A released or trained ultralytics ``.pt`` pickles the whole model object (classes from the
``ultralytics`` package), which ``torch.load(weights_only=True)`` refuses. Unpickling it the
ordinary way would import and run whatever code the file names. :func:`load_ultralytics_checkpoint`
instead reads it with a restricted unpickler of its own (``torch.load`` is not involved): it reads
only the regular, stored records of the checkpoint's zip archive, within bounds on record size,
total size, record count and time; only torch's tensor-rebuilding functions (behind checks: no
hooks, no attributes on tensors) and plain containers are resolved, from a fixed table; every
other class the file names becomes an inert placeholder that just records its pickled attributes,
from which the parameters and buffers are collected. Nothing from the file is imported or
executed. Only when that fails does loading need an explicit ``trust_pickle=True``
(``--trust-pickle``), for files from a source you trust.
"""
import _compat_pickle
import argparse
import io
import os
import pickle
import stat
import tarfile
import time
import zipfile
from collections import OrderedDict
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import torch
from torch import nn

from .core import (ConversionError, ConversionResult, StateDict, apply_rules,
                   extract_state_dict, strip_prefixes, to_tensors)


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
    return apply_rules(strip_prefixes(state_dict, ['module.']), YOLOV8_RULES, drop=YOLOV8_DROP)


# ---------------------------------------------------------------- reading an ultralytics .pt
#: Bounds of the restricted reader: a released YOLOv8x .pt is about 130 MiB in ~1,000 records.
MAX_MEMBERS = 100_000
MAX_MEMBER_BYTES = 4 << 30
MAX_TOTAL_BYTES = 16 << 30
MAX_PICKLE_BYTES = 256 << 20
MAX_SECONDS = 300.0
_MAX_MODULE_DEPTH = 100


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


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` for placeholders only."""
    if isinstance(cls, type) and issubclass(cls, _Inert):
        return cls.__new__(cls)
    raise pickle.UnpicklingError(f'refusing to reconstruct {cls!r}')


def _no_hooks(hooks: Any, what: str) -> None:
    if hooks is not None and not (isinstance(hooks, Mapping) and not hooks):
        raise pickle.UnpicklingError(f'{what}: backward hooks in the file are refused')


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, metadata: Any = None) -> torch.Tensor:
    _no_hooks(hooks, 'tensor')
    if metadata:
        raise pickle.UnpicklingError('tensor: metadata (conj/neg bits) is refused')
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f'tensor: expected a storage, got {type(storage).__name__}')
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _rebuild_tensor_v2(storage, offset, size, stride, False, None)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any,
                       state: Any = None) -> torch.Tensor:
    _no_hooks(hooks, 'parameter')
    if state:
        raise pickle.UnpicklingError('parameter: Python attributes in the file are refused')
    if type(data) is not torch.Tensor:
        raise pickle.UnpicklingError(f'parameter: expected a tensor, got {type(data).__name__}')
    return data


class _StorageType(NamedTuple):
    """What a pickled ``torch.<X>Storage`` name resolves to: only its dtype."""
    dtype: torch.dtype


_DTYPES = {name: getattr(torch, name) for name in (
    'float16', 'float32', 'float64', 'bfloat16', 'int8', 'int16', 'int32', 'int64', 'uint8',
    'bool', 'complex64', 'complex128', 'half', 'float', 'double', 'long', 'int', 'short')}
_STORAGES = {f'{prefix}Storage': _StorageType(dtype) for prefix, dtype in (
    ('Float', torch.float32), ('Half', torch.float16), ('Double', torch.float64),
    ('BFloat16', torch.bfloat16), ('Long', torch.int64), ('Int', torch.int32),
    ('Short', torch.int16), ('Char', torch.int8), ('Byte', torch.uint8), ('Bool', torch.bool),
    ('ComplexFloat', torch.complex64), ('ComplexDouble', torch.complex128))}

#: every callable the restricted reader resolves; any other name becomes an inert placeholder
_ALLOWED = {
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('collections', 'OrderedDict'): OrderedDict,
    ('torch', 'Size'): torch.Size,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('copyreg', '_reconstructor'): _safe_reconstructor,
    **{('torch', name): dtype for name, dtype in _DTYPES.items()},
    **{('torch', name): storage for name, storage in _STORAGES.items()},
}


class _Deadline:
    def __init__(self, path: str, seconds: float) -> None:
        self.path, self.seconds = path, seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise ConversionError(f'{self.path}: reading took longer than {self.seconds:.0f} s '
                                  '(MAX_SECONDS); refusing the file.')


class _TorchZip:
    """The records of a torch >= 1.6 checkpoint (a zip archive), checked before anything is read:
    regular files only, stored (uncompressed) as torch writes them, one top-level folder, and
    within the size and count bounds."""

    def __init__(self, path: str, deadline: _Deadline) -> None:
        from mmbackbones.engine.checkpoint import CorruptCheckpointError, check_checkpoint_file
        try:
            check_checkpoint_file(path)
        except CorruptCheckpointError as err:
            raise ConversionError(str(err)) from None
        self.path, self.deadline = path, deadline
        self.archive = zipfile.ZipFile(path)
        try:
            self._check_records(path)
        except BaseException:
            self.archive.close()
            raise

    def _check_records(self, path: str) -> None:
        infos = self.archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ConversionError(f'{path}: {len(infos)} archive records, more than {MAX_MEMBERS}.')
        total = 0
        self.members: Dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            file_type = stat.S_IFMT(info.external_attr >> 16)  # 0: no type recorded
            if info.is_dir() or file_type not in (0, stat.S_IFREG):
                raise ConversionError(f'{path}: archive record {info.filename!r} is not a regular '
                                      'file (a link, folder or device); refusing the file.')
            if info.compress_type != zipfile.ZIP_STORED:
                raise ConversionError(f'{path}: archive record {info.filename!r} is compressed; '
                                      'torch writes stored records only.')
            if info.file_size > MAX_MEMBER_BYTES:
                raise ConversionError(f'{path}: archive record {info.filename!r} is '
                                      f'{info.file_size} bytes, more than {MAX_MEMBER_BYTES}.')
            total += info.file_size
            self.members[info.filename] = info
        if total > MAX_TOTAL_BYTES:
            raise ConversionError(f'{path}: {total} bytes in the archive, more than '
                                  f'{MAX_TOTAL_BYTES}.')
        pickles = [n for n in self.members if n.endswith('/data.pkl') and n.count('/') == 1]
        if len(pickles) != 1:
            raise ConversionError(f'{path}: expected one <folder>/data.pkl record, found '
                                  f'{len(pickles)}.')
        self.prefix = pickles[0][:-len('data.pkl')]
        order = self.members.get(self.prefix + 'byteorder')
        if order is not None and self.read(self.prefix + 'byteorder', 16) != b'little':
            raise ConversionError(f'{path}: only little-endian checkpoints are supported.')
        self.storages: Dict[str, torch.storage.TypedStorage] = {}

    def read(self, name: str, limit: int) -> bytes:
        self.deadline.check()
        info = self.members.get(name)
        if info is None:
            raise pickle.UnpicklingError(f'record {name!r} is not in the archive')
        if info.file_size > limit:
            raise ConversionError(f'{self.path}: record {name!r} is {info.file_size} bytes, more '
                                  f'than {limit}.')
        with self.archive.open(info) as f:
            data = f.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise ConversionError(f'{self.path}: record {name!r} does not have its stated size.')
        return data

    def storage(self, pid: Any) -> torch.storage.TypedStorage:
        if type(pid) is not tuple or len(pid) != 5 or pid[0] not in ('storage', b'storage') \
                or type(pid[1]) is not _StorageType or type(pid[2]) not in (str, bytes) \
                or type(pid[4]) is not int or pid[4] < 0:
            raise pickle.UnpicklingError(f'unsupported persistent id {pid!r:.120}')
        _, storage_type, key, _location, numel = pid
        key = key.decode('ascii') if isinstance(key, bytes) else key
        if key not in self.storages:
            data = self.read(f'{self.prefix}data/{key}', MAX_MEMBER_BYTES)
            element = torch.empty((), dtype=storage_type.dtype).element_size()
            if len(data) != numel * element:
                raise pickle.UnpicklingError(f'storage {key!r}: {len(data)} bytes for {numel} '
                                             f'elements of {storage_type.dtype}')
            untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data \
                else torch.UntypedStorage(0)
            self.storages[key] = torch.storage.TypedStorage(
                wrap_storage=untyped, dtype=storage_type.dtype, _internal=True)
        storage = self.storages[key]
        if storage.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f'storage {key!r} is used with two dtypes')
        return storage


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: _TorchZip) -> None:
        super().__init__(file)
        self.source = source
        self.placeholders: Dict[Tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        self.source.deadline.check()
        # torch.save writes pickle protocol 2, with Python 2 names (__builtin__, copy_reg)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        key = (str(module)[:200], str(name)[:200])
        if key not in self.placeholders:
            self.placeholders[key] = type('Inert', (_Inert, ),
                                          {'_pickled_name': f'{key[0]}.{key[1]}'})
        return self.placeholders[key]

    def persistent_load(self, pid: Any) -> Any:
        return self.source.storage(pid)


def _check_tar_members(path: str) -> None:
    """A legacy (torch < 0.4) tar checkpoint: list its members without extracting anything and
    refuse links, devices and FIFOs, which a reader that extracts would follow or block on."""
    try:
        with tarfile.open(path, mode='r:') as archive:
            for count, member in enumerate(archive):
                if count >= MAX_MEMBERS:
                    raise ConversionError(f'{path}: more than {MAX_MEMBERS} tar members.')
                if not member.isreg():
                    raise ConversionError(
                        f'{path}: tar member {member.name!r} is not a regular file (a link, '
                        'device, FIFO or folder); refusing the file.')
                if member.size > MAX_MEMBER_BYTES:
                    raise ConversionError(f'{path}: tar member {member.name!r} is too large.')
    except tarfile.TarError as err:
        raise ConversionError(f'{path}: not a readable tar archive ({err}).') from None


def _file_format(path: str) -> str:
    with open(path, 'rb') as f:
        head = f.read(512)
    if head[:4] == b'PK\x03\x04':
        return 'zip'
    if len(head) >= 262 and head[257:262] == b'ustar':
        return 'tar'
    return 'other'


def _read_restricted(path: str) -> Any:
    deadline = _Deadline(path, MAX_SECONDS)
    kind = _file_format(path)
    if kind == 'tar':
        _check_tar_members(path)
        raise ConversionError(f'{path}: a legacy (torch < 0.4) tar checkpoint; the restricted '
                              'reader reads torch >= 1.6 checkpoints only. Re-save it with a '
                              'current torch in an environment you trust.')
    if kind != 'zip':
        raise ConversionError(f'{path}: not a torch >= 1.6 checkpoint (zip archive); the '
                              'restricted reader cannot read it. Re-save it with a current torch '
                              'in an environment you trust.')
    source = _TorchZip(path, deadline)
    try:
        data = source.read(source.prefix + 'data.pkl', MAX_PICKLE_BYTES)
        result = _RestrictedUnpickler(io.BytesIO(data), source).load()
    finally:
        source.archive.close()  # every storage is read during load()
    deadline.check()
    return result


def _inert_module_state(module: Any, prefix: str = '', path: Optional[set] = None,
                        budget: Optional[list] = None) -> StateDict:
    """The ``state_dict()`` a pickled ``nn.Module`` placeholder would have had.

    A module may be shared (ultralytics uses one activation object in every layer), but must not
    contain itself; the walk is bounded in depth and in the number of modules visited.
    """
    path = set() if path is None else path
    budget = [MAX_MEMBERS] if budget is None else budget
    budget[0] -= 1
    if id(module) in path or len(path) > _MAX_MODULE_DEPTH or budget[0] < 0:
        raise ConversionError(f'{prefix or "the model"}: the pickled modules contain themselves, '
                              f'nest deeper than {_MAX_MODULE_DEPTH} or number more than '
                              f'{MAX_MEMBERS}.')
    state = module.__dict__.get('_state') if isinstance(module, _Inert) else None
    if not isinstance(state, Mapping) or not isinstance(state.get('_modules'), Mapping):
        raise ConversionError(f'{prefix or "the model"} is not a pickled torch module.')
    out: StateDict = {}
    for name, param in _mapping(state.get('_parameters'), prefix).items():
        if param is not None:
            out[prefix + str(name)] = param
    skip = state.get('_non_persistent_buffers_set') or set()
    for name, buf in _mapping(state.get('_buffers'), prefix).items():
        if buf is not None and not (isinstance(skip, (set, frozenset)) and name in skip):
            out[prefix + str(name)] = buf
    path.add(id(module))
    for name, child in state['_modules'].items():
        if child is not None:
            out.update(_inert_module_state(child, f'{prefix}{name}.', path, budget))
    path.discard(id(module))
    return out


def _mapping(value: Any, prefix: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConversionError(f'{prefix or "the model"}: parameters/buffers are not a dict.')
    return value


def _model_entry(ckpt: Mapping) -> Any:
    """ultralytics' choice of weights in a checkpoint: the EMA model, else ``model``."""
    model = ckpt.get('ema') or ckpt.get('model')
    if model is None:
        raise ConversionError(f"no 'ema' or 'model' entry in the checkpoint (keys: "
                              f'{", ".join(map(str, ckpt))[:300]}).')
    return model


def _clean_tensors(state: Mapping, trusted: bool = False) -> StateDict:
    """Plain fp32 tensors: released checkpoints are fp16 and the backbone is built in fp32;
    ``detach`` drops anything a file may have attached to a tensor object. Tensor subclasses are
    refused unless the file was read with trust (then they become plain tensors)."""
    out: StateDict = {}
    for key, value in to_tensors(state).items():
        if trusted and isinstance(value, torch.Tensor):
            value = value.as_subclass(torch.Tensor)
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise ConversionError(f'checkpoint entry {key!r} is a {type(value).__name__}, not a '
                                  'plain tensor.')
        value = value.detach()
        out[str(key)] = value.float() if value.is_floating_point() else value
    return out


def load_ultralytics_checkpoint(path: str, trust_pickle: bool = False) -> StateDict:
    """Read the detection model's weights from an ultralytics ``.pt`` or a plain state dict.

    Tried in order: mmbackbones' weights-only loader (plain state dicts); the restricted reader
    (whole pickled models, as ultralytics saves them: only regular, uncompressed records of a zip
    checkpoint are read, within size, count and time bounds; the only callables resolved are
    torch's tensor rebuilders behind checks and a few containers; every other class becomes an
    inert placeholder, nothing is imported or run); and, only with ``trust_pickle=True``, a full
    unpickle, which imports ``ultralytics`` and runs any code the file names.
    """
    from mmbackbones.engine.checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                                               load_checkpoint_weights_only)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ultralytics checkpoint '{path}' does not exist or is not a "
                                'regular file.')
    try:
        ckpt = load_checkpoint_weights_only(path, map_location='cpu')
    except CorruptCheckpointError as err:
        raise ConversionError(str(err)) from None
    except UnsafeCheckpointError:  # a pickled model: try the restricted reader next
        ckpt = None
    if isinstance(ckpt, Mapping):
        return _clean_tensors(extract_state_dict(ckpt))

    try:
        ckpt = _read_restricted(path)
        if not isinstance(ckpt, Mapping):
            raise ConversionError(f'expected a checkpoint dict, got {type(ckpt).__name__}.')
        model = _model_entry(ckpt)
        state = model if isinstance(model, Mapping) else _inert_module_state(model)
        return _clean_tensors(state)
    except Exception as err:  # noqa: BLE001 - explained below, or read with trust
        restricted_error = err
    if not trust_pickle:
        raise ConversionError(
            f'{path}: the restricted reader cannot rebuild its weights ({restricted_error}). '
            f'Reading it fully means unpickling arbitrary objects, which imports ultralytics and '
            f'can run any code the file names; pass --trust-pickle (trust_pickle=True) only for a '
            f'file from a source you trust, or re-save its model.state_dict() first.')
    if _file_format(path) == 'tar':
        _check_tar_members(path)  # torch extracts tar members to disk before reading them
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    model = _model_entry(ckpt) if isinstance(ckpt, Mapping) else ckpt
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return _clean_tensors(state, trusted=True)


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
