"""Training-time augmentation (flip / rotation / scaling, ground-truth sampling) and the version-2
synthetic scenes: boxes and points stay consistent, everything is a function of the seed."""
from __future__ import annotations

import numpy as np
import pytest
from ffnet_3d.boxes import points_in_boxes
from ffnet_3d.config import config_from_dict, get_preset
from ffnet_3d.data import KittiDetectionDataset
from ffnet_3d.iou import bev_iou_numba
from ffnet_3d.synth import SynthConfig, beam_elevations, generate_frame


def _dataset(root, **data):
    cfg = config_from_dict({"data": data}, get_preset("tiny"))
    return KittiDetectionDataset(root, cfg, (32, 32), 4, training=True), cfg


def _random_scene(rng, n_boxes=6, n_pts=3000):
    boxes = np.zeros((n_boxes, 7))
    boxes[:, 0] = rng.uniform(5, 40, n_boxes)
    boxes[:, 1] = rng.uniform(-15, 15, n_boxes)
    boxes[:, 2] = rng.uniform(-1.5, 0.0, n_boxes)
    boxes[:, 3:6] = rng.uniform(0.5, 4.0, (n_boxes, 3))
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n_boxes)
    near = []
    for b in boxes:  # points around each box (local frame, up to 20 % beyond its faces), rotated into place
        loc = rng.uniform(-0.6, 0.6, (200, 3)) * b[3:6]
        c, s = np.cos(b[6]), np.sin(b[6])
        xy = loc[:, :2] @ np.array([[c, s], [-s, c]])
        near.append(np.c_[xy + b[:2], loc[:, 2] + b[2], rng.random(200)])
    pts = np.concatenate([rng.uniform([0, -20, -3, 0], [45, 20, 1, 1], (n_pts, 4))] + near).astype(np.float32)
    return pts, boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_augment_keeps_points_in_their_boxes(synth_root, seed):
    ds, _ = _dataset(synth_root, flip_y=True, rot_range=[-3.0, 3.0], scale_range=[0.8, 1.2])
    rng = np.random.default_rng(seed)
    pts, boxes = _random_scene(rng)
    before = points_in_boxes(pts, boxes)
    p2, b2 = ds._augment(np.random.default_rng(seed + 100), pts.copy(), boxes.copy())
    after = points_in_boxes(p2, b2)
    # membership is unchanged except within float32 rounding of the box surfaces
    margin_in = points_in_boxes(p2, b2, margin=1e-3)
    margin_out = points_in_boxes(p2, b2, margin=-1e-3)
    assert (before <= margin_in).all() and (margin_out <= before).all()
    assert (before == after).mean() > 0.999
    assert before.sum() > 400  # about (5/6)^3 of the 200 points per box
    # distances between points (a rigid motion times a scale) and box volumes scale consistently
    s = np.linalg.norm(p2[1, :3] - p2[0, :3]) / np.linalg.norm(pts[1, :3] - pts[0, :3])
    np.testing.assert_allclose(b2[:, 3:6], boxes[:, 3:6] * s, rtol=1e-5)
    np.testing.assert_allclose(p2[:, 3], pts[:, 3])  # intensity untouched


def test_gt_sampling_pastes_consistent_objects(synth_root):
    ds, cfg = _dataset(synth_root, gt_sample_max=[6, 4, 4], gt_sample_min_points=5)
    points, boxes, labels, _ = ds._load(ds.ids[0])
    rng = np.random.default_rng(5)
    p2, b2, l2 = ds._gt_sample(rng, 0, points, boxes, labels)
    n_new = len(b2) - len(boxes)
    assert n_new > 0, "nothing pasted"
    np.testing.assert_array_equal(b2[: len(boxes)], boxes)
    np.testing.assert_array_equal(l2[: len(boxes)], labels)
    # pasted boxes come from the database (another frame) and collide with nothing
    db = [(src, box, pts) for c in ds._gt_db.values() for src, box, pts in c]
    for b in b2[len(boxes):]:
        src = [e for e in db if np.array_equal(e[1], b)]
        assert src and all(e[0] != 0 for e in src)
    iou = bev_iou_numba(b2, b2)
    np.fill_diagonal(iou, 0.0)
    assert iou[len(boxes):].max() == 0.0
    # each pasted box holds exactly the database points of that object (scene points there were removed)
    inside = points_in_boxes(p2, b2[len(boxes):])
    for k, b in enumerate(b2[len(boxes):]):
        obj_pts = next(e[2] for e in db if np.array_equal(e[1], b))
        got = p2[inside[:, k]]
        assert len(got) == len(obj_pts)
        np.testing.assert_array_equal(np.sort(got, axis=0), np.sort(obj_pts, axis=0))
        assert len(obj_pts) >= cfg.data.gt_sample_min_points
    # class indices of pasted objects match the database pool they came from
    for b, c in zip(b2[len(boxes):], l2[len(boxes):]):
        assert any(np.array_equal(e[1], b) for e in ds._gt_db[int(c)])


