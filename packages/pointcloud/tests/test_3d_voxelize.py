"""numba voxelizer vs spconv's PointToVoxel (CPU tensors) and vs an independent numpy reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ffnet_3d.io import read_points
from ffnet_3d.voxelize import Voxelizer, grid_size, voxelize_numba

KITTI_GRID = ((0.05, 0.05, 0.1), (0.0, -40.0, -3.0, 70.4, 40.0, 1.0))
COARSE_GRID = ((0.2, 0.2, 0.2), (0.0, -25.6, -3.0, 51.2, 25.6, 1.0))


@pytest.fixture(scope="module")
def scan(kitti_root):
    return read_points(kitti_root / "velodyne" / "000001.bin")


def test_grid_size_matches_kitti():
    np.testing.assert_array_equal(grid_size(*KITTI_GRID), [1408, 1600, 40])


@pytest.mark.parametrize("grid, max_points, max_voxels", [
    (KITTI_GRID, 5, 40000),  # hits the voxel budget on a full scan
    (COARSE_GRID, 5, 60000),
    (COARSE_GRID, 32, 60000),
])
def test_numba_matches_spconv_point_to_voxel(scan, grid, max_points, max_voxels):
    pytest.importorskip("spconv")
    vs, pr = grid
    vox, coords, num, _ = voxelize_numba(scan, vs, pr, max_points, max_voxels)
    ref = Voxelizer(vs, pr, max_points, max_voxels, backend="spconv").raw(torch.from_numpy(scan))
    np.testing.assert_array_equal(coords, ref[1].numpy())
    np.testing.assert_array_equal(num, ref[2].numpy())
    np.testing.assert_array_equal(vox, ref[0].numpy())


def test_numba_matches_numpy_reference(scan):
    vs, pr = COARSE_GRID
    scan = scan[::4]
    feats = Voxelizer(vs, pr, max_points=128, max_voxels=30000, backend="numba")(scan)
    # independent reference: np.unique over voxel keys, mean of all points (budget never hit)
    ijk = np.floor((scan[:, :3] - np.float32(pr[:3])) / np.float32(vs)).astype(np.int64)
    g = grid_size(vs, pr)
    ok = ((ijk >= 0) & (ijk < g)).all(1)
    ijk, pts = ijk[ok], scan[ok].astype(np.float64)
    keys = (ijk[:, 2] * g[1] + ijk[:, 1]) * g[0] + ijk[:, 0]
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    assert counts.max() < 128 and len(uniq) < 30000  # the budgets are not hit
    mean = np.zeros((len(uniq), 4))
    np.add.at(mean, inv, pts)
    mean /= counts[:, None]
    zyx = np.stack([uniq // (g[0] * g[1]), (uniq // g[0]) % g[1], uniq % g[0]], 1)
    np.testing.assert_array_equal(feats.coords.numpy(), zyx)  # sort=True orders by linear index
    np.testing.assert_array_equal(feats.num_points.numpy(), counts)
    np.testing.assert_allclose(feats.features.numpy(), mean, atol=1e-4)


def test_deterministic_and_first_come():
    pts = np.array([[0.05, 0.05, 0.05, 1.0], [0.5, 0.5, 0.5, 2.0], [0.06, 0.06, 0.06, 3.0],
                    [0.07, 0.07, 0.07, 4.0], [-1.0, 0.0, 0.0, 5.0]], dtype=np.float32)
    vox, coords, num, p2v = voxelize_numba(pts, (0.1, 0.1, 0.1), (0, 0, 0, 1, 1, 1), 2, 10)
    np.testing.assert_array_equal(coords, [[0, 0, 0], [5, 5, 5]])  # first-come order, zyx
    np.testing.assert_array_equal(num, [2, 1])  # third point of voxel 0 dropped (max 2)
    np.testing.assert_array_equal(vox[0, :, 3], [1.0, 3.0])
    np.testing.assert_array_equal(p2v, [0, 1, 0, 0, -1])
    again = voxelize_numba(pts, (0.1, 0.1, 0.1), (0, 0, 0, 1, 1, 1), 2, 10)
    for a, b in zip((vox, coords, num, p2v), again):
        np.testing.assert_array_equal(a, b)
    _, coords1, _, _ = voxelize_numba(pts, (0.1, 0.1, 0.1), (0, 0, 0, 1, 1, 1), 2, 1)
    assert len(coords1) == 1  # voxel budget


@pytest.mark.gpu
def test_spconv_cuda_path_gives_the_same_voxels(scan):
    vs, pr = COARSE_GRID
    cpu = Voxelizer(vs, pr, 5, 60000, backend="numba")(scan)
    gpu = Voxelizer(vs, pr, 5, 60000)(torch.from_numpy(scan).cuda())
    np.testing.assert_array_equal(cpu.coords.numpy(), gpu.coords.cpu().numpy())
    np.testing.assert_array_equal(cpu.num_points.numpy(), gpu.num_points.cpu().numpy())
