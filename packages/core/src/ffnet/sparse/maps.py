"""Kernel maps (rulebooks) in pure PyTorch: coordinate hashing, neighbour search, output sites.

A kernel map lists, for every kernel offset, the pairs ``(input row, output row)`` that the offset
connects. Convolutions then gather input rows, multiply by the offset's weight and scatter-add into
output rows (:mod:`ffnet.sparse.functional`). Everything is built from int64 voxel keys
(:func:`ffnet.sparse.tensor.coord_keys`), ``torch.sort`` and ``torch.searchsorted``: no hash table,
no custom kernel, the same code on CPU and CUDA.

Geometry follows ``torch.nn.functional.conv3d`` (cross-correlation): offset ``k = (kz, ky, kx)``
connects input site ``i`` to output site ``o`` when ``i = o * stride - padding + k`` per axis.
Offsets are numbered row-major, matching ``weight.reshape(out, in, -1)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .tensor import CoordinateContext, coord_keys, keys_to_coords

__all__ = ["KernelMap", "NeighborMap", "build_subm_map", "build_subm_neighbors", "build_conv_map", "kernel_offsets",
           "conv_output_shape", "make_map", "mirrored_subm_map", "subm_map_from_neighbors", "numba_available"]

# Upper bound on (offsets x points) handled per vectorized step, to bound temporary memory
# (each step holds a few int64 tensors of this many elements: 2**22 -> ~32 MB each).
_CHUNK = 1 << 22


@dataclass(eq=False)
class KernelMap:
    """Pairs ``in_idx[j] -> out_idx[j]`` through kernel offset ``offset[j]``, sorted by offset.

    Attributes:
        in_idx: ``(P,)`` int64 input rows.
        out_idx: ``(P,)`` int64 output rows.
        offset: ``(P,)`` int64 kernel offset ids (row-major over the kernel).
        counts: pairs per offset (python ints, ``len == kernel volume``), for slicing.
        num_in: input rows.
        num_out: output rows.
        identity_offset: submanifold maps keep the centre offset implicit (it maps row ``i`` to row
            ``i``): its id, else ``None``.
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    offset: torch.Tensor
    counts: tuple[int, ...]
    num_in: int
    num_out: int
    identity_offset: int | None = None
    # derived layouts (e.g. the NeighborMap of the fused depthwise kernel), built on first use
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def kernel_volume(self) -> int:
        return len(self.counts)

    def neighbors(self) -> NeighborMap:
        """The same map in output-stationary form (cached on this map)."""
        nmap = self.derived.get("neighbors")
        if nmap is None:
            nmap = self.derived["neighbors"] = NeighborMap.from_kernel_map(self)
        return nmap

    @property
    def num_pairs(self) -> int:
        return self.in_idx.shape[0]

    def transposed(self) -> KernelMap:
        """The same connections read backwards (output rows become input rows), for inverse convs (cached)."""
        t = self.derived.get("transposed")
        if t is None:
            t = self.derived["transposed"] = KernelMap(self.out_idx, self.in_idx, self.offset, self.counts,
                                                       self.num_out, self.num_in, self.identity_offset)
        return t


