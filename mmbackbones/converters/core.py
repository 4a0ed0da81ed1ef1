"""Shared machinery of the checkpoint converters.

A converter is a pure function from a source state dict to an mmbackbones state dict, driven by
rename rules (data, not chains of ifs). Every source key must be used by some rule or be listed
as deliberately dropped (a classifier head, say); anything else is reported as unused, and a
result that leaves keys unused or does not fill the target model is refused unless the caller
explicitly allows a partial result.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

StateDict = Dict[str, torch.Tensor]
#: (pattern, replacement): ``re.fullmatch`` on the source key, ``Match.expand``-style
#: replacement, or a callable taking the match and returning the new key.
Rule = Tuple[str, Union[str, Callable[['re.Match'], str]]]


class ConversionError(ValueError):
    """A checkpoint could not be converted completely; the message says what is left over."""


@dataclass
class ConversionResult:
    state_dict: StateDict
    unused: List[str] = field(default_factory=list)  # source keys no rule took
    dropped: List[str] = field(default_factory=list)  # source keys deliberately left out

    def check(self, source: str, allow_partial: bool = False) -> 'ConversionResult':
        if self.unused and not allow_partial:
            raise ConversionError(
                f'{source}: {len(self.unused)} checkpoint keys match no conversion rule, e.g. '
                f'{", ".join(self.unused[:5])}. Is this a checkpoint of that source and family? '
                f'Pass allow_partial=True (--allow-partial) to write the rest anyway.')
        if not self.state_dict:
            raise ConversionError(f'{source}: no key of the checkpoint was converted.')
        return self


def apply_rules(state_dict: Mapping[str, torch.Tensor], rules: Sequence[Rule],
                drop: Sequence[str] = ()) -> ConversionResult:
    """Rename every key by the first rule whose pattern fully matches it."""
    compiled = [(re.compile(p), r) for p, r in rules]
    dropped_res = [re.compile(p) for p in drop]
    out: StateDict = {}
    unused, dropped = [], []
    for key, value in state_dict.items():
        if any(d.fullmatch(key) for d in dropped_res):
            dropped.append(key)
            continue
        for pattern, repl in compiled:
            match = pattern.fullmatch(key)
            if match:
                new_key = repl(match) if callable(repl) else match.expand(repl)
                if new_key in out:
                    raise ConversionError(f'two checkpoint keys map to {new_key!r}; the rules '
                                          f'are ambiguous for this checkpoint.')
                out[new_key] = value
                break
        else:
            unused.append(key)
    return ConversionResult(out, unused, dropped)


def add_num_batches_tracked(state_dict: StateDict) -> StateDict:
    """Fill BatchNorm ``num_batches_tracked`` buffers that frozen-BN or timm checkpoints lack."""
    for key in [k for k in state_dict if k.endswith('.running_mean')]:
        state_dict.setdefault(key[:-len('running_mean')] + 'num_batches_tracked',
                              torch.tensor(0, dtype=torch.long))
    return state_dict


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> StateDict:
    """Remove the first of ``prefixes`` that every key carrying one starts with."""
    for prefix in prefixes:
        if state_dict and any(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
    return dict(state_dict)


def to_tensors(state_dict: Mapping[str, object]) -> StateDict:
    """Numpy arrays (detectron2 .pkl checkpoints) become tensors; other values must be tensors."""
    out: StateDict = {}
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor):
            out[key] = value
        elif hasattr(value, '__array__'):
            out[key] = torch.as_tensor(value)
        else:
            raise ConversionError(f'checkpoint entry {key!r} is a {type(value).__name__}, not a '
                                  f'tensor; pass the model weights, not a training state.')
    return out


def check_against_model(state_dict: StateDict, model: nn.Module, source: str,
                        allow_partial: bool = False) -> Dict[str, List[str]]:
    """Compare a converted state dict with the model it is meant for (names and shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f'{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}'
                  for k in state_dict if k in own and state_dict[k].shape != own[k].shape]
    report = dict(missing=missing, unexpected=unexpected, shape_mismatch=mismatched)
    if (missing or unexpected or mismatched) and not allow_partial:
        parts = [f'{name} ({len(keys)}): {", ".join(keys[:4])}' for name, keys in report.items()
                 if keys]
        raise ConversionError(f'{source}: the converted weights do not fill the target model '
                              f'exactly: {"; ".join(parts)}. Check the arch, or pass '
                              f'--allow-partial.')
    return report


