"""MetaMixer: the query-key-value framework with its four sub-operations left pluggable.

    q = query_proj(x)                      # 1. query projection
    a = key_interaction(q[, x])            # 2. query-key interaction (static keys K_W, or F_K(x))
    c = activation(a)                      # 3. coefficient activation
    y = value_interaction(c[, x])          # 4. coefficient-value interaction (static V_W, or F_V(x))

Self-attention, the FFN, FFNified attention and the ConvNeXt block are all instances; the
factories below build the first two and the ConvNeXt block, and :mod:`ffnet.layers.blocks` builds
FFNified attention and the FFNet channel mixer. "Static" interactions hold their keys / values as
weights and ignore ``x``; dynamic ones derive them from ``x``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MetaMixer", "DotProductKeys", "WeightedValues", "SplitHeads",
           "self_attention_mixer", "ffn_mixer", "convnext_mixer"]


class MetaMixer(nn.Module):
    """The query-key-value skeleton with pluggable sub-operations.

    Args:
        query_proj: maps the input to queries.
        key_interaction: static: ``f(q)`` (keys are its weights); dynamic: ``f(q, x)``.
        activation: turns interaction scores into coefficients.
        value_interaction: static: ``g(c)`` (values are its weights); dynamic: ``g(c, x)``.
        static_key: whether ``key_interaction`` ignores the input ``x``.
        static_value: whether ``value_interaction`` ignores the input ``x``.
    """

    def __init__(self, query_proj: nn.Module, key_interaction: nn.Module, activation: nn.Module,
                 value_interaction: nn.Module, *, static_key: bool = True, static_value: bool = True):
        super().__init__()
        self.query_proj = query_proj
        self.key_interaction = key_interaction
        self.activation = activation
        self.value_interaction = value_interaction
        self.static_key = static_key
        self.static_value = static_value

    def forward(self, x):
        q = self.query_proj(x)
        a = self.key_interaction(q) if self.static_key else self.key_interaction(q, x)
        c = self.activation(a)
        return self.value_interaction(c) if self.static_value else self.value_interaction(c, x)

    def extra_repr(self) -> str:
        return f"static_key={self.static_key}, static_value={self.static_value}"


class SplitHeads(nn.Module):
    """Linear projection of tokens ``(B, N, C)`` split into heads ``(B, H, N, C // H)``."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        return self.proj(x).view(B, N, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, N, d)


class DotProductKeys(nn.Module):
    """Dynamic query-key interaction: ``q @ F_K(x)^T / sqrt(d)``."""

    def __init__(self, key_proj: SplitHeads):
        super().__init__()
        self.key_proj = key_proj

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k = self.key_proj(x)  # (B, H, N, d)
        return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, N)


class WeightedValues(nn.Module):
    """Dynamic coefficient-value interaction: ``c @ F_V(x)``, heads merged, then an output projection."""

    def __init__(self, value_proj: SplitHeads, out_proj: nn.Module | None = None):
        super().__init__()
        self.value_proj = value_proj
        self.out_proj = out_proj if out_proj is not None else nn.Identity()

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        v = self.value_proj(x)  # (B, H, N, d)
        y = c @ v  # (B, H, N, d)
        B, H, N, d = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, N, H * d))  # (B, N, C)


def self_attention_mixer(dim: int, num_heads: int = 1, qkv_bias: bool = True, proj: bool = True) -> MetaMixer:
    """Multi-head self-attention as a MetaMixer: Linear Q, scaled Q K^T, softmax, matmul with V."""
    return MetaMixer(
        SplitHeads(dim, num_heads, qkv_bias),
        DotProductKeys(SplitHeads(dim, num_heads, qkv_bias)),
        nn.Softmax(dim=-1),
        WeightedValues(SplitHeads(dim, num_heads, qkv_bias), nn.Linear(dim, dim) if proj else None),
        static_key=False, static_value=False,
    )


def ffn_mixer(dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU) -> MetaMixer:
    """The FFN as a MetaMixer: the input is the query, W1 holds the keys, W2 the values."""
    return MetaMixer(nn.Identity(), nn.Linear(dim, hidden_dim), act_layer(), nn.Linear(hidden_dim, dim))


class _ToChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)  # (B, H, W, C)


class _ToChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


def convnext_mixer(dim: int, mlp_ratio: float = 4.0, kernel_size: int = 7) -> MetaMixer:
    """The ConvNeXt block branch as a MetaMixer: the mixing runs over channels, not space.

    Query projection = depthwise conv + LayerNorm, keys = the 1x1 expansion weights, GELU,
    values = the 1x1 reduction weights. Input and output are ``(B, C, H, W)``.
    """
    hidden = int(mlp_ratio * dim)
    query = nn.Sequential(nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim),
                          _ToChannelsLast(), nn.LayerNorm(dim, eps=1e-6))
    return MetaMixer(query, nn.Linear(dim, hidden), nn.GELU(),
                     nn.Sequential(nn.Linear(hidden, dim), _ToChannelsFirst()))