@dataclass(eq=False)
class NeighborMap:
    """Output-stationary kernel map: ``nbr[o, k]`` is the input row offset ``k`` brings to output ``o``, or -1.

    The layout of the fused depthwise kernel (:mod:`ffnet.sparse._numba_kernels`): one output row
    reads its ``K`` neighbours in offset order. Any kernel map can be written this way because, for
    a given output and offset, at most one input contributes (submanifold, strided and inverse maps
    alike). The inverse map (``inv[i, k] = o`` iff ``nbr[o, k] = i``; the input-gradient pass) is
    built on first use; for odd submanifold kernels it is ``nbr`` with the offsets reversed.

    Attributes:
        nbr: ``(N_out, K)`` int32.
        num_in: input rows.
        subm: outputs are the inputs and the kernel is centred (the reversal shortcut applies).
    """

    nbr: torch.Tensor
    num_in: int
    subm: bool = False
    _inverse: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_out(self) -> int:
        return self.nbr.shape[0]

    @property
    def kernel_volume(self) -> int:
        return self.nbr.shape[1]

    @property
    def num_pairs(self) -> int:
        """Connections, the centre of submanifold maps included."""
        return int((self.nbr >= 0).sum())

    def inverse(self) -> torch.Tensor:
        """``(N_in, K)`` int32 inverse map (cached)."""
        if self._inverse is None:
            if self.subm:
                # offset k connects i -> o iff offset K-1-k connects o -> i (odd, centred kernels)
                self._inverse = self.nbr.flip(1).contiguous()
            else:
                inv = torch.full((self.num_in, self.kernel_volume), -1, dtype=torch.int32, device=self.nbr.device)
                out_rows, offs = (self.nbr >= 0).nonzero(as_tuple=True)
                inv[self.nbr[out_rows, offs].long(), offs] = out_rows.to(torch.int32)
                self._inverse = inv
        return self._inverse

    @classmethod
    def from_kernel_map(cls, kmap: KernelMap) -> NeighborMap:
        nbr = torch.full((kmap.num_out, kmap.kernel_volume), -1, dtype=torch.int32, device=kmap.in_idx.device)
        nbr[kmap.out_idx, kmap.offset] = kmap.in_idx.to(torch.int32)
        subm = kmap.identity_offset is not None
        if subm:
            nbr[:, kmap.identity_offset] = torch.arange(kmap.num_out, dtype=torch.int32, device=nbr.device)
        return cls(nbr, kmap.num_in, subm)


def numba_available() -> bool:
    """Whether numba can be imported (cached); the fused CPU kernels need it."""
    global _NUMBA
    if _NUMBA is None:
        import importlib.util

        _NUMBA = importlib.util.find_spec("numba") is not None
    return _NUMBA


_NUMBA: bool | None = None


