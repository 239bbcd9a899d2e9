"""The sparse voxel tensor shared by both implementations, and its coordinate context.

A :class:`SparseTensor` holds features ``(N, C)`` at ``N`` active voxels of a batch of 3D grids,
their integer coordinates ``(N, 4)`` as ``[batch, z, y, x]`` (int32), the grid size
``spatial_shape = (D, H, W)`` and ``batch_size``. This is spconv's layout, so coordinates from a
voxelizer can be used unchanged, and :meth:`SparseTensor.dense` gives ``(B, C, D, H, W)`` in
``torch.nn.functional.conv3d`` order.

Coordinates are immutable and live in a :class:`CoordinateContext`. Every tensor derived without
moving points (``replace_feature``, submanifold convs, BN, activations, residual sums) shares the
context, and with it the cache of kernel maps (rulebooks) built for those coordinates, so a network
that applies ten submanifold 7^3 convs to one coordinate set builds its neighbour map once.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch

__all__ = ["SparseTensor", "CoordinateContext", "coord_keys", "keys_to_coords", "same_coordinates", "to_bev"]


def _as_shape(spatial_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in spatial_shape)
    except TypeError:
        raise TypeError(f"spatial_shape must be a sequence of 3 ints (D, H, W), got {spatial_shape!r}") from None
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"spatial_shape must be 3 positive ints (D, H, W), got {spatial_shape!r}")
    return shape  # type: ignore[return-value]


def coord_keys(batch: torch.Tensor, zyx: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Row-major int64 key of each voxel: ``((b * D + z) * H + y) * W + x``.

    Keys order voxels exactly like ``torch.nonzero`` on a ``(B, D, H, W)`` mask, and are unique as
    long as every coordinate is inside the grid (callers mask out-of-grid neighbours first).

    Args:
        batch: ``(...)`` batch indices (int64).
        zyx: ``(..., 3)`` spatial coordinates (int64).
        spatial_shape: ``(D, H, W)``.
    """
    d, h, w = spatial_shape
    return ((batch * d + zyx[..., 0]) * h + zyx[..., 1]) * w + zyx[..., 2]


