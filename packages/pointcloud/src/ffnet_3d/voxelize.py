"""Deterministic voxelization: a numba CPU kernel and spconv's ``PointToVoxel`` on CUDA.

Both paths follow the same rule, so they give the same voxels for the same input:

* ``coord = floor((p - range_min) / voxel_size)`` evaluated in float32, kept if ``0 <= coord < grid``
  with ``grid = round((range_max - range_min) / voxel_size)``;
* voxels are numbered in order of the first point that falls in them, at most ``max_voxels``;
  a voxel keeps its first ``max_points`` points (input order), later ones are dropped;
* coordinates are returned ``(z, y, x)`` (spconv's layout), features are the mean of the kept points.

On CUDA spconv's hash order is not the input order; :meth:`Voxelizer.__call__` with
``sort=True`` (default) orders voxels by their linear index so that every device gives the same
tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

__all__ = ["Voxels", "Voxelizer", "voxelize_numba", "grid_size"]


def grid_size(voxel_size, point_cloud_range) -> np.ndarray:
    """Grid shape ``(nx, ny, nz)`` exactly as spconv computes it (float32 arithmetic)."""
    vs = np.asarray(voxel_size, dtype=np.float32)
    pr = np.asarray(point_cloud_range, dtype=np.float32)
    return np.round((pr[3:] - pr[:3]) / vs).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _voxelize_kernel(points, vsize, rmin, grid, max_points, max_voxels):
    n, c = points.shape
    cap = 1
    while cap < 2 * n + 2:
        cap *= 2
    keys = np.full(cap, -1, dtype=np.int64)
    vals = np.empty(cap, dtype=np.int32)
    voxels = np.zeros((max_voxels, max_points, c), dtype=np.float32)
    coords = np.zeros((max_voxels, 3), dtype=np.int32)
    num = np.zeros(max_voxels, dtype=np.int32)
    point_voxel = np.full(n, -1, dtype=np.int64)
    nvox = 0
    coor = np.zeros(3, dtype=np.int64)
    for i in range(n):
        ok = True
        for j in range(3):  # j: x, y, z
            cj = np.int64(np.floor((points[i, j] - rmin[j]) / vsize[j]))
            if cj < 0 or cj >= grid[j]:
                ok = False
                break
            coor[j] = cj
        if not ok:
            continue
        key = (coor[2] * grid[1] + coor[1]) * grid[0] + coor[0]
        h = (key * 0x9E3779B1) & (cap - 1)
        while keys[h] != -1 and keys[h] != key:
            h = (h + 1) & (cap - 1)
        if keys[h] == -1:
            if nvox >= max_voxels:
                continue
            keys[h] = key
            vals[h] = nvox
            coords[nvox, 0] = coor[2]
            coords[nvox, 1] = coor[1]
            coords[nvox, 2] = coor[0]
            nvox += 1
        v = vals[h]
        point_voxel[i] = v
        k = num[v]
        if k < max_points:
            for f in range(c):
                voxels[v, k, f] = points[i, f]
            num[v] = k + 1
    return voxels[:nvox], coords[:nvox], num[:nvox], point_voxel


def voxelize_numba(points: np.ndarray, voxel_size, point_cloud_range, max_points: int, max_voxels: int):
    """numba voxelization -> (voxels (M, max_points, C), coords zyx (M, 3) int32, num (M,), point->voxel (N,))."""
    pts = np.ascontiguousarray(points, dtype=np.float32)
    vs = np.asarray(voxel_size, dtype=np.float32)
    rmin = np.asarray(point_cloud_range[:3], dtype=np.float32)
    grid = grid_size(voxel_size, point_cloud_range)
    return _voxelize_kernel(pts, vs, rmin, grid, int(max_points), int(max_voxels))


def _sort_by_linear_index(coords: torch.Tensor, grid) -> torch.Tensor:
    nx, ny, _ = (int(v) for v in grid)
    lin = (coords[:, 0].long() * ny + coords[:, 1].long()) * nx + coords[:, 2].long()
    return torch.argsort(lin)


@dataclass
class Voxels:
    """One scan's voxels: mean features (M, C), coords (M, 3) zyx int32, points per voxel (M,)."""

    features: torch.Tensor
    coords: torch.Tensor
    num_points: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]


class Voxelizer:
    """Points -> :class:`Voxels`; numba on CPU, spconv ``PointToVoxel`` on CUDA.

    Args:
        voxel_size: ``(vx, vy, vz)`` metres.
        point_cloud_range: ``(xmin, ymin, zmin, xmax, ymax, zmax)``.
        max_points: points kept per voxel (the mean is over these).
        max_voxels: voxels kept per scan (first-come).
        backend: ``"auto"`` (numba for CPU input, spconv for CUDA), ``"numba"`` or ``"spconv"``.
    """

    def __init__(self, voxel_size, point_cloud_range, max_points: int = 5, max_voxels: int = 40000,
                 backend: str = "auto"):
        if backend not in ("auto", "numba", "spconv"):
            raise ValueError(f"unknown voxelizer backend {backend!r}")
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.point_cloud_range = tuple(float(v) for v in point_cloud_range)
        self.max_points = int(max_points)
        self.max_voxels = int(max_voxels)
        self.backend = backend
        self.grid_size = grid_size(self.voxel_size, self.point_cloud_range)  # (nx, ny, nz)

    def raw(self, points):
        """(voxels (M, P, C), coords (M, 3), num (M,)) as torch tensors on the points' device."""
        is_tensor = isinstance(points, torch.Tensor)
        device = points.device if is_tensor else torch.device("cpu")
        use_spconv = self.backend == "spconv" or (self.backend == "auto" and device.type == "cuda")
        if use_spconv:
            from ._spconv import point_to_voxel

            pts = points if is_tensor else torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
            return point_to_voxel(pts, self.voxel_size, self.point_cloud_range, self.max_points, self.max_voxels)
        pts = points.detach().cpu().numpy() if is_tensor else points
        vox, coords, num, _ = voxelize_numba(pts, self.voxel_size, self.point_cloud_range, self.max_points,
                                             self.max_voxels)
        out = (torch.from_numpy(vox), torch.from_numpy(coords), torch.from_numpy(num))
        return tuple(t.to(device) for t in out)

    def __call__(self, points, sort: bool = True) -> Voxels:
        vox, coords, num = self.raw(points)
        feats = vox.sum(dim=1) / num.clamp(min=1).to(vox.dtype)[:, None]  # (M, C) mean of kept points
        if sort:
            order = _sort_by_linear_index(coords, self.grid_size)
            feats, coords, num = feats[order], coords[order], num[order]
        return Voxels(feats, coords, num)