def extract_state_dict(ckpt: object, entries: Sequence[str] = ('state_dict', 'model')
                       ) -> Dict[str, torch.Tensor]:
    """The weights inside a checkpoint: its first ``entries`` entry that is a dict (by default
    ``state_dict``, then ``model``), or the checkpoint itself."""
    if not isinstance(ckpt, Mapping):
        raise TypeError(f'expected a checkpoint dict, got {type(ckpt).__name__}.')
    for key in entries:
        if isinstance(ckpt.get(key), Mapping):
            return dict(ckpt[key])
    return dict(ckpt)


@dataclass(frozen=True)
class SourceFormat:
    """How to recognise one source's checkpoints, and the converter that reads them.

    Attributes:
        name: short id, e.g. ``'vovnet-detectron2'`` (the weights registry refers to it).
        description: what the checkpoints are, for messages.
        backbone: the mmbackbones backbone type the converter produces.
        convert: the converter (state dict -> :class:`ConversionResult`).
        signature: regexes; a state dict is of this format when each one fully matches at
            least one of its keys.
        entries: where the weights sit inside a checkpoint file, tried in order (else the file
            is the state dict itself).
        hint: what the converted weights need from the backbone config, said when they do not
            fill it.
    """
    name: str
    description: str
    backbone: str
    convert: Callable[[Mapping[str, torch.Tensor]], ConversionResult]
    signature: Tuple[str, ...]
    entries: Tuple[str, ...] = ('state_dict', 'model')
    hint: str = ''

    def select(self, ckpt: Mapping) -> StateDict:
        """The state dict of this format inside a checkpoint (or the checkpoint itself)."""
        return extract_state_dict(ckpt, self.entries)

    def recognises(self, state_dict: Mapping[str, object]) -> bool:
        return all(any(re.fullmatch(pattern, key) for key in state_dict)
                   for pattern in self.signature)


def recognise(ckpt: Mapping, formats: Iterable[SourceFormat]) -> List[SourceFormat]:
    """Every format in ``formats`` whose signature the checkpoint's state dict matches."""
    return [fmt for fmt in formats if fmt.recognises(fmt.select(ckpt))]


def describe_formats(formats: Iterable[SourceFormat]) -> str:
    """``'name (description), ...'`` for messages that list the formats tried."""
    return '; '.join(f'{fmt.name} ({fmt.description})' for fmt in formats)


def load_source_checkpoint(path: str) -> StateDict:
    """Load a source checkpoint with mmbackbones' weights-only loader and unwrap common containers.

    The loader (:func:`mmbackbones.engine.checkpoint.load_checkpoint_weights_only`) refuses
    pickled code and checks everything that is not a tensor; its refusals and the errors for
    truncated files become :class:`ConversionError` with the path and the reason.
    """
    from mmbackbones.engine.checkpoint import CheckpointLoadError, load_checkpoint_weights_only
    try:
        ckpt = load_checkpoint_weights_only(path, map_location='cpu')
    except FileNotFoundError:
        raise
    except CheckpointLoadError as err:
        raise ConversionError(f'{path}: cannot be read as a weights-only checkpoint ({err}). '
                              f'It may be truncated, or carry pickled code; re-save its plain '
                              f'state dict with a trusted tool.') from None
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f'{path}: expected a dict of weights, got {type(ckpt).__name__}.')
    return to_tensors(extract_state_dict(ckpt))
