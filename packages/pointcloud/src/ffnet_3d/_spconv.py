"""The one module of ffnet_3d that calls spconv directly (only its ``PointToVoxel``).

Sparse convolutions come from core's ``ffnet.sparse`` backend; here we only need spconv's voxel
generator, used on CUDA (and on CPU tensors to cross-check the numba voxelizer). Notes:

* ``PointToVoxel`` must be built on the device it runs on (its buffers live there).
* On CPU it allocates a dense int32 hash over the whole grid (1408 x 1600 x 40 = 360 MB for the
  standard KITTI grid), so the CPU path of ffnet_3d is the numba voxelizer, not this one.
* Never call cumm's numpy helpers (``tv.from_numpy``): they crash under numpy 2 with some cumm
  builds (environment.md §4). We only hand torch tensors to spconv.
"""

from __future__ import annotations

from functools import cache

import torch

__all__ = ["point_to_voxel"]


@cache
def _generator(vsize: tuple, prange: tuple, num_features: int, max_voxels: int, max_points: int, device: str):
    from spconv.pytorch.utils import PointToVoxel

    return PointToVoxel(
        vsize_xyz=list(vsize),
        coors_range_xyz=list(prange),
        num_point_features=num_features,
        max_num_voxels=max_voxels,
        max_num_points_per_voxel=max_points,
        device=torch.device(device),
    )


def point_to_voxel(
    points: torch.Tensor,
    voxel_size: tuple[float, float, float],
    point_cloud_range: tuple[float, ...],
    max_points: int,
    max_voxels: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """spconv voxelization -> (voxels (M, max_points, C), coords zyx (M, 3) int32, num_points (M,))."""
    points = points.contiguous().float()
    gen = _generator(
        tuple(float(v) for v in voxel_size),
        tuple(float(v) for v in point_cloud_range),
        int(points.shape[1]),
        int(max_voxels),
        int(max_points),
        str(points.device),
    )
    voxels, coords, num = gen(points)
    return voxels, coords, num
