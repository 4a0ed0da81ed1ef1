"""Channel attention bricks."""
import torch
import torch.nn.functional as F
from torch import nn


class EffectiveSE(nn.Module):
    """Effective Squeeze-Excitation (eSE) from CenterMask / VoVNetV2.

    One 1x1 conv (with bias) on the globally averaged feature, gated by a hard sigmoid
    ``relu6(x + 3) / 6``, multiplies the input. Unlike SE there is no channel reduction.

    Args:
        channels (int): Input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.hardsigmoid(self.fc(x.mean((2, 3), keepdim=True)))
        return x * gate
