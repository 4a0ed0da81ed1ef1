"""Frozen BatchNorm: statistics and affine parameters as buffers (RT-DETR's ``freeze_norm``)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

#: norm types whose layers ``freeze_norm`` turns into FrozenBatchNorm2d
FREEZABLE_NORMS = ('BN', 'BN2d', 'SyncBN')


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all of them buffers.

    Nothing here is a parameter, so an optimizer never sees it and weight decay cannot move it;
    ``train()`` changes nothing. The state dict has exactly BatchNorm2d's keys (``weight``,
    ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``), so checkpoints move
    freely between a frozen and a plain model. A state dict without ``num_batches_tracked``
    (RT-DETR's own frozen-BN checkpoints) loads too: the counter means nothing when frozen.

    Args:
        num_features (int): Channels.
        eps (float): Added to the variance. Default: 1e-5.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer('weight', torch.ones(num_features))
        self.register_buffer('bias', torch.zeros(num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))
        self.register_buffer('num_batches_tracked', torch.tensor(0, dtype=torch.long))

    @classmethod
    def from_batch_norm(cls, bn: _BatchNorm) -> 'FrozenBatchNorm2d':
        """A frozen copy of ``bn`` (its current affine parameters and running statistics)."""
        reference = bn.running_mean if bn.running_mean is not None else bn.weight
        frozen = cls(bn.num_features, bn.eps)
        if reference is not None:
            frozen = frozen.to(reference.device)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
                frozen.num_batches_tracked.copy_(bn.num_batches_tracked)
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + 'num_batches_tracked'
        if key not in state_dict:
            state_dict[key] = torch.zeros_like(self.num_batches_tracked)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Inference-mode batch_norm: one fused kernel; no gradient flows to the buffers.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm in ``module`` (itself included) by a :class:`FrozenBatchNorm2d`.

    The frozen layers keep the current values. Returns the module, or its replacement when
    ``module`` itself is a BatchNorm.
    """
    if isinstance(module, _BatchNorm):
        return FrozenBatchNorm2d.from_batch_norm(module)
    for name, child in module.named_children():
        frozen: Optional[nn.Module] = freeze_batch_norm(child)
        if frozen is not child:
            setattr(module, name, frozen)
    return module


def check_freeze_norm(owner: str, freeze_norm: bool, norm_cfg: Optional[dict]) -> None:
    """``freeze_norm`` turns BatchNorms into frozen ones; any other norm type is an error."""
    if not isinstance(freeze_norm, bool):
        raise TypeError(f'{owner}: freeze_norm must be True or False, got {freeze_norm!r}.')
    norm_type = (norm_cfg or {}).get('type')
    if freeze_norm and norm_type not in FREEZABLE_NORMS:
        raise ValueError(f'{owner}: freeze_norm=True freezes BatchNorm layers, but norm_cfg type '
                         f'is {norm_type!r}; use one of {", ".join(FREEZABLE_NORMS)}, or '
                         f'freeze_norm=False.')
