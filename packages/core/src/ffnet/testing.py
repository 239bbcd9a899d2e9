"""Helpers for testing re-parameterizable models (used by every package's test suite)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_bn", "rel_err"]


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm non-trivial affine parameters and running statistics (in place).

    Freshly built BNs are identities in eval mode, which would let a broken BN fold pass unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the relative error used for fused-vs-unfused checks."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
