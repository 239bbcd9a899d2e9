"""``ffnet-3d eval`` scores exactly the KITTI result lines it writes (what the devkit would read)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ffnet_3d import inference
from ffnet_3d.checkpoint import save_weights
from ffnet_3d.cli import main
from ffnet_3d.config import get_preset
from ffnet_3d.io import KittiFrames, read_label
from ffnet_3d.kitti_eval import kitti_eval
from ffnet_3d.model import build_detector


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_weights(path, build_detector(cfg).eval(), cfg)
    return path


def _jittered_gt_predict(model, batch, cfg, device):
    """A stand-in detector: the labelled boxes, moved by a few cm, with full-precision scores.

    Boxes near an IoU threshold and scores that differ below the 4th decimal are where the
    in-memory and the written detections disagree.
    """
    out = []
    for gt, calib, fid in zip(batch["gt"], batch["calib"], batch["frame_ids"]):
        rng = np.random.default_rng(int(fid))
        objs = gt.select(np.isin(gt.name, list(cfg.data.classes)))
        boxes = objs.boxes_lidar(calib)
        boxes[:, :3] += rng.normal(0, 0.12, (len(boxes), 3))
        boxes[:, 3:6] *= rng.uniform(0.85, 1.15, (len(boxes), 3))
        scores = 0.5 + rng.uniform(0, 2e-4, len(boxes))
        out.append({"boxes": boxes, "scores": scores, "names": objs.name})
    return out


def test_printed_ap_equals_ap_of_written_files(synth_root, tiny_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inference, "predict", _jittered_gt_predict)
    res_dir, js = tmp_path / "results", tmp_path / "ap.json"
    assert main(["eval", "--checkpoint", str(tiny_ckpt), "--data", str(synth_root), "--json", str(js),
                 "--results", str(res_dir), "--quiet", "--threads", "1"]) == 0
    printed = json.loads(js.read_text())["ap"]

    # an outside evaluator: only the label files and the result files
    frames = KittiFrames(synth_root)
    gts = [frames.labels(f) for f in frames.ids]
    dts = [read_label(res_dir / f"{f}.txt") for f in frames.ids]
    from_files = kitti_eval(gts, dts, classes=("Car", "Pedestrian", "Cyclist"), metrics=("bev", "3d"))
    n_checked = 0
    for cls, per in printed.items():
        for metric, diffs in per.items():
            for d, r in diffs.items():
                ref = from_files[cls][metric][d]
                assert (r is None) == (ref is None)
                if r is not None:
                    assert r["R40"] == ref["R40"] and r["R11"] == ref["R11"], (cls, metric, d)
                    n_checked += 1
    assert n_checked > 0

    # the same detections at full precision score differently: the test above can fail
    batch = {"gt": gts, "calib": [frames.calib(f) for f in frames.ids], "frame_ids": frames.ids}
    cfg = get_preset("tiny")
    full = [inference.predictions_to_kitti(d, c, frames.image_shape(f))
            for d, c, f in zip(_jittered_gt_predict(None, batch, cfg, "cpu"), batch["calib"], frames.ids)]
    in_memory = kitti_eval(gts, full, classes=("Car", "Pedestrian", "Cyclist"), metrics=("bev", "3d"))
    differs = [(c, m, d) for c in in_memory for m in in_memory[c] for d in in_memory[c][m]
               if in_memory[c][m][d] is not None and in_memory[c][m][d]["R40"] != from_files[c][m][d]["R40"]]
    assert differs


def test_eval_refuses_to_overwrite_result_files(synth_root, tiny_ckpt, tmp_path, capsys):
    res_dir = tmp_path / "results"
    res_dir.mkdir()
    (res_dir / "000000.txt").write_text("keep me\n")
    assert main(["eval", "--checkpoint", str(tiny_ckpt), "--data", str(synth_root), "--json",
                 str(tmp_path / "ap.json"), "--results", str(res_dir), "--quiet", "--threads", "1"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (res_dir / "000000.txt").read_text() == "keep me\n"
