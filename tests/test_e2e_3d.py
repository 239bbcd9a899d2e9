"""End to end: the README's ``ffnet-3d`` commands through the installed console script."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXE = shutil.which("ffnet-3d")


def run(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    res = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.skipif(EXE is None, reason="ffnet-3d console script not installed")
def test_synth_train_eval_detect(tmp_path):
    data, run_dir = tmp_path / "synth", tmp_path / "run"
    run("synth", "--n", "4", "-o", data, "--seed", "5", "--quiet")
    assert len(list((data / "training" / "label_2").glob("*.txt"))) == 4
    run("train", "--config", "tiny", "--data", data, "-o", run_dir, "--max-steps", "2", "--threads", "1", "--quiet")
    ckpt = run_dir / "model.safetensors"
    assert ckpt.is_file() and (run_dir / "last.pt").is_file() and (run_dir / "config.yaml").is_file()
    res = run("eval", "--checkpoint", ckpt, "--data", data, "--json", tmp_path / "ap.json", "--quiet", "--threads", "1")
    assert "| Car |" in res.stdout
    assert set(json.loads((tmp_path / "ap.json").read_text())["ap"]) == {"Car", "Pedestrian", "Cyclist"}
    run("detect", data / "training" / "velodyne" / "000002.bin", "--checkpoint", ckpt, "-o", tmp_path / "det",
        "--threads", "1")
    assert (tmp_path / "det" / "000002_bev.png").is_file()
    # bad input through the console script: one line, exit code 2, nothing written
    bad = run("detect", tmp_path / "missing.bin", "-o", tmp_path / "det2", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("ffnet-3d: error:")
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "det2").exists()


@pytest.mark.skipif(EXE is None, reason="ffnet-3d console script not installed")
def test_shipped_checkpoint_on_a_real_kitti_frame(tmp_path):
    root = os.environ.get("FFNET_DATA_DIR")
    scan = Path(root or "") / "pointcloud" / "kitti" / "training" / "velodyne" / "000003.bin"
    if not root or not scan.is_file():
        pytest.skip("FFNET_DATA_DIR does not hold the KITTI frames")
    res = run("detect", scan, "-o", tmp_path, "--threads", "1")
    payload = json.loads((tmp_path / "000003.json").read_text())
    assert payload["calibration"] == "file"
    assert len(res.stdout.strip().splitlines()) == len(payload["detections"])
    assert (tmp_path / "000003_bev.png").stat().st_size > 10_000
