"""Small shared layers: per-channel layer scale and per-sample stochastic depth."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerScale", "DropPath", "drop_path"]


class LayerScale(nn.Module):
    """Per-channel learnable scale ``gamma`` (CaiT/ConvNeXt layer scale).

    Args:
        dim: number of channels.
        init_value: initial value of every ``gamma`` entry.
        channel_dim: which axis holds channels (1 for channels-first conv features, -1 for tokens).
    """

    def __init__(self, dim: int, init_value: float = 1e-6, channel_dim: int = 1):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_dim in (-1, x.ndim - 1):
            return x * self.gamma
        shape = [1] * x.ndim
        shape[self.channel_dim] = -1
        return x * self.gamma.view(shape)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zeroes whole samples with probability ``p`` and rescales the survivors by ``1 / (1 - p)``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth per sample (the residual branch of a sample is dropped as a whole)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
