"""KITTI / nuScenes / pcd IO, calibration and camera <-> LiDAR box conversions."""
from __future__ import annotations

import numpy as np
import pytest
from ffnet_3d.boxes import Calibration, boxes_to_corners_3d, points_in_boxes
from ffnet_3d.io import (
    KittiFrames,
    KittiObjects,
    PointCloudError,
    parse_label_lines,
    read_calib,
    read_label,
    read_points,
    write_bin,
    write_calib,
    write_label,
    write_pcd,
)
from ffnet_3d.synth import synth_calibration


def test_every_labelled_car_contains_lidar_points(kitti_root):
    frames = KittiFrames(kitti_root)
    assert len(frames) == 6
    n_cars = 0
    for fid in frames.ids:
        labels, calib, pts = frames.labels(fid), frames.calib(fid), frames.points(fid)
        cars = labels.select(labels.name == "Car")
        boxes = cars.boxes_lidar(calib)
        counts = points_in_boxes(pts, boxes).sum(0)
        assert (counts > 0).all(), (fid, counts)
        # the same boxes moved 10 m sideways are (nearly) empty: the conversion is not vacuous
        moved = boxes.copy()
        moved[:, 1] += 10.0
        assert (points_in_boxes(pts, moved).sum(0) < counts).all()
        n_cars += len(cars)
    assert n_cars == 5  # data/README.md: Car 5


def test_camera_lidar_roundtrip_and_projection(kitti_root):
    frames = KittiFrames(kitti_root)
    for fid in frames.ids:
        labels, calib = frames.labels(fid), frames.calib(fid)
        objs = labels.select(np.isin(labels.name, ["Car", "Cyclist", "Truck"]))
        if len(objs) == 0:
            continue
        boxes = objs.boxes_lidar(calib)
        loc, dims, ry = calib.boxes_lidar_to_camera(boxes)
        np.testing.assert_allclose(loc, objs.loc, atol=1e-9)
        np.testing.assert_allclose(dims, objs.dims, atol=1e-12)
        np.testing.assert_allclose(np.cos(ry - objs.ry), 1.0, atol=1e-12)
        # projecting the 3D box with P2 reproduces the annotated 2D box of rigid objects (within pixels)
        bbox, _, in_front = calib.boxes_to_image_bbox(boxes, frames.image_shape(fid))
        assert in_front.all()
        assert np.abs(bbox - objs.bbox).max() < 2.0


def test_heading_convention():
    calib = synth_calibration()  # camera: x right = -y_lidar, z forward = x_lidar
    # a car 10 m ahead facing +x (forward) in LiDAR has ry = -pi/2 in the camera frame
    loc, dims, ry = calib.boxes_lidar_to_camera(np.array([[10.0, 0.0, -0.9, 4.0, 1.6, 1.5, 0.0]]))
    np.testing.assert_allclose(ry, [-np.pi / 2])
    np.testing.assert_allclose(dims, [[1.5, 1.6, 4.0]])
    corners = boxes_to_corners_3d(np.array([[10.0, 0.0, -0.9, 4.0, 1.6, 1.5, np.pi / 2]]))[0]
    np.testing.assert_allclose(np.ptp(corners[:, 0]), 1.6, atol=1e-12)  # rotated 90 deg: width along x
    np.testing.assert_allclose(np.ptp(corners[:, 1]), 4.0, atol=1e-12)


def test_image_shape_from_png(kitti_root):
    frames = KittiFrames(kitti_root)
    assert frames.image_shape("000000") == (370, 1224)
    assert frames.image_shape("000001") == (375, 1242)


def test_label_parsing_and_roundtrip(tmp_path, kitti_root):
    objs = read_label(kitti_root / "label_2" / "000001.txt")
    assert list(objs.name) == ["Truck", "Car", "Cyclist"] + ["DontCare"] * 4
    assert objs.score is None
    res = KittiObjects(**{**objs.__dict__, "score": np.linspace(0.9, 0.1, len(objs))})
    write_label(tmp_path / "r.txt", res)
    back = read_label(tmp_path / "r.txt")
    assert back.score is not None and len(back.to_lines()[0].split()) == 16
    np.testing.assert_allclose(back.loc, objs.loc, atol=0.006)
    np.testing.assert_allclose(back.score, res.score, atol=1e-4)


@pytest.mark.parametrize("bad, msg", [
    ("Car 0 0 0 1 2 3 4 1.5 1.6 4.0 1 2 30", "expected 15 fields"),
    ("Car 0 0 0 1 2 3 4 1.5 1.6 4.0 1 2 30 x", "non-numeric"),
])
def test_label_errors(bad, msg):
    with pytest.raises(PointCloudError, match=msg):
        parse_label_lines(["Car 0 0 0 1 2 3 4 1.5 1.6 4.0 1 2 30 0.1", bad], "f.txt")