def keys_to_coords(keys: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`coord_keys`: ``(M,)`` keys -> ``(M, 4)`` int32 ``[b, z, y, x]``."""
    d, h, w = spatial_shape
    x = keys % w
    rest = keys // w
    y = rest % h
    rest = rest // h
    z = rest % d
    b = rest // d
    return torch.stack([b, z, y, x], dim=1).to(torch.int32)


class CoordinateContext:
    """Coordinates of a sparse tensor plus the cache of kernel maps built on them.

    Shared (by identity) between all tensors with the same coordinates. ``maps`` is keyed by the
    conv geometry, e.g. ``("torch", "subm", (7, 7, 7))`` or
    ``("spconv", "conv", (3, 3, 3), (2, 2, 2), (1, 1, 1))``; the implementations fill it.
    """

    __slots__ = ("indices", "spatial_shape", "batch_size", "maps", "_sorted", "__weakref__")

    def __init__(self, indices: torch.Tensor, spatial_shape: tuple[int, int, int], batch_size: int):
        self.indices = indices
        self.spatial_shape = spatial_shape
        self.batch_size = batch_size
        self.maps: dict[tuple, Any] = {}
        self._sorted: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_points(self) -> int:
        return self.indices.shape[0]

    def keys(self) -> torch.Tensor:
        """``(N,)`` int64 keys of the coordinates, in storage order."""
        idx = self.indices.long()
        return coord_keys(idx[:, 0], idx[:, 1:], self.spatial_shape)

    def sorted_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sorted keys, permutation)`` with ``keys()[perm] == sorted keys``; computed once."""
        if self._sorted is None:
            self._sorted = torch.sort(self.keys())
        return self._sorted

    def get(self, key: tuple, build):
        """Cached value for ``key``, built with ``build()`` on the first request."""
        value = self.maps.get(key)
        if value is None:
            value = self.maps[key] = build()
        return value

    def validate(self) -> None:
        """Raises ``ValueError`` for negative, out-of-grid, out-of-batch or duplicate coordinates."""
        n = self.num_points
        if n == 0:
            return
        idx = self.indices
        lo = idx.amin(0).tolist()
        hi = idx.amax(0).tolist()
        names = ("batch", "z", "y", "x")
        limits = (self.batch_size, *self.spatial_shape)
        for name, low, high, limit in zip(names, lo, hi, limits):
            if low < 0:
                raise ValueError(f"negative {name} coordinate {low} in indices; coordinates must be >= 0")
            if high >= limit and name == "batch":
                raise ValueError(f"batch index {high} in indices is >= batch_size={self.batch_size}")
            if high >= limit:
                raise ValueError(f"{name} coordinate {high} is outside spatial_shape={self.spatial_shape} "
                                 f"(must be < {limit})")
        keys, perm = self.sorted_keys()
        dup = keys[1:] == keys[:-1]
        if bool(dup.any()):
            first = int(dup.nonzero()[0, 0])
            coord = self.indices[perm[first]].tolist()
            raise ValueError(f"{int(dup.sum())} duplicate coordinate(s) in indices, e.g. [b, z, y, x] = {coord}; "
                             "merge points per voxel before building a SparseTensor")


def same_coordinates(a: CoordinateContext, b: CoordinateContext) -> bool:
    """Whether two coordinate contexts hold the same coordinates in the same order."""
    if a is b:
        return True
    return (a.spatial_shape == b.spatial_shape and a.batch_size == b.batch_size
            and a.num_points == b.num_points and a.indices.device == b.indices.device
            and torch.equal(a.indices, b.indices))


class SparseTensor:
    """Features at the active voxels of a batch of 3D grids (spconv-compatible layout).

    Args:
        features: ``(N, C)`` floating-point features.
        indices: ``(N, 4)`` int32 coordinates ``[batch, z, y, x]``, unique, on the features' device.
        spatial_shape: grid size ``(D, H, W)``.
        batch_size: number of samples ``B`` (samples may be empty).
        check: validate coordinate ranges and uniqueness (one sort and a device sync). Tensors
            derived by the library skip it; pass ``False`` only for coordinates known to be valid.

    Raises:
        TypeError: wrong types or dtypes (indices must be int32, features floating point).
        ValueError: wrong shapes, negative / out-of-grid / out-of-batch / duplicate coordinates.
    """

    __slots__ = ("_features", "_ctx")

    def __init__(self, features: torch.Tensor, indices: torch.Tensor, spatial_shape: Sequence[int],
                 batch_size: int, *, check: bool = True):
        if not isinstance(features, torch.Tensor) or not isinstance(indices, torch.Tensor):
            raise TypeError(f"features and indices must be torch.Tensors, got {type(features).__name__} "
                            f"and {type(indices).__name__}")
        if indices.dtype != torch.int32:
            raise TypeError(f"indices must be int32 [batch, z, y, x], got {indices.dtype} (use indices.int())")
        if indices.ndim != 2 or indices.shape[1] != 4:
            raise ValueError(f"indices must have shape (N, 4) = [batch, z, y, x], got {tuple(indices.shape)}")
        if features.ndim != 2:
            raise ValueError(f"features must have shape (N, C), got {tuple(features.shape)}")
        if not features.is_floating_point():
            raise TypeError(f"features must be floating point, got {features.dtype}")
        if features.shape[0] != indices.shape[0]:
            raise ValueError(f"features have {features.shape[0]} rows but indices have {indices.shape[0]}")
        if features.device != indices.device:
            raise ValueError(f"features on {features.device} but indices on {indices.device}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        ctx = CoordinateContext(indices, _as_shape(spatial_shape), int(batch_size))
        if check:
            ctx.validate()
        self._features = features
        self._ctx = ctx

    @classmethod
    def _derive(cls, features: torch.Tensor, ctx: CoordinateContext) -> SparseTensor:
        # Library-internal constructor: coordinates are already valid and shared.
        obj = cls.__new__(cls)
        obj._features = features
        obj._ctx = ctx
        return obj

    # ----------------------------------------------------------------------------------- accessors
    @property
    def features(self) -> torch.Tensor:
        """``(N, C)`` features."""
        return self._features

    @property
    def indices(self) -> torch.Tensor:
        """``(N, 4)`` int32 ``[batch, z, y, x]`` (treat as read-only)."""
        return self._ctx.indices

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return self._ctx.spatial_shape

    @property
    def batch_size(self) -> int:
        return self._ctx.batch_size

    @property
    def num_points(self) -> int:
        return self._features.shape[0]

    @property
    def num_channels(self) -> int:
        return self._features.shape[1]

    @property
    def device(self) -> torch.device:
        return self._features.device

    @property
    def dtype(self) -> torch.dtype:
        return self._features.dtype

    @property
    def coords(self) -> CoordinateContext:
        """The shared coordinate context (identity tells whether two tensors share coordinates)."""
        return self._ctx

    @property
    def cache(self) -> Mapping[tuple, Any]:
        """Read-only view of the kernel maps cached for these coordinates."""
        return MappingProxyType(self._ctx.maps)

    def same_coordinates(self, other: SparseTensor) -> bool:
        """Whether ``other`` has the same coordinates in the same order (cheap when shared)."""
        return same_coordinates(self._ctx, other._ctx)

    # ------------------------------------------------------------------------------- constructors
    def replace_feature(self, features: torch.Tensor) -> SparseTensor:
        """Same coordinates (and map cache), new ``(N, C')`` features."""
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != self.num_points:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"replacement features must have shape ({self.num_points}, C), got {shape}")
        return SparseTensor._derive(features, self._ctx)

    @classmethod
    def from_dense(cls, x: torch.Tensor, mask: torch.Tensor | None = None) -> SparseTensor:
        """Sparse tensor of the active sites of a dense ``(B, C, D, H, W)`` tensor.

        Args:
            x: dense features.
            mask: ``(B, D, H, W)`` bool active sites; default: sites where any channel is non-zero.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            raise ValueError(f"from_dense expects a (B, C, D, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        b, _, d, h, w = x.shape
        if mask is None:
            mask = x.ne(0).any(dim=1)
        elif mask.shape != (b, d, h, w) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {(b, d, h, w)}, got {mask.dtype} {tuple(mask.shape)}")
        idx = mask.nonzero()  # (N, 4) int64, row-major order, possibly column-major strides
        features = x.permute(0, 2, 3, 4, 1)[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]]  # (N, C)
        out = cls(features, idx.to(torch.int32).contiguous(), (d, h, w), b, check=False)
        # nonzero() enumerates in key order: the sorted keys are known without a sort.
        keys = out._ctx.keys()
        out._ctx._sorted = (keys, torch.arange(keys.shape[0], device=keys.device))
        return out

    def dense(self) -> torch.Tensor:
        """Dense ``(B, C, D, H, W)`` tensor with zeros at inactive sites (differentiable)."""
        d, h, w = self.spatial_shape
        out = self._features.new_zeros(self.batch_size, self.num_channels, d, h, w)
        idx = self.indices.long()
        # Scatter the N x C values straight into the channel-first grid (through a channel-last view):
        # writing a channel-last grid and transposing it copied all B*C*D*H*W elements twice.
        out.permute(0, 2, 3, 4, 1).index_put_((idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]), self._features)
        return out  # (B, C, D, H, W)

    def to(self, *args, **kwargs) -> SparseTensor:
        """Moves / casts the features (and the coordinates when the device changes)."""
        features = self._features.to(*args, **kwargs)
        if features.device == self.device:
            return SparseTensor._derive(features, self._ctx)
        ctx = CoordinateContext(self.indices.to(features.device), self.spatial_shape, self.batch_size)
        return SparseTensor._derive(features, ctx)

    def detach(self) -> SparseTensor:
        return SparseTensor._derive(self._features.detach(), self._ctx)

    # -------------------------------------------------------------------------------- arithmetic
    def _check_same(self, other: SparseTensor, op: str) -> None:
        if not self.same_coordinates(other):
            raise ValueError(
                f"cannot {op} sparse tensors with different coordinates "
                f"({self.num_points} points, shape {self.spatial_shape} vs {other.num_points} points, "
                f"shape {other.spatial_shape}); residual sums need the same voxels in the same order")

    def __add__(self, other):
        if isinstance(other, SparseTensor):
            self._check_same(other, "add")
            return SparseTensor._derive(self._features + other._features, self._ctx)
        if isinstance(other, (torch.Tensor, numbers.Number)):
            return SparseTensor._derive(self._features + other, self._ctx)
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, other):
        if isinstance(other, SparseTensor):
            self._check_same(other, "multiply")
            return SparseTensor._derive(self._features * other._features, self._ctx)
        if isinstance(other, (torch.Tensor, numbers.Number)):
            return SparseTensor._derive(self._features * other, self._ctx)
        return NotImplemented

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return (f"SparseTensor(num_points={self.num_points}, channels={self.num_channels}, "
                f"spatial_shape={self.spatial_shape}, batch_size={self.batch_size}, dtype={self.dtype}, "
                f"device={self.device})")


def to_bev(x: SparseTensor) -> torch.Tensor:
    """Bird's-eye-view map: dense ``(B, C, D, H, W)`` -> ``(B, C * D, H, W)`` (height folded into channels).

    Channel ``c * D + z`` holds channel ``c`` at height ``z`` (SECOND's "height compression").
    """
    if not isinstance(x, SparseTensor):
        raise TypeError(f"to_bev expects a SparseTensor, got {type(x).__name__}")
    dense = x.dense()
    b, c, d, h, w = dense.shape
    return dense.reshape(b, c * d, h, w)
