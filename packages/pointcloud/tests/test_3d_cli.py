"""``ffnet-3d`` commands in-process: outputs, bad input -> one line + exit 2, no overwrite without --force."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ffnet_3d.checkpoint import SHIPPED_CHECKPOINT, save_weights
from ffnet_3d.cli import main
from ffnet_3d.config import get_preset
from ffnet_3d.io import read_label
from ffnet_3d.model import build_detector


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg.test.score_thresh = 0.0  # an untrained model: keep whatever it outputs
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_weights(path, build_detector(cfg).eval(), cfg)
    return path


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_synth_writes_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["synth", "--n", "2", "-o", str(tmp_path / "s"), "--quiet", "--seed", "3"]) == 0
    scan = tmp_path / "s" / "training" / "velodyne" / "000001.bin"
    before = scan.read_bytes()
    capsys.readouterr()
    assert main(["synth", "--n", "2", "-o", str(tmp_path / "s"), "--quiet", "--seed", "4"]) == 2
    err = _err(capsys)
    assert err.startswith("ffnet-3d: error: refusing to overwrite") and "\n" not in err
    assert scan.read_bytes() == before
    assert main(["synth", "--n", "1", "-o", str(tmp_path / "s"), "--quiet", "--seed", "4", "--force"]) == 0
    assert (tmp_path / "s" / "training" / "velodyne" / "000000.bin").read_bytes() != b""


def test_detect_on_real_kitti_frame(kitti_root, tiny_ckpt, tmp_path, capsys):
    scan = kitti_root / "velodyne" / "000001.bin"
    out = tmp_path / "det"
    assert main(["detect", str(scan), "--checkpoint", str(tiny_ckpt), "-o", str(out), "--threads", "1"]) == 0
    txt, png, js = out / "000001.txt", out / "000001_bev.png", out / "000001.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = read_label(txt)
    payload = json.loads(js.read_text())
    assert payload["calibration"] == "file"  # found ../calib/000001.txt next to the scan
    assert len(res) == len(payload["detections"]) > 0
    assert res.score is not None and all(len(line.split()) == 16 for line in txt.read_text().splitlines())
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == len(res)
    # a second run refuses to overwrite
    assert main(["detect", str(scan), "--checkpoint", str(tiny_ckpt), "-o", str(out)]) == 2
    assert "refusing to overwrite" in _err(capsys)


def test_detect_other_formats_and_render_flag(nuscenes_sweep, tiny_ckpt, tmp_path, capsys, monkeypatch):
    import ffnet_3d._open3d as o3dmod

    monkeypatch.setattr(o3dmod, "vulkan_available", lambda: False)
    assert main(["detect", str(nuscenes_sweep), "--checkpoint", str(tiny_ckpt), "-o", str(tmp_path),
                 "--render", "--threads", "1"]) == 0
    assert "skipped (no Vulkan driver)" in capsys.readouterr().err
    payload = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert payload["calibration"] == "default (none given)"


@pytest.mark.parametrize("make, args, msg", [
    (None, ["detect", "{tmp}/nope.bin"], "no such file"),
    ("trunc", ["detect", "{tmp}/trunc.bin"], "not a multiple of 16"),
    ("empty", ["detect", "{tmp}/empty.bin"], "empty point cloud"),
    (None, ["train", "--config", "no_such_preset", "--data", "{tmp}"], "neither a preset"),
    ("nolabels", ["eval", "--data", "{tmp}/nolabels", "--json", "{tmp}/e.json"], "needs label_2"),
    (None, ["eval", "--checkpoint", "{tmp}/nope.pt", "--data", "{tmp}", "--json", "{tmp}/e.json"], "no such checkpoint"),
    ("badcalib", ["detect", "{tmp}/ok.bin", "--calib", "{tmp}/calib.txt"], "missing calibration entries"),
])
def test_bad_input_is_one_line_and_exit_2(make, args, msg, tmp_path, tiny_ckpt, capsys):
    pts = np.zeros((10, 4), np.float32)
    if make == "trunc":
        (tmp_path / "trunc.bin").write_bytes(pts.tobytes()[:-4])
    elif make == "empty":
        (tmp_path / "empty.bin").write_bytes(b"")
    elif make == "nolabels":
        (tmp_path / "nolabels" / "velodyne").mkdir(parents=True)
        (tmp_path / "nolabels" / "velodyne" / "000000.bin").write_bytes(pts.tobytes())
    elif make == "badcalib":
        (tmp_path / "ok.bin").write_bytes(pts.tobytes())
        (tmp_path / "calib.txt").write_text("P2: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    argv = [a.format(tmp=tmp_path) for a in args]
    if argv[0] in ("detect", "eval") and "--checkpoint" not in argv:
        argv += ["--checkpoint", str(tiny_ckpt)]
    assert main(argv) == 2
    err = _err(capsys)
    assert err.startswith("ffnet-3d: error:") and msg in err and "\n" not in err


def test_eval_writes_json(synth_root, tiny_ckpt, tmp_path, capsys):
    js = tmp_path / "ap.json"
    assert main(["eval", "--checkpoint", str(tiny_ckpt), "--data", str(synth_root), "--json", str(js), "--quiet",
                 "--threads", "1"]) == 0
    payload = json.loads(js.read_text())
    assert set(payload["ap"]) == {"Car", "Pedestrian", "Cyclist"}
    assert set(payload["ap"]["Car"]) == {"bev", "3d"}
    assert "BEV AP40" in capsys.readouterr().out


def test_shipped_checkpoint_is_small_and_loads():
    assert SHIPPED_CHECKPOINT.is_file(), "the trained synthetic checkpoint ships inside the package"
    assert SHIPPED_CHECKPOINT.stat().st_size < 5 * 1024 * 1024
    from ffnet_3d.checkpoint import load_model

    model, cfg, meta = load_model()
    assert cfg.model.name == "ffnet3d" and meta["steps"] > 0 and meta["wall_time_s"] > 0


def test_synth_scene_version_flag_selects_the_generator(tmp_path):
    """--scene-version 1 reproduces the original generator (the README's AP tables), 2 is the new default."""
    import json

    import numpy as np

    for v in (1, 2):
        assert main(["synth", "--n", "1", "-o", str(tmp_path / f"v{v}"), "--quiet", "--seed", "5",
                     "--scene-version", str(v)]) == 0
        assert json.loads((tmp_path / f"v{v}" / "synth.json").read_text())["config"]["version"] == v
    a, b = (np.fromfile(tmp_path / f"v{v}" / "training" / "velodyne" / "000000.bin", dtype=np.float32)
            for v in (1, 2))
    assert a.size != b.size or not np.array_equal(a, b)
