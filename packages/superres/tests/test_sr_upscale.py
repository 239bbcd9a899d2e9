"""`ffnet-sr upscale`: exact tiling, image modes and bit depths, overwrite safety, bad input handling."""

import os

import numpy as np
import pytest
import torch
from ffnet_sr.archs import create_model
from ffnet_sr.cli import main
from ffnet_sr.upscale import read_image, tiled_upscale
from ffnet_sr.weights import save_weights
from PIL import Image

MINI = {"type": "FFNetSR", "num_feat": 48, "num_block": 8, "mlp_ratio": 2.0}
TINY = {"type": "FFNetSR", "num_feat": 16, "num_block": 2, "mlp_ratio": 2.0}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    m = create_model("ffnetsr_test", 2)
    path = tmp_path_factory.mktemp("w") / "tiny_x2.safetensors"
    save_weights(m, path, {**TINY, "upscale": 2}, 2)
    return path


def rand_img(h, w, c=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    # smooth-ish content so the network sees image-like statistics
    base = rng.integers(0, hi, (h // 4 + 2, w // 4 + 2, c)).astype(np.float64)
    img = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
    return np.clip(img + rng.normal(0, hi * 0.02, img.shape), 0, hi).astype(dtype)


@pytest.mark.parametrize("tile", [32, 45])
def test_tiled_equals_untiled(tile):
    """With overlap >= the receptive radius (26 for ffnetsr_mini; the CLI default is 32) tiling is exact."""
    torch.manual_seed(0)
    m = create_model("ffnetsr_mini", 2).eval()
    img = rand_img(100, 90)
    full = tiled_upscale(m, img, 2, tile=None, out_dtype=np.float32)
    tiled = tiled_upscale(m, img, 2, tile=tile, overlap=32, out_dtype=np.float32)
    assert full.shape == (200, 180, 3)
    assert np.abs(full - tiled).max() < 1e-4
    # the check can fail: without enough context, tile seams differ
    seams = tiled_upscale(m, img, 2, tile=tile, overlap=4, out_dtype=np.float32)
    assert np.abs(full - seams).max() > 1e-4


def test_tiled_uint8_equals_untiled_uint8_channels_last_device(device):
    torch.manual_seed(1)
    m = create_model("ffnetsr_test", 3).eval().to(device)
    img = rand_img(37, 53)
    a = tiled_upscale(m, img, 3, tile=None, device=device)
    b = tiled_upscale(m, img, 3, tile=16, overlap=16, device=device)
    assert a.dtype == np.uint8 and a.shape == (111, 159, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float-equal before rounding


def _run(args, capsys):
    rc = main(["upscale", "-q", *args])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16", "RGB16", "RGBA16", "JPEG"])
def test_modes_and_bit_depths(mode, tmp_path, tiny_weights, capsys):
    import cv2

    src = tmp_path / ("in.jpg" if mode == "JPEG" else "in.png")
    h, w = 21, 30
    if mode in ("RGB16", "RGBA16"):
        arr = rand_img(h, w, 4 if mode == "RGBA16" else 3, np.uint16)
        cv2.imwrite(str(src), np.ascontiguousarray(arr[..., [2, 1, 0, 3][: arr.shape[2]]]))
    elif mode == "I;16":
        Image.fromarray(rand_img(h, w, 1, np.uint16)[..., 0]).save(src)
    elif mode == "P":
        im = Image.fromarray(rand_img(h, w)).convert("P", palette=Image.Palette.ADAPTIVE)
        im.info["transparency"] = 0
        im.save(src, transparency=0)
    elif mode == "JPEG":
        Image.fromarray(rand_img(h, w)).save(src, quality=90)
    else:
        c = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
        a = rand_img(h, w, c)
        Image.fromarray(a[..., 0] if c == 1 else a, mode).save(src)
    dst = tmp_path / "out.png"
    rc, err = _run([str(src), "-o", str(dst), "--weights", str(tiny_weights), "--tile", "8"], capsys)
    assert rc == 0, err
    out, inp = read_image(dst), read_image(src)
    assert out.color.shape[:2] == (2 * h, 2 * w)
    assert out.color.shape[2] == inp.color.shape[2]  # gray stays gray, colour stays colour
    assert out.color.dtype == inp.color.dtype  # 8-bit stays 8-bit, 16-bit stays 16-bit
    assert (out.alpha is None) == (inp.alpha is None)
    if out.alpha is not None:
        assert out.alpha.shape == (2 * h, 2 * w)
        # alpha is upscaled on its own (bicubic), not through the network
        small = out.alpha.astype(np.float64).reshape(h, 2, w, 2).mean((1, 3))
        assert np.abs(small - inp.alpha).mean() < 0.1 * np.iinfo(inp.alpha.dtype).max
    if out.color.dtype == np.uint16:
        assert out.color.max() > 255  # real 16-bit output, not 8-bit data in a 16-bit container


def test_overwrite_protection_and_force(tmp_path, tiny_weights, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(rand_img(16, 16)).save(src)
    dst = tmp_path / "a_x2.png"
    dst.write_bytes(b"precious")
    rc, err = _run([str(src), "--weights", str(tiny_weights)], capsys)
    assert rc == 2 and "exists" in err and "--force" in err
    assert dst.read_bytes() == b"precious"
    rc, err = _run([str(src), "--weights", str(tiny_weights), "--force"], capsys)
    assert rc == 0 and read_image(dst).color.shape == (32, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x2.png"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert dst.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_bad_inputs_fail_one_line_each_and_batch_continues(tmp_path, tiny_weights, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(rand_img(16, 16)).save(d / "good1.png")
    Image.fromarray(rand_img(12, 20)).save(d / "good2.jpg")
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is not an image\n")
    good = (d / "good1.png").read_bytes()
    (d / "corrupt.png").write_bytes(good[:60] + b"\x00" * 40)
    out = tmp_path / "out"
    rc, err = _run([str(d), str(tmp_path / "missing.png"), "-o", str(out), "--weights", str(tiny_weights)], capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("ffnet-sr: error:")]
    assert len(lines) == 5  # 4 bad files + the summary line
    for name in ("empty.png", "text.png", "corrupt.png", "missing.png"):
        assert sum(name in ln for ln in lines) == 1
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["good1_x2.png", "good2_x2.png"]


def test_glob_input_and_cli_errors(tmp_path, tiny_weights, capsys):
    for i in range(2):
        Image.fromarray(rand_img(10, 10, seed=i)).save(tmp_path / f"g{i}.png")
    rc, err = _run([str(tmp_path / "g*.png"), "-o", str(tmp_path / "o"), "--weights", str(tiny_weights)], capsys)
    assert rc == 0, err
    assert len(list((tmp_path / "o").glob("*_x2.png"))) == 2
    rc, err = _run([str(tmp_path / "nomatch*.png"), "--weights", str(tiny_weights)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "no files match" in err
    rc, err = _run([str(tmp_path / "g0.png"), "--weights", str(tmp_path / "nope.safetensors")], capsys)
    assert rc == 2 and "not found" in err
    rc, err = _run([str(tmp_path / "g0.png"), "-s", "3", "--weights", str(tiny_weights)], capsys)
    assert rc == 2 and "x2 model" in err
    with pytest.raises(SystemExit) as e:
        main(["upscale", str(tmp_path / "g0.png"), "-s", "5"])
    assert e.value.code == 2
