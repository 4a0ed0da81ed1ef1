"""Numerical helpers shared by parity tests."""
from typing import Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def randomize(model: nn.Module, seed: int = 0, weighted: Tuple[type, ...] = ()) -> nn.Module:
    """Random weights and random BatchNorm statistics, so parity tests exercise every tensor.

    Convs get small random weights (scaled by fan-in so activations stay O(1) through deep
    nets); BN gets random affine parameters and running statistics and a zero batch counter
    (so a meta-built, ``to_empty`` model is fully defined too). ``weighted``: further module
    types with a conv-like ``weight`` (and optional ``bias``) to fill the same way.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.num_batches_tracked.zero_()
            elif isinstance(module, (nn.Conv2d, nn.Linear) + tuple(weighted)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen)
                                    * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return model


def max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    assert len(a) == len(b), f'{len(a)} outputs vs {len(b)}'
    diffs = []
    for x, y in zip(a, b):
        assert x.shape == y.shape, f'{tuple(x.shape)} vs {tuple(y.shape)}'
        diffs.append((x - y).abs().max().item())
    return max(diffs)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_parity(model: nn.Module, x: torch.Tensor, expected: Sequence[torch.Tensor],
                  atol: float = 1e-5, rtol: float = 1e-5) -> float:
    """``model(x)`` equals ``expected`` (run it under ``torch.no_grad``).

    The exact conv -> BN -> act path (BN folding off) must be within ``atol``: that checks the
    architecture. The default path, which folds eval-mode BN into the convs, may add float32
    rounding relative to the activations: within ``atol + rtol * max|expected|``.
    Returns the exact path's max abs diff.
    """
    from mmbackbones.models.layers import bn_folding
    with bn_folding(False):
        exact = max_abs_diff(model(x), expected)
    assert exact < atol, f'exact path: max abs diff {exact:.3g} >= {atol:g}'
    folded = max_abs_diff(model(x), expected)
    bound = atol + rtol * max(e.abs().max().item() for e in expected)
    assert folded < bound, f'folded path: max abs diff {folded:.3g} >= {bound:.3g}'
    return exact
