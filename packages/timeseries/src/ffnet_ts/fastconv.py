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
  is quantized to multiples of 1/256 (0.7 -> 179/256 = 0.6992); the kept values are rescaled exactly. The
  mask is applied in one fused numba pass forward and backward and saved as bytes (torch's ``x * mask`` needed
  a compare, a bool -> float cast that ATen runs unvectorized, a scale and a multiply: ~3x slower). bf16
  input (CPU bf16 autocast) has its own kernel with the same mask and ATen's bf16 rounding.
* :class:`LayoutGELU` and :func:`residual_add`: elementwise ops on the contiguous (C, B, N) view (ATen's
  kernels walk the permuted layout up to 2.5x slower).
* :func:`channel_major_grad`: the flatten head consumes the block batch-major; this identity hands the
  gradient back channel-major, so the backward pass does not copy operands at every op.

All modules are ``nn.Conv1d`` / ``nn.BatchNorm1d`` / ``nn.Dropout`` subclasses with the standard parameter
layout, so core's ``RepDWConv``, ``ConvNorm`` and ``reparameterize_model`` use them unchanged, and each falls
back to the stock op on other devices or layouts. Tests compare every op against its stock counterpart.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from ffnet.layers import DenseBackend
from torch import nn

__all__ = ["SequenceBackend", "SEQUENCE_BACKEND", "ToeplitzDWConv1d", "PointwiseConv1d", "pointwise_conv",
           "LayoutBatchNorm1d",
           "FastDropout", "LayoutGELU", "residual_add", "stock_ops", "is_channel_major", "to_channel_major",
           "swap_channel_groups", "channel_major_grad", "cat_channels"]


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


class _ChannelMajorGrad(torch.autograd.Function):
    """Identity whose backward hands the gradient on in channel-major storage.

    Gradients arriving from a batch-major consumer (the flatten head) would otherwise run the whole backward
    pass in the other layout, and every channel-major op would copy its operands (measured: ~40 copies of
    activation-sized tensors per step). One copy here keeps the backward in the layout the forward used.
    """

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad if is_channel_major(grad) else to_channel_major(grad)


def channel_major_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged; its gradient is made channel-major (only when ``x`` itself is, on the fast path)."""
    if not (_fast(x) and is_channel_major(x) and x.requires_grad):
        return x
    return _ChannelMajorGrad.apply(x)


def swap_channel_groups(x: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Reorders the channels of (B, a*b, N) from (a, b) to (b, a), keeping the memory layout."""
    B, _, N = x.shape
    if is_channel_major(x):
        xc = x.transpose(0, 1).reshape(a, b, B, N).transpose(0, 1).reshape(b * a, B, N)  # (b*a, B, N)
        return xc.transpose(0, 1)
    return x.reshape(B, a, b, N).transpose(1, 2).reshape(B, b * a, N)


