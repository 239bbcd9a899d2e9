"""The ``"sparse3d"`` backend: the Backend protocol of :mod:`ffnet.layers.backends` on sparse tensors.

With it the generic FFNified attention, channel mixer and FFNet block run on
:class:`~ffnet.sparse.SparseTensor` voxels unchanged::

    from ffnet.layers import FFNetBlock, get_backend
    block = FFNetBlock(32, kernel_size=7, small_kernel=3, backend=get_backend("sparse3d", impl="torch"))
    y = block(x)  # x: SparseTensor with 32 channels; y has x's coordinates

Stride 1 convs are submanifold (outputs at the input sites), so residual sums line up; stride > 1
convs are regular sparse convs with ``k // 2`` padding (new coordinates).
"""
from __future__ import annotations

from torch import nn

from ffnet.layers.backends import Backend

from .conv import SparseConv3d, SubMConv3d
from .functional import resolve_impl
from .modules import SparseBatchNorm, SparseDropPath, SparseGELU, SparseLayerScale, SparseLinear

__all__ = ["SparseBackend"]


class SparseBackend(Backend):
    """Sparse 3D voxel backend.

    Args:
        impl: ``"torch"`` or ``"spconv"``; default ``$FFNET_SPARSE_IMPL``, else spconv on CUDA and
            torch on CPU. Every conv the backend builds uses it.
    """

    name = "sparse3d"
    ndim = 3

    def __init__(self, impl: str | None = None):
        self.impl = resolve_impl(impl)

    def conv(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
             bias: bool = True) -> nn.Module:
        if kernel_size % 2 != 1:
            raise ValueError(f"only odd kernel sizes keep 'same' alignment, got {kernel_size}")
        if stride == 1:
            return SubMConv3d(in_chs, out_chs, kernel_size, groups=groups, bias=bias, impl=self.impl)
        return SparseConv3d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                            bias=bias, impl=self.impl)

    def norm(self, num_features: int) -> nn.Module:
        return SparseBatchNorm(num_features)

    def pointwise(self, in_chs: int, out_chs: int, bias: bool = True) -> nn.Module:
        return SparseLinear(in_chs, out_chs, bias=bias)

    def act(self) -> nn.Module:
        return SparseGELU()

    def layer_scale(self, dim: int, init_value: float) -> nn.Module:
        return SparseLayerScale(dim, init_value)

    def drop_path(self, p: float) -> nn.Module:
        return SparseDropPath(p) if p > 0 else nn.Identity()

    def add(self, x, y):
        return x + y  # SparseTensor.__add__ checks that the coordinates match

    def __repr__(self) -> str:
        return f"SparseBackend(impl={self.impl!r})"
