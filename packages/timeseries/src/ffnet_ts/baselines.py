"""Baselines re-implemented for the identical protocol: DLinear and PatchTST.

Both are written from their papers' descriptions (no code copied) so that they can be trained and scored by
exactly the same data pipeline, splitter, scaler and metric code as FFNet-TS. gluonts ships estimators of the
same names, but they are probabilistic variants (Student-t head, NLL loss, mean scaling, sampled windows);
their numbers are not comparable to Look-Back-96 tables.

* DLinear (Zeng et al., AAAI 2023, arXiv 2205.13504): moving-average (kernel 25) trend/remainder
  decomposition, one shared Linear(L -> H) per component, summed.
  ``average_init=True`` starts both maps at the uniform average 1/L, as Time-Series-Library's DLinear does.
* PatchTST (Nie et al., ICLR 2023, arXiv 2211.14730), supervised, channel-independent: RevIN (no affine),
  patches of 16 with stride 8 (end padding by replicating the last value), linear patch embedding plus a
  learned positional table, a post-norm Transformer encoder with BatchNorm and residual attention scores,
  a flatten head. ``style="tslib"`` builds the variant that Time-Series-Library's lookback-96 scripts train
  (its ``models/PatchTST.py``): bias-free patch embedding plus fixed sinusoidal positions, post-norm
  LayerNorm encoder layers with attention dropout and no residual attention scores, a final BatchNorm.
* iTransformer (Liu et al., ICLR 2024, arXiv 2310.06625): the series of each variate is one token. Inverted
  embedding Linear(L -> D) + dropout, a post-norm Transformer encoder (LayerNorm; attention across the
  variate tokens, FFN over D), a final LayerNorm, a Linear(D -> H) projector per token; the non-stationary
  normalization of its code (per sample and variate: subtract the mean, divide by sqrt(var + 1e-5),
  undone on the output). Deliberate difference: the official code appends the window's calendar features
  (4-5 ``timeF`` covariates) as extra tokens; our data pipeline feeds every model values only, so there are
  none here. Without positional information the model is permutation-equivariant over variates.

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

    def __init__(self, lookback: int, horizon: int, n_vars: int, kernel_size: int = 25, average_init: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.trend = nn.Linear(lookback, horizon)
        self.remainder = nn.Linear(lookback, horizon)
        if average_init:  # Time-Series-Library's init: every output starts as the window mean (biases stay default)
            with torch.no_grad():
                self.trend.weight.fill_(1.0 / lookback)
                self.remainder.weight.fill_(1.0 / lookback)

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


class _PostNormEncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer of the Informer/TSLib lineage (used by iTransformer and TSLib's PatchTST).

    x = norm1(x + drop(MHA(x))); x = norm2(x + drop(W2 drop(act(W1 x)))). Attention dropout acts on the
    softmax weights. ``norm`` is ``"layer"`` (LayerNorm over D) or ``"batch"`` (BatchNorm over D and tokens).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, norm: str = "layer"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.attn_drop = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)  # the q, k, v projections stacked (same parameters as three Linears)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        make = (lambda: nn.LayerNorm(dim)) if norm == "layer" else (lambda: _BatchNormTokens(dim))
        self.norm1, self.norm2 = make(), make()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d/h)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = self.norm1(x + self.drop(self.proj(out.transpose(1, 2).reshape(b, n, d))))
        y = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        return self.norm2(x + y)


def _sincos_positions(n: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal position table (n, dim) of "Attention is all you need"."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


class PatchTST(nn.Module):
    """Supervised, channel-independent PatchTST with a flatten head.

    Args:
        style: ``"paper"`` (PatchTST's own encoder: BatchNorm layers, residual attention, learned positions) or
            ``"tslib"`` (the encoder of Time-Series-Library's lookback-96 runs; see the module docstring).
    """

    def __init__(self, lookback: int, horizon: int, n_vars: int, patch_len: int = 16, stride: int = 8,
                 dim: int = 16, depth: int = 3, num_heads: int = 4, ffn_dim: int = 128, dropout: float = 0.3,
                 head_dropout: float = 0.0, style: str = "paper"):
        super().__init__()
        if style not in ("paper", "tslib"):
            raise ValueError(f"unknown PatchTST style {style!r} (paper or tslib)")
        self.patch_len, self.stride, self.style = patch_len, stride, style
        self.num_patches = (lookback - patch_len) // stride + 2  # +1 from the end padding by `stride`
        self.revin = RevIN()
        self.drop = nn.Dropout(dropout)
        if style == "paper":
            self.embed = nn.Linear(patch_len, dim)
            self.pos = nn.Parameter(torch.empty(self.num_patches, dim).uniform_(-0.02, 0.02))
            self.layers = nn.ModuleList(_ResidualAttentionLayer(dim, num_heads, ffn_dim, dropout) for _ in range(depth))
            self.norm = nn.Identity()
        else:
            self.embed = nn.Linear(patch_len, dim, bias=False)
            self.register_buffer("pos", _sincos_positions(self.num_patches, dim), persistent=False)
            self.layers = nn.ModuleList(_PostNormEncoderLayer(dim, num_heads, ffn_dim, dropout, "layer")
                                        for _ in range(depth))
            self.norm = _BatchNormTokens(dim)
        self.head = nn.Sequential(nn.Flatten(-2), nn.Linear(dim * self.num_patches, horizon), nn.Dropout(head_dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, stats = self.revin.norm(x)
        b, _, c = x.shape
        z = x.transpose(1, 2)  # (B, C, L)
        z = torch.cat([z, z[..., -1:].expand(-1, -1, self.stride)], dim=-1)  # (B, C, L + S)
        z = z.unfold(-1, self.patch_len, self.stride)  # (B, C, N, P)
        z = self.drop(self.embed(z) + self.pos).reshape(b * c, self.num_patches, -1)  # (B*C, N, D)
        if self.style == "paper":
            prev = None
            for layer in self.layers:
                z, prev = layer(z, prev)
        else:
            for layer in self.layers:
                z = layer(z)
        z = self.norm(z)
        z = z.reshape(b, c, self.num_patches, -1).transpose(2, 3)  # (B, C, D, N)
        y = self.head(z).transpose(1, 2)  # (B, H, C)
        return self.revin.denorm(y, stats)


class ITransformer(nn.Module):
    """iTransformer: attention over variate tokens, each token embedding a variate's whole lookback window.

    Args:
        lookback / horizon / n_vars: L, H and the number of variates N (N is not needed by the weights: the
            same model runs on any number of variates).
        dim: token width D (``d_model``).
        depth: encoder layers (``e_layers``).
        num_heads: attention heads (8 in every reference script).
        ffn_dim: FFN hidden width (``d_ff``).
        dropout: embedding, attention, residual and FFN dropout.
        use_norm: the non-stationary normalization (on in every reference run).
    """

    def __init__(self, lookback: int, horizon: int, n_vars: int, dim: int = 512, depth: int = 2, num_heads: int = 8,
                 ffn_dim: int = 2048, dropout: float = 0.1, use_norm: bool = True):
        super().__init__()
        self.revin = RevIN() if use_norm else None
        self.embed = nn.Linear(lookback, dim)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.Sequential(*[_PostNormEncoderLayer(dim, num_heads, ffn_dim, dropout, "layer")
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, horizon)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, N) normalized input -> (B, N, D) variate tokens."""
        tokens = self.drop(self.embed(x.transpose(1, 2)))  # (B, N, D)
        return self.norm(self.layers(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = None
        if self.revin is not None:
            x, stats = self.revin.norm(x)
        y = self.head(self.forward_features(x)).transpose(1, 2)  # (B, H, N)
        return RevIN.denorm(y, stats) if stats is not None else y
