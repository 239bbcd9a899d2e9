"""Sparse 3D convolution modules with torch's conv weight layout.

Each module holds ``weight`` shaped ``(out_channels, in_channels // groups, kd, kh, kw)`` and a
registered ``bias`` (or ``None``), initialised like ``nn.Conv3d``; copy them into an ``nn.Conv3d``
and the dense conv agrees with the sparse one on active sites. The implementation (``"torch"`` or
``"spconv"``) is a plain attribute, not part of the state dict, so checkpoints move freely between
implementations.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .functional import resolve_impl, sparse_conv3d, sparse_inverse_conv3d
from .tensor import SparseTensor

__all__ = ["SubMConv3d", "SparseConv3d", "SparseInverseConv3d"]


def _triple(v, name: str) -> tuple[int, int, int]:
    t = (v,) * 3 if isinstance(v, int) else tuple(v)
    if len(t) != 3 or not all(isinstance(i, int) for i in t):
        raise ValueError(f"{name} must be an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


class _SparseConvNd(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding, groups: int, bias: bool,
                 impl: str | None):
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by "
                             f"groups ({groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _triple(kernel_size, "kernel_size")
        self.stride = _triple(stride, "stride")
        self.padding = _triple(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"bad geometry: kernel_size={self.kernel_size}, stride={self.stride}, "
                             f"padding={self.padding}")
        self.dilation = (1, 1, 1)
        self.groups = groups
        self.impl = resolve_impl(impl)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv3d's default init, so sparse and dense layers start from the same distribution.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + f", impl={self.impl!r}"


class SubMConv3d(_SparseConvNd):
    """Submanifold sparse conv: outputs only at the input sites, 'same' (``k // 2``) padding.

    Equals ``conv3d(x.dense(), weight, bias, padding=k // 2, groups=groups)`` read at the active
    sites. ``groups == in_channels`` is the depthwise conv FFNified attention needs (any odd kernel,
    e.g. 3 / 5 / 7, and ``out_channels`` a multiple of ``in_channels`` for a channel multiplier).
    ``kernel_size=1`` is a per-voxel linear map.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd int or 3 odd ints.
        groups: 1, ``in_channels`` (depthwise) or any common divisor.
        bias: learnable bias.
        impl: ``"torch"`` or ``"spconv"`` (default: ``$FFNET_SPARSE_IMPL``, else spconv on CUDA, torch on CPU).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, groups: int = 1, bias: bool = True, *,
                 impl: str | None = None):
        ks = _triple(kernel_size, "kernel_size")
        if any(k % 2 == 0 for k in ks):
            raise ValueError(f"submanifold convs need odd kernel sizes, got {kernel_size}")
        super().__init__(in_channels, out_channels, ks, 1, tuple(k // 2 for k in ks), groups, bias, impl)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_conv3d(x, self.weight, self.bias, groups=self.groups, subm=True, impl=self.impl)


class SparseConv3d(_SparseConvNd):
    """Regular sparse conv (usually strided): output sites are the dense conv's non-zero support.

    Equals ``conv3d(x.dense(), weight, bias, stride, padding, groups=groups)`` read at the output
    sites, which are exactly the sites whose kernel window contains an active input. The output
    remembers the kernel map, so a :class:`SparseInverseConv3d` with the same geometry can map
    features back onto ``x``'s sites.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or 3 ints.
        stride: int or 3 ints.
        padding: int or 3 ints (zero padding, as in ``conv3d``).
        groups: 1, ``in_channels`` (depthwise, channel multiplier allowed) or any common divisor.
        bias: learnable bias.
        impl: ``"torch"`` or ``"spconv"``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=2, padding=0, groups: int = 1,
                 bias: bool = True, *, impl: str | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups, bias, impl)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_conv3d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             groups=self.groups, impl=self.impl)


class SparseInverseConv3d(_SparseConvNd):
    """Inverse of a :class:`SparseConv3d` for decoders: back onto the encoder's sites.

    Give it the geometry (``kernel_size``, ``stride``, ``padding``) of the strided conv it inverts;
    it reuses that conv's kernel map read backwards (no new map is built), and its output shares
    the encoder tensor's coordinates, so ``skip + up(x)`` works. On the encoder sites it equals
    ``conv_transpose3d(x.dense(), weight.transpose(0, 1), stride=stride, padding=padding,
    output_padding=...)``. The weight keeps the conv layout ``(out_channels, in_channels // groups, *k)``.

    Args:
        in_channels: channels of the coarse input.
        out_channels: channels of the output on the fine sites.
        kernel_size: the forward conv's kernel size.
        stride: the forward conv's stride.
        padding: the forward conv's padding.
        groups: 1, ``in_channels`` (depthwise) or any common divisor.
        bias: learnable bias.
        impl: must match the forward conv's implementation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=2, padding=0, groups: int = 1,
                 bias: bool = True, *, impl: str | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups, bias, impl)

    def forward(self, x: SparseTensor, ref: SparseTensor | None = None) -> SparseTensor:
        """Args: x: the strided conv's output (or same coordinates); ref: its input, if x lost the map."""
        return sparse_inverse_conv3d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                                     groups=self.groups, impl=self.impl, ref=ref)
