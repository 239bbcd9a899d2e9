"""Feature-wise modules for sparse tensors: BatchNorm, GELU, Linear, layer scale, DropPath, sums.

They act on ``x.features`` (N, C) and keep the coordinates (and their kernel-map cache). Each also
accepts a plain ``(N, C)`` tensor. BatchNorm and Linear subclass their ``torch.nn`` counterparts, so
BN folding and state dicts work as for dense layers (the Linear weight is ``(out, in)``).
"""
from __future__ import annotations

import torch
from torch import nn

from .tensor import SparseTensor

__all__ = ["SparseBatchNorm", "SparseGELU", "SparseLinear", "SparseLayerScale", "SparseDropPath", "FeatureWise",
           "sparse_add", "drop_path_per_sample"]


def _map_features(x, fn):
    if isinstance(x, SparseTensor):
        return x.replace_feature(fn(x.features))
    return fn(x)


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the features of all active voxels (``BatchNorm1d`` on ``(N, C)``).

    An empty tensor passes through unchanged (and leaves the running statistics alone).
    """

    def forward(self, x):
        feats = x.features if isinstance(x, SparseTensor) else x
        if feats.shape[0] == 0:
            return x
        return _map_features(x, super().forward)


class SparseGELU(nn.GELU):
    """GELU (exact erf form by default) on the features."""

    def forward(self, x):
        return _map_features(x, super().forward)


class SparseLinear(nn.Linear):
    """Per-voxel linear map (a 1x1x1 conv); ``weight`` is ``(out_features, in_features)``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs):
        super().__init__(in_features, out_features, bias=bias, **kwargs)

    @property
    def in_channels(self) -> int:
        return self.in_features

    @property
    def out_channels(self) -> int:
        return self.out_features

    def forward(self, x):
        return _map_features(x, super().forward)


class SparseLayerScale(nn.Module):
    """Per-channel learnable scale ``gamma`` on the features (CaiT / ConvNeXt layer scale)."""

    def __init__(self, dim: int, init_value: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x):
        return _map_features(x, lambda f: f * self.gamma)

    def extra_repr(self) -> str:
        return f"dim={self.gamma.shape[0]}"


def drop_path_per_sample(x: SparseTensor, p: float, training: bool) -> SparseTensor:
    """Stochastic depth per sample: zeroes every voxel of a dropped batch index, rescales the rest.

    One Bernoulli draw per batch index (not per voxel), so a whole scene's residual branch is
    dropped together, as DropPath does for images.
    """
    if p == 0.0 or not training:
        return x
    if not isinstance(x, SparseTensor):
        raise TypeError(f"per-sample DropPath needs a SparseTensor (batch indices), got {type(x).__name__}")
    keep = 1.0 - p
    mask = x.features.new_empty(x.batch_size).bernoulli_(keep).div_(keep)  # (B,)
    return x.replace_feature(x.features * mask[x.indices[:, 0].long()][:, None])


class SparseDropPath(nn.Module):
    """Per-sample stochastic depth for sparse tensors (see :func:`drop_path_per_sample`)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        return drop_path_per_sample(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FeatureWise(nn.Module):
    """Applies any ``(N, C) -> (N, C')`` module (LayerNorm, Dropout, an MLP, ...) to the features."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return _map_features(x, self.module)


def sparse_add(x: SparseTensor, y: SparseTensor) -> SparseTensor:
    """Residual sum of two sparse tensors with the same coordinates (raises ``ValueError`` otherwise)."""
    if not isinstance(x, SparseTensor) or not isinstance(y, SparseTensor):
        raise TypeError(f"sparse_add takes two SparseTensors, got {type(x).__name__} and {type(y).__name__}")
    return x + y
