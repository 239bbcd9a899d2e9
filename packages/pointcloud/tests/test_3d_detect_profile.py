"""The staged detect path (``ffnet-3d detect --profile``) computes what the plain model computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ffnet_3d.checkpoint import save_weights
from ffnet_3d.cli import main
from ffnet_3d.config import get_preset
from ffnet_3d.data import prepare_points
from ffnet_3d.inference import (
    DETECT_STAGES,
    StageTimer,
    crop_points,
    detect_batch,
    detect_points,
    forward_staged,
    voxel_batch,
)
from ffnet_3d.io import KittiFrames, read_label
from ffnet_3d.model import build_detector


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg.test.score_thresh = 0.0
    model = build_detector(cfg).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model, cfg


def test_crop_equals_prepare_points(kitti_root):
    frames = KittiFrames(kitti_root)
    for preset in ("kitti", "synth_cpu"):
        cfg = get_preset(preset)
        for fid in frames.ids:
            pts, calib, shape = frames.points(fid), frames.calib(fid), frames.image_shape(fid)
            ref = prepare_points(pts, cfg, calib, shape)
            assert 1000 < len(ref) < len(pts)
            np.testing.assert_array_equal(crop_points(pts, cfg, calib, shape), ref)


def test_staged_forward_equals_model_forward(kitti_root, tiny):
    model, cfg = tiny
    frames = KittiFrames(kitti_root)
    batch = voxel_batch([crop_points(frames.points(f), cfg, frames.calib(f), frames.image_shape(f))
                         for f in frames.ids[:2]], cfg)
    timer = StageTimer()
    with torch.no_grad():
        a = model(batch["voxels"], batch["coords"], 2)
        b = forward_staged(model, batch["voxels"], batch["coords"], 2, timer)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k])
    assert set(timer.wall) == {"encoder", "bev", "neck", "head"}


def test_batched_detection_equals_single_scans(kitti_root, tiny):
    model, cfg = tiny
    frames = KittiFrames(kitti_root)
    scans = [(frames.points(f), frames.calib(f), frames.image_shape(f)) for f in frames.ids[:2]]
    timer = StageTimer()
    batched = detect_batch(model, cfg, scans, timer=timer)
    assert set(DETECT_STAGES) - set(timer.wall) <= {"read", "lines"}
    for scan, det in zip(scans, batched):
        single = detect_points(model, cfg, *scan)
        assert len(single["boxes"]) == len(det["boxes"]) > 0
        np.testing.assert_allclose(single["boxes"], det["boxes"], atol=1e-4)
        np.testing.assert_allclose(single["scores"], det["scores"], atol=1e-5)


def test_stage_timer_nesting_adds_up():
    timer = StageTimer()
    with timer("decode"):
        with timer("nms"):
            sum(range(10000))
    wall, _ = timer.total()
    assert set(timer.wall) == {"decode", "nms"} and min(timer.wall.values()) >= 0
    assert wall == pytest.approx(timer.wall["decode"] + timer.wall["nms"])


def test_detect_profile_prints_stage_table(kitti_root, tiny, tmp_path, capsys):
    model, cfg = tiny
    ckpt = tmp_path / "tiny.safetensors"
    save_weights(ckpt, model, cfg)
    scan = kitti_root / "velodyne" / "000002.bin"
    out = tmp_path / "det"
    assert main(["detect", str(scan), "--checkpoint", str(ckpt), "-o", str(out), "--threads", "1",
                 "--profile"]) == 0
    cap = capsys.readouterr()
    rows = {line.split("|")[1].strip(): line for line in cap.err.splitlines() if line.startswith("| ")}
    for stage in DETECT_STAGES:
        assert stage in rows, stage
    assert "**total**" in rows and "(png, not in total)" in rows
    # stdout still carries only the KITTI lines, the same as the files
    assert cap.out.strip().splitlines() == (out / "000002.txt").read_text().strip().splitlines()
    assert len(read_label(out / "000002.txt")) > 0


def test_detect_passive_omp_wait_only_on_a_busy_machine_before_torch(monkeypatch):
    import os
    import sys

    from ffnet_3d import cli

    assert cli._busy(1.5, 2) and cli._busy(13.0, 2) and cli._busy(8.0, 8)
    assert not cli._busy(0.7, 2) and not cli._busy(6.5, 8) and not cli._busy(0.3, 1)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (12.0, 12.0, 12.0))
    cli._passive_omp_wait()  # torch is loaded in this process: too late to matter, leave env alone
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    cli._passive_omp_wait()  # idle machine: torch's default (spinning) stays
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(os, "getloadavg", lambda: (12.0, 12.0, 12.0))
    cli._passive_omp_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's choice wins
    cli._passive_omp_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
