"""CPU fast path for FFNet-TS: core's dense 1D backend with layout-aware convs, norms and dropout.

FFNet-TS works on (B, M*D, N) tensors with N = 48 patches, kernel-51 depthwise convs and grouped 1x1 convs.
On CPU, oneDNN handles those shapes poorly (one thread, batch 512, forward + backward): a kernel-51
depthwise conv is about 6x slower than the equivalent batched matmul, grouped 1x1 convs about 1.8x, and
``F.dropout`` spends most of its time drawing one random number per element.

So on CPU the model keeps its activations *channel-major*: a logical (B, C, N) tensor whose storage is
(C, B, N). Every op below reads that layout without copies:

* :class:`ToeplitzDWConv1d`: a depthwise, stride-1, 'same' conv as ``(C, B, N) @ (C, N, N)`` with the banded
  Toeplitz matrix ``T_c[i, j] = w[c, j - i + k // 2]`` (identical to zero-padded convolution).
* :class:`PointwiseConv1d`: a grouped 1x1 conv as ``(G, O/G, I/G) @ (G, I/G, B*N)``.
* :class:`LayoutBatchNorm1d`: BatchNorm over ``(1, C, B*N)``.
* :class:`FastDropout`: the keep-mask comes from random *bytes* (8 per 64-bit draw), so the drop probability
  is quantized to multiples of 1/256 (0.7 -> 179/256 = 0.6992); the kept values are rescaled exactly.

All modules are ``nn.Conv1d`` / ``nn.BatchNorm1d`` / ``nn.Dropout`` subclasses with the standard parameter
layout, so core's ``RepDWConv``, ``ConvNorm`` and ``reparameterize_model`` use them unchanged, and each falls
back to the stock op on other devices or layouts. Tests compare every op against its stock counterpart.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from ffnet.layers import DenseBackend
from torch import nn

__all__ = ["SequenceBackend", "SEQUENCE_BACKEND", "ToeplitzDWConv1d", "PointwiseConv1d", "LayoutBatchNorm1d",
           "FastDropout", "stock_ops", "is_channel_major", "to_channel_major", "swap_channel_groups"]


_ENABLED = True


@contextlib.contextmanager
def stock_ops():
    """Run every op of this module through its stock PyTorch path (the reference the tests compare to)."""
    global _ENABLED
    prev, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = prev


def _fast(x: torch.Tensor) -> bool:
    return _ENABLED and x.device.type == "cpu"


def is_channel_major(x: torch.Tensor) -> bool:
    """True for a (B, C, N) tensor stored as (C, B, N)."""
    return x.dim() == 3 and x.shape[0] > 1 and x.transpose(0, 1).is_contiguous()


def to_channel_major(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).contiguous().transpose(0, 1)  # same (B, C, N) values, (C, B, N) storage


def swap_channel_groups(x: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Reorders the channels of (B, a*b, N) from (a, b) to (b, a), keeping the memory layout."""
    B, _, N = x.shape
    if is_channel_major(x):
        xc = x.transpose(0, 1).reshape(a, b, B, N).transpose(0, 1).reshape(b * a, B, N)  # (b*a, B, N)
        return xc.transpose(0, 1)
    return x.reshape(B, a, b, N).transpose(1, 2).reshape(B, b * a, N)


def _toeplitz(w: torch.Tensor, n: int) -> torch.Tensor:
    """(C, k) kernels -> (C, n, n) matrices T[c, i, j] = w[c, j - i + k // 2] (0 outside the kernel).

    Built from sliding windows of the zero-padded kernel (a view + one flip), whose backward is a cheap
    overlap-add, instead of a gather/scatter.
    """
    k = w.shape[-1]
    p = k // 2
    left, right = max(0, n - 1 - p), max(0, p + n - k)
    start = p + left - (n - 1)
    windows = F.pad(w, (left, right)).unfold(-1, n, 1)  # (C, k + left + right - n + 1, n)
    return windows[:, start:start + n].flip(1)  # row i = window start + n - 1 - i


class ToeplitzDWConv1d(nn.Conv1d):
    """Depthwise, stride-1, 'same' Conv1d; on CPU computed as a Toeplitz bmm (stock conv elsewhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, n = self.kernel_size[0], x.shape[-1]
        if not _fast(x) or n > max(4 * k, 128):
            return super().forward(x)
        toeplitz = _toeplitz(self.weight[:, 0, :], n)  # (C, N, N)
        xc = x.transpose(0, 1)  # (C, B, N)
        if self.bias is None:
            y = torch.bmm(xc, toeplitz.transpose(1, 2))
        else:
            y = torch.baddbmm(self.bias.view(-1, 1, 1), xc, toeplitz.transpose(1, 2))  # (C, B, N)
        return y.transpose(0, 1)


class PointwiseConv1d(nn.Conv1d):
    """Grouped 1x1 Conv1d; on CPU computed as a bmm over groups in channel-major layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _fast(x):
            return super().forward(x)
        B, C, N = x.shape
        G, C_out = self.groups, self.out_channels
        xc = x.transpose(0, 1).reshape(G, C // G, B * N)  # no copy when x is channel-major
        w = self.weight.view(G, C_out // G, C // G)
        y = torch.bmm(w, xc) if self.bias is None else torch.baddbmm(self.bias.view(G, C_out // G, 1), w, xc)
        return y.view(C_out, B, N).transpose(0, 1)


class LayoutBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that normalizes channel-major input without a layout copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_fast(x) and is_channel_major(x)):
            return super().forward(x)
        B, C, N = x.shape
        y = super().forward(x.transpose(0, 1).reshape(1, C, B * N))  # statistics over B*N, as for (B, C, N)
        return y.view(C, B, N).transpose(0, 1)


class FastDropout(nn.Dropout):
    """Dropout whose CPU keep-mask is built from random bytes (p quantized to 1/256; see module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not _fast(x) or self.p >= 1.0 or torch.empty_like(x).stride() != x.stride():
            return F.dropout(x, self.p, True)
        drop = min(max(round(self.p * 256), 1), 255)  # bytes below `drop` are dropped
        n = x.numel()
        bits = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        u8 = bits.view(torch.uint8)[:n].as_strided(x.shape, x.stride())  # same memory layout as x
        mask = (u8 >= drop).to(x.dtype).mul_(256.0 / (256 - drop))
        return x * mask


class SequenceBackend(DenseBackend):
    """Core's dense ``"1d"`` backend with the layout-aware CPU ops of this module."""

    def __init__(self):
        super().__init__(1)

    def conv(self, in_chs, out_chs, kernel_size, stride=1, groups=1, bias=True):
        if kernel_size == 1 and stride == 1:
            return PointwiseConv1d(in_chs, out_chs, 1, groups=groups, bias=bias)
        if groups == in_chs == out_chs and stride == 1:
            if kernel_size % 2 != 1:
                raise ValueError(f"only odd kernel sizes keep 'same' alignment, got {kernel_size}")
            return ToeplitzDWConv1d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, groups=groups, bias=bias)
        return super().conv(in_chs, out_chs, kernel_size, stride=stride, groups=groups, bias=bias)

    def pointwise(self, in_chs, out_chs, bias=True):
        return PointwiseConv1d(in_chs, out_chs, 1, bias=bias)

    def norm(self, num_features):
        return LayoutBatchNorm1d(num_features)


SEQUENCE_BACKEND = SequenceBackend()
