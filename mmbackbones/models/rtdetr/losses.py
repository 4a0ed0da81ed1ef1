# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RT-DETR's IoU-aware varifocal loss.

mmdet's ``VarifocalLoss`` weighs a matched query whose box does not overlap its target (IoU 0)
as a negative and lets the gradient flow through its weight; RT-DETR weighs every entry of the
matched class by the IoU (0 there) and detaches the weight, so this is a loss of its own.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class RTDETRVarifocalLoss(nn.Module):
    """``BCE(logit, score) * w`` summed and divided by ``avg_factor``, with the detached weight
    ``w = alpha * sigmoid(logit) ** gamma`` off the matched class and ``w = score`` (the IoU of
    the matched box) on it.

    Args:
        alpha (float): Weight of the negatives. Default: 0.75.
        gamma (float): Focusing exponent. Default: 2.0.
        loss_weight (float): Default: 1.0.
    """

    def __init__(self, alpha: float = 0.75, gamma: float = 2.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.loss_weight = loss_weight

    def forward(self, logits: torch.Tensor, scores: torch.Tensor, positive: torch.Tensor,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """``logits`` ``(..., C)``; ``scores`` the IoU targets (0 off the matched class);
        ``positive`` the one-hot matched class."""
        positive = positive.to(logits.dtype)
        weight = self.alpha * logits.detach().sigmoid().pow(self.gamma) * (1 - positive) + scores
        loss = F.binary_cross_entropy_with_logits(logits, scores, weight=weight.detach(),
                                                  reduction='sum')
        if avg_factor is not None:
            loss = loss / avg_factor
        return loss * self.loss_weight
