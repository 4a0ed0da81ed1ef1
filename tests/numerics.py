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


#: float32 unit roundoff: the relative error of one rounded operation
FLOAT32_EPS = torch.finfo(torch.float32).eps
#: How many float32 roundings of the activation scale each conv layer may add. Measured (see
#: tests/test_numerics.py): the worst parity test (ese_vovnet99b, folded) reaches 2.3 at 1 thread
#: and 1.9 at 2, the others at most 0.72; 8 leaves 3.5x headroom.
ROUNDING_PER_LAYER = 8.0


def path_stats(model: nn.Module, x: torch.Tensor) -> Tuple[int, float]:
    """(number of conv / linear layers that ran, max |activation|) of one forward of ``model``.

    Runs the exact (unfolded) path under ``no_grad``, with a forward hook on every module: the
    depth counts the ``nn.Conv2d`` / ``nn.Linear`` modules that were called (the layers on the
    path, not the ones a config left unused); the scale is the largest absolute value of the
    input and of every tensor any module returned.
    """
    from mmbackbones.models.layers import bn_folding
    ran, scale = set(), [float(x.abs().max())]

    def hook(module, inputs, output):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            ran.add(id(module))
        outs = output if isinstance(output, (tuple, list)) else [output]
        for out in outs:
            if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
                scale.append(float(out.detach().abs().max()))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad(), bn_folding(False):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return len(ran), max(scale)


def parity_tolerance(model: nn.Module, x: torch.Tensor) -> float:
    """Largest max-abs difference from an independent implementation that is float32 rounding.

    ``ROUNDING_PER_LAYER * FLOAT32_EPS * depth * scale``, with ``depth`` and ``scale`` from
    :func:`path_stats`. Why this form: two correct implementations differ only in the order of
    their float32 sums (another kernel, memory layout, thread count, or BN folded into the conv
    weights). Each layer then adds a rounding error of a few ``eps`` relative to the activations
    it produces, and the later layers carry it on with the gain that the activations themselves
    have (the randomized weights keep that gain near 1 per layer), so at the output the errors of
    ``depth`` layers have summed up, each at most a few ``eps * scale``: linear in the depth and
    in the largest activation. With ``depth = 99`` and activations up to ~1700
    (``ese_vovnet99b``) that is ~0.17; for a 20-layer net with activations ~5 it is ~1e-4.

    A real bug is far outside: a wrong BN ``eps`` or momentum-updated statistics, a swapped or
    transposed weight, a missing activation change outputs by 1e-3 .. 1 relative to the scale,
    not 1e-7 per layer (``tests/test_numerics.py`` checks that perturbed models fail).
    """
    depth, scale = path_stats(model, x)
    return ROUNDING_PER_LAYER * FLOAT32_EPS * max(depth, 1) * scale


def assert_parity(model: nn.Module, x: torch.Tensor, expected: Sequence[torch.Tensor]) -> float:
    """``model(x)`` equals ``expected`` up to :func:`parity_tolerance` (run it under no_grad).

    Both paths are checked: the exact conv -> BN -> act path (BN folding off), which checks the
    architecture, and the default path, which folds eval-mode BN into the convs. Returns the
    exact path's max abs diff.
    """
    from mmbackbones.models.layers import bn_folding
    bound = parity_tolerance(model, x)
    with bn_folding(False):
        exact = max_abs_diff(model(x), expected)
    assert exact < bound, f'exact path: max abs diff {exact:.3g} >= {bound:.3g}'
    folded = max_abs_diff(model(x), expected)
    assert folded < bound, f'folded path: max abs diff {folded:.3g} >= {bound:.3g}'
    return exact