def cat_channels(xs: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(xs, 1)`` for (B, C_i, N) tensors; channel-major operands give a channel-major result."""
    if all(_fast(x) and is_channel_major(x) for x in xs):
        return torch.cat([x.transpose(0, 1) for x in xs], 0).transpose(0, 1)
    return torch.cat(xs, 1)


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
        # NOTE: under bf16 autocast the matrix is built in fp32 and cast by the bmm: building it from the cast
        # kernel gives the same entries, but its backward (unfold_backward) is 4x slower in bf16.
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
        return pointwise_conv(x, self.weight, self.bias, self.groups)


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, groups=groups)`` for a (C_out, C / groups, 1) ``weight``; on CPU the
    channel-major bmm of :class:`PointwiseConv1d` (which calls this with its own parameters)."""
    if not _fast(x):
        return F.conv1d(x, weight, bias, groups=groups)
    B, C, N = x.shape
    G, C_out = groups, weight.shape[0]
    xc = x.transpose(0, 1).reshape(G, C // G, B * N)  # no copy when x is channel-major
    w = weight.view(G, C_out // G, C // G)
    y = torch.bmm(w, xc) if bias is None else torch.baddbmm(bias.view(G, C_out // G, 1), w, xc)
    return y.view(C_out, B, N).transpose(0, 1)


class LayoutBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that normalizes channel-major input without a layout copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_fast(x) and is_channel_major(x)):
            return super().forward(x)
        B, C, N = x.shape
        y = super().forward(x.transpose(0, 1).reshape(1, C, B * N))  # statistics over B*N, as for (B, C, N)
        return y.view(C, B, N).transpose(0, 1)


def _dense_flat(x: torch.Tensor) -> torch.Tensor:
    """The elements of a non-overlapping, dense tensor in storage order, as a 1-D view."""
    return x.as_strided((x.numel(),), (1,), x.storage_offset())


_NUMBA_DROPOUT = None  # the compiled kernel, False when numba is unusable


def _numba_dropout():
    """``masked_scale(x, u8, out, drop, scale)``: out = x * scale where u8 >= drop, else 0 (numba, serial).

    NOTE: serial on purpose. numba's ``parallel=True`` starts its own OpenMP/TBB worker pool beside torch's;
    measured here, the two pools' spinning threads slowed the *whole* training step (every torch op, and
    other models in the same process) several-fold on 2 cores. One vectorized pass is memory-bound anyway.
    """
    global _NUMBA_DROPOUT
    if _NUMBA_DROPOUT is None:
        try:
            import numba

            @numba.njit(cache=True)
            def masked_scale(x, u8, out, drop, scale):  # pragma: no cover - compiled
                zero = x.dtype.type(0)
                for i in range(x.size):
                    out[i] = x[i] * scale if u8[i] >= drop else zero

            _NUMBA_DROPOUT = masked_scale
        except Exception:  # noqa: BLE001 - numba is an accelerator here; the torch ops are the fallback
            _NUMBA_DROPOUT = False
    return _NUMBA_DROPOUT


_NUMBA_BF16 = None  # the compiled bf16 kernel, False when numba is unusable


def _numba_dropout_bf16():
    """``masked_scale_bf16(x16, u8, out16, drop, scale)`` on bf16 bit patterns (uint16), numba, serial.

    numba has no bf16 type: each element is widened to fp32 by a 16-bit shift and a bitcast (an LLVM
    intrinsic, so the loop vectorizes), multiplied by ``scale`` or 0 in fp32, and rounded back to bf16 to
    nearest-even, which is how ATen's bf16 multiply computes ``x * mask`` (1.2 ms vs 6 ms for a numba mask
    plus a torch multiply on 5.5 M elements). NaN is written as 0x7FC0 (ATen's vector path keeps the NaN's
    payload bits; both are NaN).
    """
    global _NUMBA_BF16
    if _NUMBA_BF16 is None:
        try:
            import numba
            from llvmlite import ir
            from numba import types
            from numba.extending import intrinsic

            @intrinsic
            def f32_from_bits(typingctx, u):  # pragma: no cover - compiled
                def codegen(context, builder, signature, args):
                    return builder.bitcast(args[0], ir.FloatType())
                return types.float32(types.uint32), codegen

            @intrinsic
            def bits_from_f32(typingctx, f):  # pragma: no cover - compiled
                def codegen(context, builder, signature, args):
                    return builder.bitcast(args[0], ir.IntType(32))
                return types.uint32(types.float32), codegen

            @numba.njit(cache=True)
            def masked_scale_bf16(x16, u8, out16, drop, scale):  # pragma: no cover - compiled
                zero, sixteen = np.float32(0), np.uint32(16)
                for i in range(x16.size):
                    f = f32_from_bits(np.uint32(x16[i]) << sixteen) * (scale if u8[i] >= drop else zero)
                    b = bits_from_f32(f)
                    rne = (b + np.uint32(0x7FFF) + ((b >> sixteen) & np.uint32(1))) >> sixteen
                    out16[i] = np.uint16(0x7FC0) if f != f else np.uint16(rne)

            _NUMBA_BF16 = masked_scale_bf16
        except Exception:  # noqa: BLE001 - as for the fp32 kernel: the torch ops are the fallback
            _NUMBA_BF16 = False
    return _NUMBA_BF16


def _bits16(t: torch.Tensor) -> np.ndarray:
    """A dense bf16 tensor's storage as a 1-D uint16 numpy view."""
    return _dense_flat(t).view(torch.int16).numpy().view(np.uint16)


def _masked_scale(x: torch.Tensor, u8: torch.Tensor, drop: int, scale: float) -> torch.Tensor:
    """x * (u8 >= drop) * scale in one pass; ``u8`` has ``x``'s strides (dense layouts only)."""
    if x.dtype == torch.bfloat16 and (kernel16 := _numba_dropout_bf16()):
        # the stock form's mask is bf16 too: its scale is rounded to bf16 before the multiply
        scale16 = np.float32(torch.tensor(scale, dtype=torch.bfloat16).item())
        out = torch.empty_like(x)
        kernel16(_bits16(x), _dense_flat(u8).numpy(), _bits16(out), np.uint8(drop), scale16)
        return out
    kernel = _numba_dropout()
    if not kernel or x.dtype not in (torch.float32, torch.float64):
        return x * (u8 >= drop).to(x.dtype).mul_(scale)
    out = torch.empty_like(x)
    xs = _dense_flat(x).numpy()
    # scalars typed like the data, so the product rounds exactly as the stock `x * mask` does
    kernel(xs, _dense_flat(u8).numpy(), _dense_flat(out).numpy(), np.uint8(drop), xs.dtype.type(scale))
    return out


class _DropoutFn(torch.autograd.Function):
    """Dropout with a saved uint8 keep-mask; forward and backward are one pass each (numba)."""

    @staticmethod
    def forward(ctx, x, u8, drop, scale):
        ctx.save_for_backward(u8)
        ctx.drop, ctx.scale = drop, scale
        return _masked_scale(x, u8, drop, scale)

    @staticmethod
    def backward(ctx, grad):
        (u8,) = ctx.saved_tensors
        if grad.stride() != u8.stride():  # bring the gradient into the mask's layout (rare: one copy)
            grad = torch.empty_like(u8, dtype=grad.dtype).copy_(grad)
        return _masked_scale(grad.detach(), u8, ctx.drop, ctx.scale), None, None, None


class FastDropout(nn.Dropout):
    """Dropout whose CPU keep-mask is built from random bytes (p quantized to 1/256; see module docstring).

    The mask is applied by one fused numba pass (forward and backward) and kept as bytes; the result is
    bit-identical to ``x * (u8 >= drop).to(x.dtype).mul_(scale)``, the stock-op form, which is used when numba
    is unavailable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # NOTE: under torch.compile the stock op is traced instead: inductor fuses it into its own kernels, and
        # tracing the byte view of the int64 random words failed (inductor sized the uint8 storage at 8 bytes
        # per element: "setStorage ... out of bounds", torch 2.15).
        if (not _fast(x) or self.p >= 1.0 or torch.empty_like(x).stride() != x.stride()
                or torch.compiler.is_compiling()):
            return F.dropout(x, self.p, True)
        drop = min(max(round(self.p * 256), 1), 255)  # bytes below `drop` are dropped
        n = x.numel()
        bits = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        u8 = bits.view(torch.uint8)[:n].as_strided(x.shape, x.stride())  # same memory layout as x
        scale = 256.0 / (256 - drop)
        if x.requires_grad and torch.is_grad_enabled():
            return _DropoutFn.apply(x, u8, drop, scale)
        return _masked_scale(x, u8, drop, scale)


class LayoutGELU(nn.GELU):
    """GELU that runs on channel-major input through its contiguous (C, B, N) view.

    Same values; ATen's unary kernels walk a permuted (B, C, N) layout 1.5-2.5x slower than the contiguous
    view of the same memory (measured on (128, 896, 48): 6.3 vs 3.8 ms fp32, 6.1 vs 2.5 ms bf16; backward
    8.2 vs 5.5 ms bf16). The backward runs through the same view.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_fast(x) and is_channel_major(x)):
            return super().forward(x)
        return super().forward(x.transpose(0, 1)).transpose(0, 1)


def residual_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y``; on channel-major operands through their contiguous views (as :class:`LayoutGELU`)."""
    if _fast(x) and is_channel_major(x) and is_channel_major(y):
        return (x.transpose(0, 1) + y.transpose(0, 1)).transpose(0, 1)
    return x + y


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

    def act(self):
        return LayoutGELU()


SEQUENCE_BACKEND = SequenceBackend()
