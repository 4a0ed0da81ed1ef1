"""Activation checkpointing for one block."""
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint


def maybe_checkpoint(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     enabled: bool) -> torch.Tensor:
    """Run ``fn(x)``, recomputing its activations in backward when ``enabled``.

    Non-reentrant checkpointing is used, so it works when ``x`` itself needs no gradient (for
    instance the first trainable stage after a frozen stem, a case mmdet's ResNet skips) and it
    gives the same gradients as the plain call. It only applies while autograd is recording.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, x, use_reentrant=False)
    return fn(x)
