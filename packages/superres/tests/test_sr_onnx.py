"""FFNetSR ONNX export and the onnxruntime upscale runtime: equal to fused PyTorch, dynamic axes, metadata, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ffnet.export import OnnxRuntimeModel, check_onnx, read_metadata
from ffnet_sr.archs import create_model
from ffnet_sr.cli import main
from ffnet_sr.export import SRExportWrapper, export_sr_onnx, load_sr_model, onnx_upscaler
from ffnet_sr.weights import save_weights
from PIL import Image

RTOL = 1e-4
TINY = {"type": "FFNetSR", "num_feat": 16, "num_block": 2, "mlp_ratio": 2.0}


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def mini(cache):
    """The shipped FFNetSR-mini x2 weights, exported through the upscale runtime's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FFNET_CACHE_DIR", str(cache))
    ort_model, scale, _ = onnx_upscaler(None, None, 2, threads=1)
    mp.undo()
    net, _, _, _ = load_sr_model(None, "ffnetsr_mini", 2)
    from ffnet import reparameterize_model

    ref = SRExportWrapper(reparameterize_model(net).eval())
    return ort_model, ref, scale


def _check(ort_model, ref, x):
    with torch.no_grad():
        want = ref(x).numpy()
    got = ort_model(x).numpy()
    assert got.shape == want.shape == (x.shape[0], 3, 2 * x.shape[2], 2 * x.shape[3])
    assert _rel(got, want) < RTOL


def test_mini_onnx_equals_fused_torch_random_two_sizes(mini):
    ort_model, ref, scale = mini
    assert scale == 2
    g = torch.Generator().manual_seed(0)
    for shape in [(1, 3, 32, 40), (3, 3, 45, 29)]:
        _check(ort_model, ref, torch.rand(*shape, generator=g))


def test_mini_onnx_equals_fused_torch_on_set5(mini, data_dir):
    ort_model, ref, _ = mini
    img = np.asarray(Image.open(data_dir / "superres" / "Set5" / "LR_bicubic" / "X2" / "birdx2.png").convert("RGB"))
    x = torch.from_numpy(img[:64, :72].transpose(2, 0, 1).astype(np.float32) / 255)[None]
    _check(ort_model, ref, x)


def test_light_onnx_equals_fused_torch(tmp_path):
    torch.manual_seed(0)
    net = create_model("ffnetsr_light", 2).eval()
    cfg = {"type": "FFNetSR", "num_feat": 96, "num_block": 36, "mlp_ratio": 2.0}
    path = export_sr_onnx(net, 2, tmp_path / "light.onnx", net_cfg=cfg)
    ort_model = OnnxRuntimeModel(path, threads=1)
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 3, 24, 24), (2, 3, 17, 30)]:
        _check(ort_model, SRExportWrapper(net), torch.rand(*shape, generator=g))
    assert read_metadata(path)["model_name"] == "ffnetsr_light"


def test_checker_and_metadata(mini):
    ort_model, ref, _ = mini
    check_onnx(ort_model.path)
    md = read_metadata(ort_model.path)
    assert md["model_name"] == "ffnetsr_mini" and md["scale"] == 2 and md["task"] == "super-resolution"
    assert md["network_g"]["num_block"] == 8 and md["receptive_radius"] == ref.net.receptive_radius()
    assert md["input_layout"].startswith("NCHW float32 RGB in [0, 1]")
    assert md == ort_model.metadata  # the session sees the same metadata


def test_upscale_runtime_onnxruntime_same_png(mini, cache, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FFNET_CACHE_DIR", str(cache))  # reuses the fixture's export
    src = data_dir / "superres" / "Set5" / "LR_bicubic" / "X2" / "butterflyx2.png"
    a, b = tmp_path / "torch.png", tmp_path / "ort.png"
    assert main(["upscale", "-q", str(src), "-o", str(a), "--threads", "1"]) == 0
    assert main(["upscale", "-q", str(src), "-o", str(b), "--threads", "1", "--runtime", "onnxruntime"]) == 0
    pa, pb = np.asarray(Image.open(a)).astype(int), np.asarray(Image.open(b)).astype(int)
    assert pa.shape == pb.shape == (256, 256, 3)
    assert np.abs(pa - pb).max() <= 1
    # an .onnx file given as --weights runs on onnxruntime too
    c = tmp_path / "direct.png"
    assert main(["upscale", "-q", str(src), "-o", str(c), "--weights", str(mini[0].path)]) == 0
    assert np.array_equal(np.asarray(Image.open(c)), np.asarray(Image.open(b)))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny_x3.safetensors"
    save_weights(create_model("ffnetsr_test", 3), path, {**TINY, "upscale": 3}, 3)
    return path


def test_export_cli_and_bad_inputs(tmp_path, tiny_weights, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--onnx", str(out), "--weights", str(tiny_weights)]) == 0
    assert read_metadata(out)["scale"] == 3
    before = out.read_bytes()

    def fails(*args: str, match: str) -> None:
        capsys.readouterr()
        assert main(list(args)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err

    fails("export", "--onnx", str(out), "--weights", str(tiny_weights), match="--force")
    ts_ckpt = tmp_path / "ts.pt"
    torch.save({"format": "ffnet-ts/1", "state_dict": {}}, ts_ckpt)
    fails("export", "--onnx", str(out), str(ts_ckpt), "--force", match="ffnet-ts")
    fails("export", "--onnx", str(out), str(tmp_path / "missing.pt"), "--force", match="not found")
    fails("export", "--onnx", str(out), "--model", "ffnetsr_light", "-s", "3", "--force", match="no shipped weights")
    fails("export", "--onnx", str(out), "--weights", str(tiny_weights), "-s", "2", "--force", match="x3 model")
    assert out.read_bytes() == before  # nothing overwritten by a failed export
    # the runtime switch with an unusable .onnx: one line, exit 2, no output written
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    img = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    fails("upscale", "-q", str(img), "-o", str(tmp_path / "o.png"), "--weights", str(bad), match="bad.onnx")
    assert not (tmp_path / "o.png").exists()
    # the tiny export runs: x3, dynamic size
    y = OnnxRuntimeModel(out, threads=1)(torch.rand(2, 3, 10, 7))
    assert tuple(y.shape) == (2, 3, 30, 21) and 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_export_from_training_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = create_model("ffnetsr_test", 2)
    ck = tmp_path / "ckpt_last.pt"
    torch.save({"iter": 1, "params": net.state_dict(), "params_ema": net.state_dict(), "network_g": TINY,
                "scale": 2}, ck)
    loaded, scale, cfg, _ = load_sr_model(ck)
    assert scale == 2 and cfg == TINY
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    assert Path(ck).is_file()
