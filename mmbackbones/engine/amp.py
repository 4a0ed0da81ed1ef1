# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""bfloat16 autocast on the CPU: for training (an optim wrapper), testing and inference.

MMEngine's ``AmpOptimWrapper`` refuses the CPU (it is built around CUDA's fp16 ``GradScaler``).
On a CPU, mixed precision means bfloat16: :class:`CPUBF16AmpOptimWrapper` runs the forward pass
under ``torch.autocast('cpu', dtype=torch.bfloat16)``, so convolutions and matrix products take
bf16 inputs (and, on AVX-512 / AMX machines, bf16 kernels), while the parameters, their gradients
and the optimizer state stay float32: the fp32 parameters are the master weights.

No loss scaling: loss scaling exists for float16, whose 5-bit exponent flushes gradients below
~6e-8 (subnormal) / 6e-5 (normal) to zero, so the loss is multiplied up before ``backward`` and
the gradients divided back. bfloat16 has float32's 8-bit exponent (same range, ~1e-38 .. 3e38);
it only has fewer mantissa bits (eps = 2**-7, unit roundoff 2**-8), so small gradients are not
lost and there is nothing to scale. The gradients that reach the parameters are float32 anyway:
autocast's casts are differentiable and the gradient of an fp32 parameter is accumulated in fp32.

Whether this CPU has bf16 kernels: :func:`cpu_supports_bf16` (oneDNN's own check: AVX-512
or AMX on x86). Without them PyTorch still computes bf16, but in slow reference kernels (measured
here on an AVX2 CPU: a 3x3 conv 75x slower than float32), so every entry point refuses with an
error that says so, unless ``MMBACKBONES_ALLOW_EMULATED_BF16=1`` is set (same numbers, only slow:
for tests and debugging on such machines).

