"""`ffnet-sr eval`: per-image + mean Y PSNR/SSIM, JSON, side-by-side crop, dataset resolution, errors."""

import json

import numpy as np
import pytest
import torch
from ffnet_sr.archs import create_model
from ffnet_sr.cli import main
from ffnet_sr.weights import save_weights
from PIL import Image


@pytest.fixture
def env_data(monkeypatch, data_dir):
    monkeypatch.setenv("FFNET_DATA_DIR", str(data_dir))
    return data_dir


def test_eval_json_and_crop(env_data, tmp_path, capsys):
    torch.manual_seed(0)
    w = tmp_path / "tiny_x3.safetensors"
    save_weights(create_model("ffnetsr_test", 3), w, {"type": "FFNetSR", "num_feat": 16, "num_block": 2}, 3)
    js, png = tmp_path / "r.json", tmp_path / "crop.png"
    assert main(["eval", "--data", "Set5", "-s", "3", "--weights", str(w), "--json", str(js),
                 "--crop-png", str(png), "--crop-image", "butterfly"]) == 0
    out = capsys.readouterr().out
    res = json.loads(js.read_text())
    assert [r["image"] for r in res["per_image"]] == ["baby", "bird", "butterfly", "head", "woman"]
    assert res["scale"] == 3 and res["psnr"] == pytest.approx(np.mean([r["psnr"] for r in res["per_image"]]))
    assert 0 < res["ssim"] < 1 and "crop_border=scale" in res["metric"]
    assert "mean" in out and "butterfly" in out
    with Image.open(png) as im:
        assert im.size[0] > 2 * im.size[1]  # three panels side by side


def test_eval_bicubic_reference(env_data, capsys):
    assert main(["eval", "--data", "Set5", "-s", "2", "--bicubic"]) == 0
    mean = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("mean")][0]
    assert abs(float(mean.split()[2]) - 33.66) < 0.03


def test_eval_errors(env_data, tmp_path, capsys):
    assert main(["eval", "--data", "NoSuchSet", "-s", "2", "--bicubic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ffnet-sr: error:") and "NoSuchSet" in err and err.count("\n") == 1
    assert main(["eval", "--data", "Set5", "-s", "4", "--model", "ffnetsr_light"]) == 2
    assert "no shipped weights" in capsys.readouterr().err