def test_gt_sampling_in_getitem_is_seeded(synth_root):
    ds, _ = _dataset(synth_root, gt_sample_max=[4, 2, 2])
    ds.set_epoch(3)
    a, b = ds[1], ds[1]
    np.testing.assert_array_equal(a.voxels.numpy(), b.voxels.numpy())
    ds.set_epoch(4)
    c = ds[1]
    assert a.voxels.shape != c.voxels.shape or not np.array_equal(a.voxels.numpy(), c.voxels.numpy())
    # without GT sampling the first frame's targets hold no more objects than with it
    ds0, _ = _dataset(synth_root)
    ds0.set_epoch(3)
    assert int(ds0[1].targets["mask"].sum()) <= int(a.targets["mask"].sum())


def test_synth_v2_deterministic_and_version1_unchanged():
    cfg = SynthConfig()
    assert cfg.version == 2
    a = generate_frame(cfg, 3, 2)
    b = generate_frame(cfg, 3, 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    assert a[1].to_lines() == b[1].to_lines()
    c = generate_frame(cfg, 3, 3)
    assert not np.array_equal(a[2], c[2])
    v1 = generate_frame(SynthConfig(version=1), 3, 2)
    assert len(v1[0]) != len(a[0])  # a different world ...
    np.testing.assert_array_equal(v1[0], generate_frame(SynthConfig(version=1), 3, 2)[0])  # ... and seeded too
    with pytest.raises(ValueError, match="version"):
        generate_frame(SynthConfig(version=9), 0, 0)


def test_synth_v2_sensor_and_labels():
    cfg = SynthConfig()
    pts, objs, boxes, names, owner = generate_frame(cfg, 0, 4, return_owner=True)
    r = np.linalg.norm(pts[:, :3], axis=1)
    elev = np.degrees(np.arcsin(pts[:, 2] / r))
    nominal = beam_elevations(cfg)
    # two HDL-64E blocks: upper rings denser than lower ones; per-laser offsets stay small
    assert np.diff(nominal[:32]).mean() > np.diff(nominal[32:]).mean()
    assert np.abs(elev[:, None] - nominal[None]).min(1).max() < 2.5 * cfg.beam_elev_jitter + 0.01
    assert 0.0 <= pts[:, 3].min() and pts[:, 3].max() <= 1.0
    # every point the sensor got from object k lies in label box k (range noise only)
    hit = owner >= 0
    assert hit.sum() > 100
    inside = points_in_boxes(pts, boxes, margin=0.08)
    assert inside[np.flatnonzero(hit), owner[hit]].all()


def test_train_init_warm_starts_and_checks_the_model(synth_root, tmp_path):
    import torch
    from ffnet_3d.checkpoint import read_checkpoint, save_weights
    from ffnet_3d.model import build_detector
    from ffnet_3d.train import train

    cfg = config_from_dict({"train": {"log_every": 1, "lr": 0.0, "weight_decay": 0.0}}, get_preset("tiny"))
    torch.manual_seed(123)
    src = build_detector(cfg)
    save_weights(tmp_path / "init.safetensors", src, cfg)
    cfg.train.init = str(tmp_path / "init.safetensors")
    out = train(cfg, synth_root, tmp_path / "run", ids=["000000", "000001"], max_steps=1, progress=False, threads=1)
    sd, _, _ = read_checkpoint(out)
    ref = src.state_dict()
    # lr 0: the one step leaves the weights where the warm start put them (BN running stats do move)
    for k, v in sd.items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(v, ref[k], msg=k)
    assert "initialised from" in (tmp_path / "run" / "train.log").read_text()
    other = config_from_dict({"model": {"head_chs": 8}, "train": {"init": cfg.train.init}}, get_preset("tiny"))
    with pytest.raises(ValueError, match="model config differs"):
        train(other, synth_root, tmp_path / "bad", ids=["000000"], max_steps=1, progress=False, threads=1)
