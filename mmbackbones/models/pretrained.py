# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""``init_cfg=dict(type='Pretrained', ...)`` loading for every mmbackbones backbone.

:class:`~mmbackbones.models.backbones.base.BaseBackbone` delegates here. ``checkpoint`` may be

* a named weight, ``mmbackbones://<family>/<arch>`` (:mod:`mmbackbones.weights`: downloaded
  once, checked, converted and cached);
* a local path or an ``http(s)://`` URL (downloaded once into the same cache) of an mmbackbones
  checkpoint, an mmdet detector checkpoint (with ``prefix='backbone.'``), or an unconverted
  official / timm / torchvision / ultralytics file: its format is recognised from its keys
  (:func:`mmbackbones.converters.formats.detect_format`) and it is converted on load;
* any other mmengine checkpoint path (``open-mmlab://``, ``s3://``, ...), read by mmengine.

Whatever the source, the weights are reported (missing / unexpected / mis-shaped keys) and the
load fails when less than ``min_loaded_ratio`` of the backbone's parameters was found.
"""
import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch
from mmengine.logging import print_log
from torch import nn

StateDict = Dict[str, torch.Tensor]
#: share of a checkpoint's keys that must be the backbone's own for it to load without conversion
OWN_FORMAT_SHARE = 0.5


def sample_keys(keys: Iterable[str], n: int = 3) -> str:
    keys = list(keys)
    shown = ', '.join(repr(k) for k in keys[:n])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def prefix_hint(state: Mapping[str, Any], own: Mapping[str, Any]) -> str:
    """Suggest a prefix when stripping one from the checkpoint keys would match the model."""
    candidates = {k.split('.', 1)[0] + '.' for k in state if '.' in k}
    best, best_hits = None, 0
    for candidate in candidates:
        hits = sum(1 for k in state if k.startswith(candidate) and k[len(candidate):] in own)
        if hits > best_hits:
            best, best_hits = candidate, hits
    if best and best_hits >= 0.5 * len(own):
        return f"Its keys match after stripping {best!r}: pass prefix={best!r} in init_cfg."
    return ''


def _read(checkpoint: str, map_location: Any, sha256: Optional[str]) -> Mapping:
    """The content of a local file, a URL (through the weights cache) or an mmengine path."""
    from mmbackbones.weights.files import read_weights_file
    if checkpoint.startswith(('http://', 'https://')):
        from mmbackbones.weights import fetch_url
        return read_weights_file(fetch_url(checkpoint, sha256), map_location)
    if '://' in checkpoint and not os.path.exists(checkpoint):
        if sha256:
            raise ValueError(f'sha256= is checked for local files, URLs and mmbackbones:// names, '
                             f'not for {checkpoint!r}.')
        from mmengine.runner.checkpoint import _load_checkpoint
        return _load_checkpoint(checkpoint, map_location=map_location)
    if sha256:
        from mmbackbones.weights.cache import matches, sha256_of
        from mmbackbones.weights.store import check_pin
        check_pin(sha256)
        local = os.path.expanduser(checkpoint)
        actual = sha256_of(local) if os.path.isfile(local) else None
        if actual is not None and not matches(actual, sha256):
            from mmbackbones.weights import IntegrityError
            raise IntegrityError(f'{checkpoint} has sha256 {actual}, not the sha256 pinned in '
                                 f'init_cfg ({sha256}); it is refused.')
    return read_weights_file(checkpoint, map_location)


def _own_share(state: Mapping[str, Any], own: Mapping[str, Any]) -> float:
    return sum(1 for k in state if k in own) / len(state) if state else 0.0


def _convert_source(model: nn.Module, ckpt: Mapping, state: StateDict, checkpoint: str,
                    selected: bool) -> tuple:
    """Recognise an unconverted file and convert it for ``model``.

    Returns ``(state, format or None, note)``: the converted state dict and its format, or the
    state unchanged with a note naming the formats tried when none recognises it.
    """
    from mmbackbones.converters.core import strip_prefixes, to_tensors
    from mmbackbones.converters.formats import SOURCE_FORMATS, detect_format, formats_tried
    name = type(model).__name__
    if not any(fmt.backbone == name for fmt in SOURCE_FORMATS):
        return state, None, ''  # nothing converts to it (TimmBackbone loads timm's own keys)
    found = detect_format(state if selected else ckpt, backbone=name)
    if not found:
        return state, None, (f'It is not in a format mmbackbones converts either (formats '
                             f'tried, by key patterns: {formats_tried()}).')
    fmt = found[0]
    if fmt.backbone != name:
        raise RuntimeError(
            f'{name}: {checkpoint!r} is a {fmt.description} checkpoint (recognised by its keys, '
            f'e.g. {sample_keys(fmt.select(ckpt) if not selected else state)}), which converts to '
            f'{fmt.backbone}, not {name}. Use it with backbone type={fmt.backbone!r}, or give '
            f'{name} weights.')
    source = state if selected else strip_prefixes(fmt.select(ckpt), ['module.'])
    result = fmt.convert(to_tensors(source)).check(f'{name}: {checkpoint!r} ({fmt.description})')
    print_log(f'{name}: {checkpoint!r} is a {fmt.description} checkpoint; converted '
              f'{len(result.state_dict)} tensors' + (f', dropped {len(result.dropped)} '
                                                     f'non-backbone keys' if result.dropped else ''),
              logger='current', level=logging.INFO)
    return result.state_dict, fmt, ''


def load_pretrained(model: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                    map_location: str = 'cpu', min_loaded_ratio: Optional[float] = None,
                    sha256: Optional[str] = None) -> Dict[str, List[str]]:
    """Load weights into a backbone and report what matched (see ``BaseBackbone.load_pretrained``).

    Returns:
        dict: ``missing``, ``unexpected`` and ``shape_mismatch`` key lists, and ``source``: the
        format the file was converted from (``'mmbackbones'`` when it needed no conversion).
    """
    from mmbackbones.converters.core import extract_state_dict, strip_prefixes
    from mmbackbones.weights import is_named, load_named
    name = type(model).__name__
    ratio = model.default_min_loaded_ratio if min_loaded_ratio is None else min_loaded_ratio
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f'{name}: init_cfg checkpoint must be a path, URL or mmbackbones:// name, '
                        f'got {type(checkpoint).__name__}.')
    checkpoint = os.fspath(checkpoint)
    own = model.state_dict()
    note, fmt = '', None
    if is_named(checkpoint):
        if prefix:
            raise ValueError(f'{name}: prefix={prefix!r} does not apply to {checkpoint}, which '
                             f'holds the backbone weights alone; remove prefix from init_cfg.')
        state, info = load_named(checkpoint, model, sha256)
        source = info['format'] if info['converted'] else 'mmbackbones'  # else the model's keys
        state = model.map_checkpoint_keys(dict(state))
    else:
        ckpt = _read(checkpoint, map_location, sha256)
        if not isinstance(ckpt, Mapping):
            raise TypeError(f'{name}: {checkpoint!r} holds a {type(ckpt).__name__}, not a dict '
                            f'of weights.')
        state = extract_state_dict(ckpt)
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not selected:
                raise RuntimeError(f'{name}: no key of {checkpoint!r} starts with prefix '
                                   f'{prefix!r}; its keys look like {sample_keys(state)}.')
            state = selected
        state = strip_prefixes(state, ['module.'])
        state = model.map_checkpoint_keys(state)
        source = 'mmbackbones'
        if _own_share(state, own) < OWN_FORMAT_SHARE:
            state, fmt, note = _convert_source(model, ckpt, state, checkpoint, bool(prefix))
            if fmt is not None:
                source = fmt.name
                state = model.map_checkpoint_keys(state)

    state = model._adapt_input_conv(state, own)
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    report = dict(
        missing=sorted(k for k in own if k not in loadable),
        unexpected=sorted(k for k in state if k not in own),
        shape_mismatch=sorted(f'{k}: checkpoint {tuple(state[k].shape)} vs model '
                              f'{tuple(own[k].shape)}'
                              for k in state if k in own and k not in loadable))
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    loaded = sum(params[k].numel() for k in loadable if k in params)
    share = loaded / total if total else 1.0
    summary = (f'{name}: loaded {len(loadable)}/{len(own)} tensors ({share:.1%} of parameter '
               f'elements) from {checkpoint!r}' + (f' (converted from {source})'
                                                   if source != 'mmbackbones' else ''))
    details = []
    for key in ('missing', 'unexpected', 'shape_mismatch'):
        if report[key]:
            details.append(f'{key} ({len(report[key])}): {sample_keys(report[key], 8)}')
    if details and fmt is not None and fmt.hint:
        details.append(f'note: {fmt.hint}')
    if share < ratio:
        hint = prefix_hint(state, own)
        raise RuntimeError(f'{summary}, below min_loaded_ratio={ratio}. Refusing to train from '
                           f'a mostly random backbone. ' + '; '.join(details) + (
                               f'. {hint}' if hint else '. Is it a checkpoint of this family and '
                               'arch?') + (f' {note}' if note else ''))
    model.load_state_dict(loadable, strict=False)
    print_log(summary + ('; ' + '; '.join(details) if details else ''), logger='current',
              level=logging.WARNING if details else logging.INFO)
    model._is_init = True
    report['source'] = source
    return report


def first_conv(model: nn.Module) -> Optional[nn.Conv2d]:
    """The first ``nn.Conv2d`` in forward order (stem, then stages), not registration order."""
    return next((m for part in model._pipeline() for m in part.modules()
                 if isinstance(m, nn.Conv2d)), None)


def adapt_input_conv(model: nn.Module, state: StateDict, own: Mapping[str, torch.Tensor]
                     ) -> StateDict:
    """Adapt the input conv of ``state`` to the model's input channels (see load_pretrained)."""
    names = {id(m): n for n, m in model.named_modules()}
    first = first_conv(model)
    if first is None or first.groups != 1:
        return state
    key = f'{names[id(first)]}.weight'
    if key not in state or key not in own:
        return state
    src, dst = state[key], own[key]
    if src.dim() != 4 or src.shape == dst.shape or src.shape[0] != dst.shape[0] \
            or src.shape[2:] != dst.shape[2:]:
        return state
    src_ch, dst_ch = src.shape[1], dst.shape[1]
    if dst_ch == 1:
        adapted = src.sum(dim=1, keepdim=True)
        how = f'summed over its {src_ch} channels'
    else:
        index = torch.arange(dst_ch) % src_ch
        adapted = src[:, index] * (src_ch / dst_ch)
        how = f'repeated cyclically and scaled by {src_ch}/{dst_ch}'
    print_log(f'{type(model).__name__}: the checkpoint\'s input conv {key!r} is for {src_ch} '
              f'input channels, this model has {dst_ch}; its filters were {how}.',
              logger='current', level=logging.WARNING)
    return dict(state, **{key: adapted.to(src.dtype)})


__all__ = ['load_pretrained', 'adapt_input_conv', 'sample_keys', 'prefix_hint', 'OWN_FORMAT_SHARE']
