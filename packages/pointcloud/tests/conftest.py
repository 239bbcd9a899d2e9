"""Fixtures of the ffnet_3d tests: real KITTI frames, a tiny synthetic dataset, the device."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def kitti_root() -> Path:
    """$FFNET_DATA_DIR/pointcloud/kitti/training (six labelled KITTI frames); skip without it."""
    root = os.environ.get("FFNET_DATA_DIR")
    path = Path(root or "") / "pointcloud" / "kitti" / "training"
    if not root or not (path / "velodyne").is_dir():
        pytest.skip("FFNET_DATA_DIR does not hold pointcloud/kitti/training")
    return path


@pytest.fixture(scope="session")
def nuscenes_sweep() -> Path:
    root = os.environ.get("FFNET_DATA_DIR")
    d = Path(root or "") / "pointcloud" / "nuscenes" / "samples" / "LIDAR_TOP"
    files = sorted(d.glob("*.pcd.bin")) if root else []
    if not files:
        pytest.skip("no nuScenes sweep under FFNET_DATA_DIR")
    return files[0]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Six synthetic KITTI-format frames (seed 7), shared by the tests of one session."""
    from ffnet_3d.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, 6, seed=7, progress=False)
    return out


@pytest.fixture(scope="session")
def dev() -> torch.device:
    """Device under test: $FFNET_TEST_DEVICE, else CPU."""
    return torch.device(os.environ.get("FFNET_TEST_DEVICE", "cpu"))