def test_calib_roundtrip_and_errors(tmp_path, kitti_root):
    calib = read_calib(kitti_root / "calib" / "000001.txt")
    write_calib(tmp_path / "c.txt", calib)
    back = read_calib(tmp_path / "c.txt")
    for a, b in ((calib.P2, back.P2), (calib.R0, back.R0), (calib.V2C, back.V2C)):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    pts = np.random.default_rng(0).uniform(-20, 20, (50, 3))
    np.testing.assert_allclose(calib.rect_to_lidar(calib.lidar_to_rect(pts)), pts, atol=1e-9)
    (tmp_path / "bad.txt").write_text("P2: 1 2 3\nR0_rect: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(PointCloudError, match="P2 needs 12 values"):
        read_calib(tmp_path / "bad.txt")
    (tmp_path / "missing.txt").write_text("R0_rect: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(PointCloudError, match="missing calibration entries"):
        read_calib(tmp_path / "missing.txt")


def test_bin_validation(tmp_path):
    pts = np.arange(40, dtype=np.float32).reshape(10, 4)
    write_bin(tmp_path / "ok.bin", pts)
    np.testing.assert_array_equal(read_points(tmp_path / "ok.bin"), pts)
    (tmp_path / "trunc.bin").write_bytes(pts.tobytes()[:-3])
    with pytest.raises(PointCloudError, match="not a multiple of 16"):
        read_points(tmp_path / "trunc.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(PointCloudError, match="empty point cloud"):
        read_points(tmp_path / "empty.bin")
    bad = pts.copy()
    bad[3, 1] = np.nan
    bad[7, 3] = np.inf
    write_bin(tmp_path / "nan.bin", bad)
    with pytest.warns(UserWarning, match="dropped 2 of 10"):
        got = read_points(tmp_path / "nan.bin")
    assert len(got) == 8 and np.isfinite(got).all()
    write_bin(tmp_path / "allnan.bin", np.full((3, 4), np.nan, np.float32))
    with pytest.raises(PointCloudError, match="all 3 points"):
        read_points(tmp_path / "allnan.bin")
    with pytest.raises(PointCloudError, match="unsupported"):
        read_points(tmp_path / "x.las")
    with pytest.raises(PointCloudError, match="no such file"):
        read_points(tmp_path / "nope.bin")


def test_kitti_scan_and_nuscenes_sweep(kitti_root, nuscenes_sweep):
    pts = read_points(kitti_root / "velodyne" / "000000.bin")
    assert pts.shape == (115384, 4) and pts.dtype == np.float32
    assert 0.0 <= pts[:, 3].min() and pts[:, 3].max() <= 1.0
    nus = read_points(nuscenes_sweep)
    assert nus.shape == (34688, 4)  # 5 floats per point, ring index dropped
    assert 0.0 <= nus[:, 3].min() and nus[:, 3].max() <= 1.0  # 0..255 scaled
    raw = np.fromfile(nuscenes_sweep, dtype=np.float32).reshape(-1, 5)
    np.testing.assert_allclose(nus[:, 3] * 255.0, raw[:, 3], rtol=1e-6)


@pytest.mark.parametrize("suffix", [".pcd", ".ply"])
def test_open3d_formats_roundtrip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.uniform(-30, 30, (500, 3)), rng.uniform(0, 1, (500, 1))], 1).astype(np.float32)
    write_pcd(tmp_path / f"c{suffix}", pts)
    back = read_points(tmp_path / f"c{suffix}")
    np.testing.assert_allclose(back, pts, atol=1e-5)


def test_open3d_empty_file_is_an_error(tmp_path):
    (tmp_path / "e.pcd").write_text("")
    with pytest.raises(PointCloudError):
        read_points(tmp_path / "e.pcd")


def test_kitti_frames_layouts(kitti_root, tmp_path):
    assert KittiFrames(kitti_root.parent.parent).split_dir == kitti_root  # pointcloud/kitti -> training
    with pytest.raises(PointCloudError, match="no velodyne"):
        KittiFrames(tmp_path)


def test_calibration_fov_mask():
    calib = Calibration(synth_calibration().P2, np.eye(3), synth_calibration().V2C)
    pts = np.array([[10.0, 0.0, 0.0], [-10.0, 0.0, 0.0], [10.0, 30.0, 0.0]])
    np.testing.assert_array_equal(calib.fov_mask(pts, (375, 1242)), [True, False, False])
