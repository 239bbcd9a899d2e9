"""Baselines re-implemented for the identical protocol: DLinear and PatchTST.

Both are written from their papers' descriptions (no code copied) so that they can be trained and scored by
exactly the same data pipeline, splitter, scaler and metric code as FFNet-TS. gluonts ships estimators of the
same names, but they are probabilistic variants (Student-t head, NLL loss, mean scaling, sampled windows);
their numbers are not comparable to Look-Back-96 tables.

* DLinear (Zeng et al., AAAI 2023, arXiv 2205.13504): moving-average (kernel 25) trend/remainder
  decomposition, one shared Linear(L -> H) per component, summed.
* PatchTST (Nie et al., ICLR 2023, arXiv 2211.14730), supervised, channel-independent: RevIN (no affine),
  patches of 16 with stride 8 (end padding by replicating the last value), linear patch embedding plus a
  learned positional table, a post-norm Transformer encoder with BatchNorm and residual attention scores,
  a flatten head.

All models map x (B, L, C) -> (B, H, C).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RevIN(nn.Module):
    """Reversible instance normalization without affine parameters (per sample and variable, over time)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def norm(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        mean = x.mean(dim=1, keepdim=True).detach()  # (B, 1, C)
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        return (x - mean) / std, (mean, std)

    @staticmethod
    def denorm(y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mean, std = stats
        return y * std + mean


class DLinear(nn.Module):
    """DLinear: x = trend + remainder; forecast = Linear_t(trend) + Linear_r(remainder), shared over variables."""

    def __init__(self, lookback: int, horizon: int, n_vars: int, kernel_size: int = 25):
        super().__init__()
        self.kernel_size = kernel_size
        self.trend = nn.Linear(lookback, horizon)
        self.remainder = nn.Linear(lookback, horizon)

    def moving_average(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.kernel_size - 1) // 2
        xt = x.transpose(1, 2)  # (B, C, L)
        xt = torch.cat([xt[..., :1].expand(-1, -1, pad), xt, xt[..., -1:].expand(-1, -1, pad)], dim=-1)
        return F.avg_pool1d(xt, self.kernel_size, stride=1)  # (B, C, L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trend = self.moving_average(x)  # (B, C, L)
        remainder = x.transpose(1, 2) - trend
        return (self.trend(trend) + self.remainder(remainder)).transpose(1, 2)  # (B, H, C)


class _BatchNormTokens(nn.Module):
    """BatchNorm1d over the feature axis of a (B, N, D) token tensor."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


class _ResidualAttentionLayer(nn.Module):
    """Post-norm encoder layer whose pre-softmax scores are passed on to (and added in) the next layer."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = _BatchNormTokens(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm2 = _BatchNormTokens(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.num_heads)  # (B, h, N, N)
        if prev is not None:
            scores = scores + prev
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = self.norm1(x + self.drop(self.proj(out)))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return x, scores


class PatchTST(nn.Module):
    """Supervised, channel-independent PatchTST with a flatten head."""

    def __init__(self, lookback: int, horizon: int, n_vars: int, patch_len: int = 16, stride: int = 8,
                 dim: int = 16, depth: int = 3, num_heads: int = 4, ffn_dim: int = 128, dropout: float = 0.3,
                 head_dropout: float = 0.0):
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.num_patches = (lookback - patch_len) // stride + 2  # +1 from the end padding by `stride`
        self.revin = RevIN()
        self.embed = nn.Linear(patch_len, dim)
        self.pos = nn.Parameter(torch.empty(self.num_patches, dim).uniform_(-0.02, 0.02))
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(_ResidualAttentionLayer(dim, num_heads, ffn_dim, dropout) for _ in range(depth))
        self.head = nn.Sequential(nn.Flatten(-2), nn.Linear(dim * self.num_patches, horizon), nn.Dropout(head_dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, stats = self.revin.norm(x)
        b, _, c = x.shape
        z = x.transpose(1, 2)  # (B, C, L)
        z = torch.cat([z, z[..., -1:].expand(-1, -1, self.stride)], dim=-1)  # (B, C, L + S)
        z = z.unfold(-1, self.patch_len, self.stride)  # (B, C, N, P)
        z = self.drop(self.embed(z) + self.pos).reshape(b * c, self.num_patches, -1)  # (B*C, N, D)
        prev = None
        for layer in self.layers:
            z, prev = layer(z, prev)
        z = z.reshape(b, c, self.num_patches, -1).transpose(2, 3)  # (B, C, D, N)
        y = self.head(z).transpose(1, 2)  # (B, H, C)
        return self.revin.denorm(y, stats)