Validation and testing: :class:`CPUBF16ValLoop` / :class:`CPUBF16TestLoop` (``tools/train.py
--amp`` and ``tools/test.py --amp`` select them on a CPU) run the network under autocast and the
post-processing (box decoding, NMS: mmcv's CPU kernels take float32 only) in float32.

Inference (``inference_detector`` and friends)::

    from mmbackbones.engine.amp import cpu_autocast
    with cpu_autocast(model):
        result = inference_detector(model, image)
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, List, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import LOOPS, OPTIM_WRAPPERS
from mmengine.runner import TestLoop, ValLoop
from torch import nn

__all__ = ['ALLOW_EMULATED_ENV', 'CPUBF16UnsupportedError', 'cpu_supports_bf16', 'cpu_bf16_kind',
           'cpu_has_amx', 'check_cpu_bf16', 'cpu_autocast', 'CPUBF16AmpOptimWrapper',
           'CPUBF16ValLoop', 'CPUBF16TestLoop']

#: Set to ``1`` to run bf16 autocast on a CPU without bf16 kernels (slow, numerically the same).
ALLOW_EMULATED_ENV = 'MMBACKBONES_ALLOW_EMULATED_BF16'


_WARNED_EMULATED: List[str] = []  # the emulation warning is logged once per process
_WARNED_NO_AMX: List[str] = []  # so is the no-AMX one

#: Logged once when bf16 is asked for on a CPU with bf16 instructions but no AMX tiles.
NO_AMX_WARNING = (
    '{what}: this CPU computes bf16 with {kind} and has no AMX tiles, so bf16 autocast is '
    'likely slower than float32 here, not faster: on a 2-core Xeon without AMX, detector train '
    'steps took 1.14-1.31x and inference 1.22-1.46x their float32 time; with AMX, 0.57-0.70x '
    '(docs/benchmarks.md, "bf16 autocast on CPU"). Drop {what} on this machine unless you '
    'want bf16 numerics.')


class CPUBF16UnsupportedError(RuntimeError):
    """bf16 autocast was asked for on a CPU without bf16 kernels; the message says what to do."""


def cpu_supports_bf16() -> bool:
    """True when PyTorch's oneDNN has bf16 kernels for this CPU (x86: AVX-512 or AMX; it also
    needs oneDNN to be available and enabled). Tests monkeypatch this to simulate other CPUs."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles, the units that make bf16 convs and matmuls faster
    than float32 (without them, bf16 can be slower: see :func:`check_cpu_bf16`)."""
    return bool(getattr(torch.cpu, '_is_amx_tile_supported', lambda: False)())


def cpu_bf16_kind() -> str:
    """How this CPU computes bf16, in words (for logs and benchmark headers)."""
    cpu = torch.cpu
    if cpu_has_amx():
        return 'AMX (native bf16)'
    if getattr(cpu, '_is_avx512_bf16_supported', lambda: False)():
        return 'AVX512-BF16 (native bf16)'
    if cpu_supports_bf16():
        return 'AVX-512 (oneDNN bf16 via conversion)'
    capability = torch.backends.cpu.get_cpu_capability()
    return f'{capability}, no bf16 kernels: emulated, slow'


def check_cpu_bf16(what: str) -> None:
    """Raise :class:`CPUBF16UnsupportedError` naming ``what`` (e.g. ``'--amp'``) unless this CPU
    has bf16 kernels or :data:`ALLOW_EMULATED_ENV` is ``1`` (then warn and go on). bf16
    kernels without AMX go on with :data:`NO_AMX_WARNING`, once per process."""
    if cpu_supports_bf16():
        if not cpu_has_amx() and not _WARNED_NO_AMX:
            _WARNED_NO_AMX.append(what)
            print_log(NO_AMX_WARNING.format(what=what, kind=cpu_bf16_kind()),
                      logger='current', level=logging.WARNING)
        return
    allow = os.environ.get(ALLOW_EMULATED_ENV, '')
    if allow == '1':
        if _WARNED_EMULATED:
            return
        _WARNED_EMULATED.append(what)
        print_log(f'{what}: this CPU has no bf16 kernels ({cpu_bf16_kind()}); running bf16 '
                  f'autocast emulated because {ALLOW_EMULATED_ENV}=1 (slower than float32).',
                  logger='current', level=logging.WARNING)
        return
    if allow not in ('', '0'):
        raise CPUBF16UnsupportedError(f"{ALLOW_EMULATED_ENV}={allow!r}: use '1' (allow emulated "
                                      "bf16) or '0' / unset (refuse it).")
    raise CPUBF16UnsupportedError(
        f'{what}: bfloat16 autocast on the CPU needs bf16 kernels (x86 with AVX-512 or AMX), but '
        f'this CPU is {cpu_bf16_kind()}; PyTorch would fall back to reference kernels that are '
        f'far slower than float32. Drop {what} on this machine (float32 is faster here), or set '
        f'{ALLOW_EMULATED_ENV}=1 to run it anyway (same numbers, only slow).')


_MISSING = object()


def _to_float32(obj: Any) -> Any:
    """``obj`` with every floating tensor (also inside tuples, lists, dicts) as float32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float32 else obj
    if isinstance(obj, (tuple, list)):
        items = [_to_float32(o) for o in obj]
        return type(obj)(*items) if hasattr(obj, '_fields') else type(obj)(items)
    if isinstance(obj, dict):
        return type(obj)((k, _to_float32(v)) for k, v in obj.items())
    return obj


def _autocast_targets(model: nn.Module) -> List[Tuple[nn.Module, str]]:
    """The methods that run the network of ``model`` (unwrapped from DDP / TTA wrappers):
    a detector's ``extract_feat`` (backbone + neck) and the ``forward`` of its dense
    ``bbox_head`` / ``rpn_head``; any other module: its ``forward``."""
    while isinstance(getattr(model, 'module', None), nn.Module):
        model = model.module
    if not callable(getattr(model, 'extract_feat', None)):
        return [(model, 'forward')]
    targets = [(model, 'extract_feat')]
    for name in ('rpn_head', 'bbox_head'):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module) and callable(getattr(head, 'predict_by_feat', None)):
            targets.append((head, 'forward'))  # dense head: predict() = forward + post-process
    return targets


@contextlib.contextmanager
def cpu_autocast(model: Optional[nn.Module] = None, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on the CPU for inference (after :func:`check_cpu_bf16`); weights stay fp32.

    ``with cpu_autocast(model):`` (a detector, e.g. for ``inference_detector(model, image)``)
    runs the network under autocast: ``extract_feat`` (backbone and neck) and the forward of a
    dense ``bbox_head`` / ``rpn_head``, whose outputs come back as float32, so box decoding,
    NMS (mmcv's kernels take float32 only) and the results stay float32. What lies between
    (the transformer of a DETR-style detector, the RoI head of a two-stage one) runs in
    float32. Any other module gets its whole ``forward`` under autocast, output cast to
    float32. ``with cpu_autocast():`` (no model) is plain ``torch.autocast('cpu',
    dtype=torch.bfloat16)``: everything inside, outputs bfloat16. ``enabled=False`` changes
    nothing (a switch for user code).
    """
    if not enabled:
        yield
        return
    check_cpu_bf16('cpu_autocast()')
    if model is None:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            yield
        return
    patched = []
    try:
        for owner, name in _autocast_targets(model):
            method = getattr(owner, name)

            def run(*args, _method=method, **kwargs):
                with torch.autocast('cpu', dtype=torch.bfloat16):
                    out = _method(*args, **kwargs)
                return _to_float32(out)

            # an instance attribute shadows the method for this block only
            patched.append((owner, name, owner.__dict__.get(name, _MISSING)))
            owner.__dict__[name] = run
        yield
    finally:
        for owner, name, previous in reversed(patched):
            if previous is _MISSING:
                owner.__dict__.pop(name, None)
            else:
                owner.__dict__[name] = previous


@LOOPS.register_module()
class CPUBF16ValLoop(ValLoop):
    """MMEngine's ``ValLoop`` with the model's network under bf16 autocast on the CPU (see
    :func:`cpu_autocast`; post-processing stays float32). ``tools/train.py --amp`` selects it
    on a CPU. Same arguments as ``ValLoop`` (``fp16`` must stay False: it would autocast the
    post-processing too, which mmcv's NMS refuses)."""

    def __init__(self, runner: Any, dataloader: Any, evaluator: Any, **kwargs) -> None:
        _check_loop(type(self).__name__, runner, kwargs)
        check_cpu_bf16(type(self).__name__)
        super().__init__(runner, dataloader, evaluator, **kwargs)

    def run(self) -> dict:
        with cpu_autocast(self.runner.model):
            return super().run()


@LOOPS.register_module()
class CPUBF16TestLoop(TestLoop):
    """MMEngine's ``TestLoop`` with the model's network under bf16 autocast on the CPU (see
    :class:`CPUBF16ValLoop`); ``tools/test.py --amp`` selects it on a CPU."""

    def __init__(self, runner: Any, dataloader: Any, evaluator: Any, **kwargs) -> None:
        _check_loop(type(self).__name__, runner, kwargs)
        check_cpu_bf16(type(self).__name__)
        super().__init__(runner, dataloader, evaluator, **kwargs)

    def run(self) -> dict:
        with cpu_autocast(self.runner.model):
            return super().run()


def _check_loop(loop: str, runner: Any, kwargs: dict) -> None:
    device = next((p.device for p in getattr(runner, 'model', nn.Module()).parameters()), None)
    if device is not None and device.type != 'cpu':
        raise ValueError(f"{loop}: the model is on '{device}', but this loop autocasts CPU "
                         "operations only; use MMEngine's loop with fp16=True there.")
    if kwargs.pop('fp16', False):
        raise ValueError(f'{loop}: fp16=True is not supported (it autocasts the post-processing '
                         'too); the loop already runs the network under bf16 autocast. Remove '
                         'fp16.')


@OPTIM_WRAPPERS.register_module()
class CPUBF16AmpOptimWrapper(OptimWrapper):
    """Mixed-precision training on the CPU: bf16 autocast forward, float32 weights and updates.

    Use it like MMEngine's ``OptimWrapper`` (``tools/train.py --amp`` on a CPU selects it)::

        optim_wrapper = dict(type='CPUBF16AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.01),
                             clip_grad=dict(max_norm=10), accumulative_counts=1)

    ``clip_grad``, ``accumulative_counts`` and ``paramwise_cfg`` (through the optim wrapper
    constructor) behave as in ``OptimWrapper``; the state dict is the optimizer's (there is no
    loss scaler; see the module docstring for why bf16 needs none). A checkpoint written by
    ``AmpOptimWrapper`` (a GPU run) resumes here: its ``loss_scaler`` entry is dropped.

    Args:
        optimizer: The optimizer (over float32 parameters on the CPU).
        dtype (str or torch.dtype): The autocast dtype; only ``'bfloat16'`` (the CPU's mixed
            precision). Default: ``'bfloat16'``.
        **kwargs: ``accumulative_counts``, ``clip_grad``: as in ``OptimWrapper``.

    Raises:
        CPUBF16UnsupportedError: the CPU has no bf16 kernels (see :func:`check_cpu_bf16`).
        ValueError: another ``dtype``; parameters that are not float32 or not on the CPU.
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 dtype: Union[str, torch.dtype] = 'bfloat16', **kwargs) -> None:
        if 'loss_scale' in kwargs:
            raise ValueError(
                f'CPUBF16AmpOptimWrapper: loss_scale={kwargs["loss_scale"]!r} is not used: '
                'bfloat16 has the exponent range of float32, so gradients need no scaling. '
                'Remove loss_scale from optim_wrapper.')
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(f'CPUBF16AmpOptimWrapper: dtype={dtype!r} is not supported; CPU '
                             "autocast here is bfloat16 only: use dtype='bfloat16' (the default).")
        check_cpu_bf16('CPUBF16AmpOptimWrapper')
        super().__init__(optimizer=optimizer, **kwargs)
        self.cast_dtype = torch.bfloat16
        for group in self.optimizer.param_groups:
            for param in group['params']:
                if param.dtype != torch.float32 or param.device.type != 'cpu':
                    raise ValueError(
                        f'CPUBF16AmpOptimWrapper: a parameter is {param.dtype} on '
                        f"'{param.device}'; it needs float32 parameters on the CPU (they are the "
                        'master weights; autocast casts per operation). Keep the model in '
                        'float32 on the CPU, or use AmpOptimWrapper on a GPU.')

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the optimizer state; a ``loss_scaler`` entry (from ``AmpOptimWrapper``) is
        dropped, because bf16 training has no loss scale."""
        state_dict = dict(state_dict)
        if state_dict.pop('loss_scaler', None) is not None:
            print_log('CPUBF16AmpOptimWrapper: the checkpoint has a loss_scaler state (fp16 AMP); '
                      'it is not used with bf16 and was dropped.', logger='current',
                      level=logging.WARNING)
        super().load_state_dict(state_dict)

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """Gradient-accumulation context of ``OptimWrapper`` plus bf16 autocast on the CPU."""
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield

