"""Convolution backends: one small factory interface over dense 1D, dense 2D and sparse 3D ops.

The generic blocks in :mod:`ffnet.layers.blocks` (FFNified attention, channel mixer, FFNet block)
only talk to a backend, so the same block code runs on sequences ``(B, C, L)``, images
``(B, C, H, W)`` and sparse voxel tensors (:class:`ffnet.sparse.SparseTensor`).

Layout rule every backend honours: a conv module exposes ``.weight`` shaped
``(out_chs, in_chs // groups, *kernel)`` (torch's conv layout, also for sparse convs) and ``.bias``
(a registered Parameter or ``None``). Re-parameterization only touches those tensors and the
BatchNorm statistics, so it is backend-agnostic.
"""
from __future__ import annotations

from functools import cache

from torch import nn

from .misc import DropPath, LayerScale

__all__ = ["Backend", "DenseBackend", "get_backend", "BACKEND_NAMES"]

BACKEND_NAMES = ("1d", "2d", "sparse3d")


class Backend:
    """Interface of a convolution backend (see module docstring)."""

    name: str
    ndim: int

    def conv(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
             bias: bool = True) -> nn.Module:
        raise NotImplementedError

    def norm(self, num_features: int) -> nn.Module:
        raise NotImplementedError

    def pointwise(self, in_chs: int, out_chs: int, bias: bool = True) -> nn.Module:
        raise NotImplementedError

    def act(self) -> nn.Module:
        raise NotImplementedError

    def layer_scale(self, dim: int, init_value: float) -> nn.Module:
        raise NotImplementedError

    def drop_path(self, p: float) -> nn.Module:
        raise NotImplementedError

    def add(self, x, y):
        return x + y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class DenseBackend(Backend):
    """Dense channels-first convolutions: ``(B, C, L)`` for 1D, ``(B, C, H, W)`` for 2D."""

    _CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
    _NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}

    def __init__(self, ndim: int):
        if ndim not in self._CONV:
            raise ValueError(f"dense backend supports 1, 2 or 3 spatial dims, got {ndim}")
        self.ndim = ndim
        self.name = f"{ndim}d"

    def conv(self, in_chs, out_chs, kernel_size, stride=1, groups=1, bias=True):
        if kernel_size % 2 != 1:
            raise ValueError(f"only odd kernel sizes keep 'same' alignment, got {kernel_size}")
        return self._CONV[self.ndim](in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                                     groups=groups, bias=bias)

    def norm(self, num_features):
        return self._NORM[self.ndim](num_features)

    def pointwise(self, in_chs, out_chs, bias=True):
        return self._CONV[self.ndim](in_chs, out_chs, 1, bias=bias)

    def act(self):
        return nn.GELU()

    def layer_scale(self, dim, init_value):
        return LayerScale(dim, init_value, channel_dim=1)

    def drop_path(self, p):
        return DropPath(p) if p > 0 else nn.Identity()


@cache
def _sparse_backend(impl: str | None) -> Backend:
    # Lazy: the sparse backend may pull in spconv (slow, fragile import); `import ffnet` must not.
    from ffnet.sparse.backend import SparseBackend

    return SparseBackend(impl=impl) if impl is not None else SparseBackend()


def get_backend(backend: str | Backend = "2d", **kwargs) -> Backend:
    """Returns the backend for ``"1d"``, ``"2d"`` or ``"sparse3d"`` (or passes a Backend through).

    Args:
        backend: name or instance.
        **kwargs: for ``"sparse3d"``, ``impl="torch"|"spconv"``.
    """
    if isinstance(backend, Backend):
        return backend
    if backend == "1d":
        return DenseBackend(1)
    if backend == "2d":
        return DenseBackend(2)
    if backend == "3d":
        return DenseBackend(3)
    if backend == "sparse3d":
        return _sparse_backend(kwargs.get("impl"))
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKEND_NAMES}")