def build_subm_neighbors(ctx: CoordinateContext, kernel_size: tuple[int, int, int]) -> NeighborMap:
    """Submanifold neighbour map of ``ctx``: a numba hash lookup on CPU, else from :func:`build_subm_map`."""
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"submanifold convs need odd kernel sizes, got {kernel_size}")
    device = ctx.indices.device
    if device.type != "cpu" or not numba_available():
        return NeighborMap.from_kernel_map(build_subm_map(ctx, kernel_size))
    from . import _numba_kernels as nk

    n = ctx.num_points
    offs = kernel_offsets(kernel_size, device) - torch.tensor([k // 2 for k in kernel_size], device=device)
    if n == 0:
        return NeighborMap(torch.zeros(0, offs.shape[0], dtype=torch.int32), 0, True)
    coords = ctx.indices.to(torch.int32).contiguous().numpy()
    nbr = nk.subm_neighbors(coords, torch.tensor(ctx.spatial_shape).numpy(), offs.numpy(), ctx.keys().numpy(),
                            torch.get_num_threads())
    return NeighborMap(torch.from_numpy(nbr), n, True)


def subm_map_from_neighbors(nmap: NeighborMap) -> KernelMap:
    """The pair-list :class:`KernelMap` (as :func:`build_subm_map` gives it) of a submanifold NeighborMap."""
    n, volume = nmap.nbr.shape
    centre = volume // 2
    if n == 0 or volume == 1:
        return _empty_map(n, n, volume, nmap.nbr.device, centre)
    half = nmap.nbr[:, :centre]
    hit = (half >= 0).t()  # (centre, N)
    kk, out_rows = hit.nonzero(as_tuple=True)  # sorted by offset, then output row
    in_rows = half[out_rows, kk].long()
    return mirrored_subm_map(in_rows, out_rows, hit.sum(1).tolist(), n)


def kernel_offsets(kernel_size: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """``(K, 3)`` int64 kernel positions ``(kz, ky, kx)`` in row-major order."""
    axes = [torch.arange(k, device=device) for k in kernel_size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def conv_output_shape(spatial_shape, kernel_size, stride, padding) -> tuple[int, int, int]:
    """Output grid of a strided conv (``conv3d``'s formula, dilation 1); raises if it is empty."""
    out = tuple((s + 2 * p - k) // st + 1 for s, k, st, p in zip(spatial_shape, kernel_size, stride, padding))
    if any(o <= 0 for o in out):
        raise ValueError(f"conv with kernel {kernel_size}, stride {stride}, padding {padding} on spatial shape "
                         f"{tuple(spatial_shape)} gives an empty output grid {out}")
    return out  # type: ignore[return-value]


def _empty_map(num_in: int, num_out: int, volume: int, device, identity: int | None) -> KernelMap:
    z = torch.zeros(0, dtype=torch.int64, device=device)
    return KernelMap(z, z, z, (0,) * volume, num_in, num_out, identity)


def build_subm_map(ctx: CoordinateContext, kernel_size: tuple[int, int, int]) -> KernelMap:
    """Submanifold map: outputs are the input sites; each looks up its neighbours within the kernel.

    Uses the symmetry of odd kernels (offset ``k`` connects ``i -> o`` iff offset ``K-1-k`` connects
    ``o -> i``) to search only half of the offsets; the centre stays implicit.
    """
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"submanifold convs need odd kernel sizes, got {kernel_size}")
    n = ctx.num_points
    device = ctx.indices.device
    offs = kernel_offsets(kernel_size, device) - torch.tensor([k // 2 for k in kernel_size], device=device)
    volume = offs.shape[0]
    centre = volume // 2
    if n == 0 or volume == 1:
        return _empty_map(n, n, volume, device, centre)
    keys_sorted, perm = ctx.sorted_keys()
    keys = ctx.keys()
    idx = ctx.indices.long()
    grid = ctx.spatial_shape
    # A neighbour's key is the voxel's key plus a per-offset constant, provided the neighbour stays
    # inside the grid on every axis; per-axis validity is precomputed once per kernel row.
    axis_ok = [torch.stack([((idx[:, 1 + a] + dd) >= 0) & ((idx[:, 1 + a] + dd) < grid[a])
                            for dd in range(-(kernel_size[a] // 2), kernel_size[a] // 2 + 1)]) for a in range(3)]
    kpos = kernel_offsets(kernel_size, device)  # (K, 3) kernel positions
    dkeys = coord_keys(torch.zeros_like(offs[:, 0]), offs, grid)  # (K,) key offset of each kernel offset

    in_half, out_half, counts_half = [], [], []
    step = max(1, _CHUNK // n)
    for start in range(0, centre, step):
        sel = torch.arange(start, min(start + step, centre), device=device)
        inside = axis_ok[0][kpos[sel, 0]] & axis_ok[1][kpos[sel, 1]] & axis_ok[2][kpos[sel, 2]]  # (k', N)
        nb_keys = keys[None] + dkeys[sel, None]  # (k', N)
        pos = torch.searchsorted(keys_sorted, nb_keys).clamp_(max=n - 1)
        hit = inside & (keys_sorted[pos] == nb_keys)
        kk, out_rows = hit.nonzero(as_tuple=True)  # sorted by offset, then output row
        in_half.append(perm[pos[kk, out_rows]])
        out_half.append(out_rows)
        counts_half.extend(hit.sum(1).tolist())
    return mirrored_subm_map(torch.cat(in_half), torch.cat(out_half), counts_half, n)


def mirrored_subm_map(in_half: torch.Tensor, out_half: torch.Tensor, counts_half: list[int], n: int) -> KernelMap:
    """Full submanifold map from the pairs of the offsets before the centre (sorted by offset).

    Offsets ``centre+1 .. K-1`` mirror offsets ``centre-1 .. 0`` with the roles of the rows
    swapped; the centre is the implicit identity. spconv's native CPU rulebooks use the same form.
    """
    in_mirror = torch.split(out_half, counts_half)[::-1]
    out_mirror = torch.split(in_half, counts_half)[::-1]
    in_idx = torch.cat([in_half, *in_mirror])
    out_idx = torch.cat([out_half, *out_mirror])
    counts = (*counts_half, 0, *counts_half[::-1])
    return make_map(in_idx, out_idx, counts, n, n, len(counts_half))


def make_map(in_idx, out_idx, counts, num_in: int, num_out: int, identity: int | None) -> KernelMap:
    """KernelMap from pair lists already sorted by offset and the pair count of each offset."""
    device = in_idx.device
    offset = torch.repeat_interleave(torch.arange(len(counts), device=device),
                                     torch.tensor(counts, device=device), output_size=in_idx.shape[0])
    return KernelMap(in_idx, out_idx, offset, tuple(counts), num_in, num_out, identity)


def build_conv_map(ctx: CoordinateContext, kernel_size, stride, padding) -> tuple[KernelMap, CoordinateContext]:
    """Regular (strided) sparse conv map and its output coordinates.

    An output site is active iff some input site falls inside its kernel window, i.e. the output
    coordinates are the non-zero support of the dense conv of the occupancy grid. Output sites are
    ordered by key (row-major ``[b, z, y, x]``).

    Returns:
        ``(map, output context)``.
    """
    out_shape = conv_output_shape(ctx.spatial_shape, kernel_size, stride, padding)
    n = ctx.num_points
    device = ctx.indices.device
    volume = int(torch.tensor(kernel_size).prod())
    if n == 0:
        out_ctx = CoordinateContext(torch.zeros(0, 4, dtype=torch.int32, device=device), out_shape, ctx.batch_size)
        return _empty_map(0, 0, volume, device, None), out_ctx
    idx = ctx.indices.long()
    # Per axis and kernel position: the output coordinate o = (i + p - k) / s, whether it is an
    # integer inside the output grid, and its contribution to the output key (row-major strides).
    key_stride = (out_shape[1] * out_shape[2], out_shape[2], 1)
    axis_ok, axis_key = [], []
    for a in range(3):
        t = idx[None, :, 1 + a] + padding[a] - torch.arange(kernel_size[a], device=device)[:, None]  # (k_a, N)
        o = torch.div(t, stride[a], rounding_mode="floor")
        axis_ok.append((t == o * stride[a]) & (o >= 0) & (o < out_shape[a]))
        axis_key.append(o * key_stride[a])
    base = idx[:, 0] * (out_shape[0] * key_stride[0])  # (N,) batch part of the output key
    kpos = kernel_offsets(kernel_size, device)

    in_rows, out_keys, counts = [], [], []
    step = max(1, _CHUNK // n)
    for start in range(0, volume, step):
        kz, ky, kx = kpos[start:start + step].unbind(1)
        ok = axis_ok[0][kz] & axis_ok[1][ky] & axis_ok[2][kx]  # (k', N)
        keys = base[None] + axis_key[0][kz] + axis_key[1][ky] + axis_key[2][kx]  # (k', N)
        kk, rows = ok.nonzero(as_tuple=True)  # sorted by offset, then input row
        in_rows.append(rows)
        out_keys.append(keys[kk, rows])
        counts.extend(ok.sum(1).tolist())
    uniq, out_idx = torch.unique(torch.cat(out_keys), sorted=True, return_inverse=True)
    kmap = make_map(torch.cat(in_rows), out_idx, counts, n, uniq.shape[0], None)
    out_ctx = CoordinateContext(keys_to_coords(uniq, out_shape), out_shape, ctx.batch_size)
    out_ctx._sorted = (uniq, torch.arange(uniq.shape[0], device=device))  # already in key order
    return kmap, out_ctx
