"""Folding BatchNorm into convs and merging stacked linear convs (re-parameterisation).

These are exact rewrites of inference-time computation: a conv followed by an eval-mode BatchNorm
is one conv with a bias, and a conv followed by a 1x1 conv with nothing non-linear in between is
one conv. Deploy forms of re-parameterisable networks (VanillaNet, RepVGG-style blocks) are built
from them.
"""
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .frozen_batch_norm import FrozenBatchNorm2d

WeightAndBias = Tuple[torch.Tensor, torch.Tensor]


def _batch_norm_types() -> Tuple[type, ...]:
    types: List[type] = [_BatchNorm]
    try:  # mmcv's own SyncBN ('MMSyncBN') is not a _BatchNorm subclass.
        from mmcv.ops import SyncBatchNorm as MMCVSyncBatchNorm
        types.append(MMCVSyncBatchNorm)
    except ImportError:  # pragma: no cover - mmcv without ops
        pass
    return tuple(types)


#: BatchNorm-like layers that train statistics (what ``norm_eval`` puts in eval mode)
BATCH_NORM_TYPES = _batch_norm_types()


def is_batch_norm(norm: nn.Module) -> bool:
    """Whether ``norm`` normalises with per-channel running statistics (BatchNorm, SyncBN,
    mmcv's MMSyncBN, FrozenBatchNorm2d), i.e. folds into a conv in eval mode."""
    return isinstance(norm, BATCH_NORM_TYPES + (FrozenBatchNorm2d, ))


@torch.no_grad()
def fuse_conv_bn(weight: torch.Tensor, bias: Optional[torch.Tensor],
                 norm: nn.Module) -> WeightAndBias:
    """Weight and bias of one conv equal to ``norm(conv(x))`` with ``norm`` in eval mode.

    Args:
        weight (Tensor): Conv weight, ``(out, in / groups, kh, kw)``.
        bias (Tensor, optional): Conv bias, ``(out,)``; None for a bias-free conv.
        norm (nn.Module): A BatchNorm layer with running statistics over the ``out`` channels.

    Returns:
        tuple[Tensor, Tensor]: The fused weight and bias.
    """
    if not is_batch_norm(norm):
        raise TypeError(f'fuse_conv_bn: only BatchNorm layers (running statistics) can be folded '
                        f'into a conv; got {type(norm).__name__}. Use norm_cfg=dict(type="BN") '
                        f'(or SyncBN) for a model that is meant to be re-parameterised.')
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(f'fuse_conv_bn: {type(norm).__name__} has no running statistics '
                         f'(track_running_stats=False), so it cannot be folded into a conv.')
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean if bias is None else bias - norm.running_mean
    fused_bias = shift * scale
    if norm.bias is not None:
        fused_bias = fused_bias + norm.bias
    return weight * scale.reshape(-1, 1, 1, 1), fused_bias


@torch.no_grad()
def merge_conv_then_pointwise(first: WeightAndBias, pointwise: WeightAndBias) -> WeightAndBias:
    """Weight and bias of one conv equal to a conv followed by a 1x1 conv (stride 1, no padding).

    The first conv may have any kernel, stride and padding (zero padding acts on its input, so the
    bias is present on every output position) but must not be grouped.

    Args:
        first (tuple[Tensor, Tensor]): ``(out1, in, kh, kw)`` weight and ``(out1,)`` bias.
        pointwise (tuple[Tensor, Tensor]): ``(out2, out1, 1, 1)`` weight and ``(out2,)`` bias.

    Returns:
        tuple[Tensor, Tensor]: ``(out2, in, kh, kw)`` weight and ``(out2,)`` bias.
    """
    (w1, b1), (w2, b2) = first, pointwise
    if w2.shape[2:] != (1, 1) or w2.shape[1] != w1.shape[0]:
        raise ValueError(f'merge_conv_then_pointwise: the second conv must be 1x1 with '
                         f'{w1.shape[0]} input channels, got weight {tuple(w2.shape)}.')
    mixing = w2[:, :, 0, 0]
    return torch.einsum('om,mihw->oihw', mixing, w1), mixing @ b1 + b2


def conv_from_weights(weight: torch.Tensor, bias: torch.Tensor, like: nn.Conv2d) -> nn.Conv2d:
    """A biased ``nn.Conv2d`` with ``like``'s stride, padding, dilation and groups, holding
    ``weight`` and ``bias`` (on their device and dtype)."""
    conv = nn.Conv2d(like.in_channels, weight.shape[0], tuple(weight.shape[2:]), stride=like.stride,
                     padding=like.padding, dilation=like.dilation, groups=like.groups, bias=True,
                     device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


__all__ = ['is_batch_norm', 'fuse_conv_bn', 'merge_conv_then_pointwise', 'conv_from_weights']
