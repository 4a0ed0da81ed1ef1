"""huawei-noah/VanillaNet checkpoints (train form or deploy form) -> mmbackbones ``VanillaNet``.

Train-form keys (``stem1``, ``stem2``, ``stages.i.conv1/conv2``) become our ``ConvModule`` names;
deploy-form keys (``stem.0``, ``stem.1``, ``stages.i.conv``, ``stages.i.act``) are already ours.
An older official deploy form kept the stem's two convs apart (``stem.0`` 4x4, ``stem.1`` 1x1,
``stem.2`` activation); they are merged here, exactly, into the current form. The classifier
(``cls*``) is dropped.
"""
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..models.layers.conv_fusion import merge_conv_then_pointwise
from .core import ConversionError, ConversionResult, StateDict, apply_rules, strip_prefixes

_BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'

TRAIN_RULES = [
    (r'stem1\.0\.(weight|bias)', r'stem.0.conv.\1'),
    (rf'stem1\.1\.{_BN}', r'stem.0.bn.\1'),
    (r'stem2\.0\.(weight|bias)', r'stem.2.conv.\1'),
    (rf'stem2\.1\.{_BN}', r'stem.2.bn.\1'),
    (r'stem2\.2\.weight', r'stem.3.weight'),
    (rf'stem2\.2\.bn\.{_BN}', r'stem.3.bn.\1'),
    (r'stages\.(\d+)\.(conv[12])\.0\.(weight|bias)', r'stages.\1.\2.conv.\3'),
    (rf'stages\.(\d+)\.(conv[12])\.1\.{_BN}', r'stages.\1.\2.bn.\3'),
    (r'stages\.(\d+)\.act\.weight', r'stages.\1.act.weight'),
    (rf'stages\.(\d+)\.act\.bn\.{_BN}', r'stages.\1.act.bn.\2'),
]
DEPLOY_RULES = [
    (r'stem\.([01])\.(weight|bias)', r'stem.\1.\2'),
    (r'stages\.(\d+)\.(conv|act)\.(weight|bias)', r'stages.\1.\2.\3'),
]
#: the ImageNet classifier, in either form
DROP = [r'cls[12]?\.\d+\.\w+(\.\w+)?', r'head\.\w+']
#: checkpoint entries holding weights, in the order ``weights='auto'`` tries them
WEIGHT_KEYS = ('model_ema', 'model', 'state_dict')


def select_weights(checkpoint: Mapping, weights: str = 'auto') -> Tuple[StateDict, str]:
    """The state dict inside an official checkpoint and the entry it came from.

    ``weights='auto'`` takes ``model_ema`` when present (what the official detection code loads),
    else ``model``, else ``state_dict``, else the mapping itself (a bare state dict).
    """
    if weights not in ('auto', ) + WEIGHT_KEYS:
        raise ValueError(f'VanillaNet converter: weights={weights!r} is unknown; choose auto, '
                         f'{", ".join(WEIGHT_KEYS)}.')
    if weights != 'auto':
        if not isinstance(checkpoint.get(weights), Mapping):
            found = [k for k in WEIGHT_KEYS if isinstance(checkpoint.get(k), Mapping)]
            raise ConversionError(f'VanillaNet converter: the checkpoint has no {weights!r} entry; '
                                  f'it has {found or "none of " + ", ".join(WEIGHT_KEYS)}.')
        return dict(checkpoint[weights]), weights
    for key in WEIGHT_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            return dict(checkpoint[key]), key
    return dict(checkpoint), 'state dict'


def _merge_split_deploy_stem(state: StateDict) -> StateDict:
    """Older deploy form: stem.0 (4x4) + stem.1 (1x1) + stem.2 (act) -> stem.0 + stem.1."""
    w1 = state.get('stem.1.weight')
    if 'stem.2.weight' not in state or w1 is None or w1.shape[2:] != (1, 1):
        return state
    state = dict(state)
    weight, bias = merge_conv_then_pointwise(
        (state.pop('stem.0.weight'), state.pop('stem.0.bias')),
        (state.pop('stem.1.weight'), state.pop('stem.1.bias')))
    state['stem.0.weight'], state['stem.0.bias'] = weight, bias
    state['stem.1.weight'] = state.pop('stem.2.weight')
    state['stem.1.bias'] = state.pop('stem.2.bias')
    return state


def is_deploy_form(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a (source or converted) VanillaNet state dict is in deploy form."""
    return any(re.fullmatch(r'stages\.\d+\.conv\.weight|stem\.0\.weight', k) for k in state_dict)


def convert_vanillanet_official(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert an official VanillaNet state dict, train or deploy form, to ours (same form)."""
    state = strip_prefixes(state_dict, ('module.', ))
    if is_deploy_form(state):
        return apply_rules(_merge_split_deploy_stem(state), DEPLOY_RULES, drop=DROP)
    return apply_rules(state, TRAIN_RULES, drop=DROP)


def arch_from_state_dict(state_dict: Mapping[str, torch.Tensor],
                         strides: Optional[Sequence[int]] = None,
                         arch: Optional[str] = None) -> Tuple[Dict, List[str]]:
    """The ``arch`` of converted VanillaNet weights and the named variants whose widths they have.

    Widths and ``act_num`` are read off the weights; block strides and ``ada_pool`` are not in
    them, so they come from ``arch`` (a named variant), ``strides``, or the one named variant
    (without ada_pool) with these widths.
    """
    from mmbackbones.models.backbones.vanillanet import VANILLANET_ARCHS
    blocks = sorted({int(m[1]) for k in state_dict
                     for m in [re.fullmatch(r'stages\.(\d+)\.act\.weight', k)] if m})
    if not blocks or blocks != list(range(len(blocks))):
        raise ConversionError('VanillaNet converter: no (or non-contiguous) stages.N.act.weight '
                              'keys; is this a VanillaNet checkpoint?')
    stem = state_dict.get('stem.0.conv.weight', state_dict.get('stem.0.weight'))
    acts = [state_dict[f'stages.{i}.act.weight'] for i in blocks]
    dims = [int(stem.shape[0])] + [int(a.shape[0]) for a in acts]
    act_num = (int(acts[0].shape[-1]) - 1) // 2
    same_widths = [n for n, s in VANILLANET_ARCHS.items() if s['dims'] == dims]
    if arch is not None:
        if arch not in VANILLANET_ARCHS:
            raise ConversionError(f'VanillaNet converter: arch {arch!r} is unknown; choose one of '
                                  f'{", ".join(VANILLANET_ARCHS)}.')
        if VANILLANET_ARCHS[arch]['dims'] != dims:
            raise ConversionError(f'VanillaNet converter: the weights have widths {dims}, arch '
                                  f'{arch!r} has {VANILLANET_ARCHS[arch]["dims"]}.')
        spec = dict(VANILLANET_ARCHS[arch])
    elif strides is not None:
        spec = dict(dims=dims, strides=list(strides))
    else:
        plain = [n for n in same_widths if not VANILLANET_ARCHS[n].get('ada_pool')]
        if not plain:
            raise ConversionError(f'VanillaNet converter: widths {dims} match no named variant; '
                                  f'give the block strides (--strides, {len(dims) - 1} values).')
        spec = dict(VANILLANET_ARCHS[plain[0]])
    spec['act_num'] = act_num
    return spec, same_widths


__all__ = ['convert_vanillanet_official', 'select_weights', 'arch_from_state_dict',
           'is_deploy_form', 'TRAIN_RULES', 'DEPLOY_RULES']
