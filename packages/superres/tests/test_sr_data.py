"""Degradation and data pipeline: MATLAB bicubic vs BasicSR, bit-exact benchmark LR, aligned patches."""

import numpy as np
import pytest
import torch
from ffnet_sr.data import PairSampler, load_benchmark, load_rgb_u8
from ffnet_sr.imresize import bicubic_degrade, imresize
from PIL import Image


@pytest.fixture(scope="module")
def basicsr_imresize():
    from basicsr.utils.matlab_functions import imresize as ref
    from ffnet_sr import basicsr_plugin  # noqa: F401  (installs the torchvision shim)

    return ref


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4])
@pytest.mark.parametrize("shape", [(37, 52, 3), (64, 41, 1), (15, 19, 3)])
def test_imresize_matches_basicsr(basicsr_imresize, scale, shape):
    rng = np.random.default_rng(0)
    img = rng.random(shape).astype(np.float32)
    ref = basicsr_imresize(img, scale)
    ours = imresize(img.astype(np.float64), scale)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_imresize_tensor_batch_and_dtype():
    x = torch.rand(2, 3, 20, 30)
    y = imresize(x, 0.5)
    assert y.shape == (2, 3, 10, 15) and y.dtype == torch.float32
    # a constant image stays constant (weights sum to one, symmetric borders)
    c = imresize(torch.full((1, 12, 12), 0.3, dtype=torch.float64), 1 / 3)
    assert torch.allclose(c, torch.full_like(c, 0.3))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degradation_reproduces_benchmark_lr_bit_exact(data_dir, scale):
    """Our uint8 MATLAB-path degradation equals the published LR_bicubic PNGs of Set5 and Set14."""
    for sset in ("Set5", "Set14"):
        for f in sorted((data_dir / "superres" / sset / "HR").glob("*.png"))[:4]:
            _, lr = bicubic_degrade(load_rgb_u8(f), scale)
            ref = load_rgb_u8(data_dir / "superres" / sset / "LR_bicubic" / f"X{scale}" / f"{f.stem}x{scale}.png")
            assert torch.equal(lr, ref), f"{sset}/{f.name} x{scale}"


def test_pair_sampler_patches_are_aligned(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (70 + 10 * i, 90, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "small.png")  # skipped
    s = PairSampler([tmp_path], scale=2, lr_patch=16)
    assert len(s) == 3
    gen = torch.Generator().manual_seed(0)
    lq, gt = s.sample(8, gen)
    assert lq.shape == (8, 3, 16, 16) and gt.shape == (8, 3, 32, 32)
    assert 0 <= lq.min() and lq.max() <= 1
    # without augmentation, each LR patch is exactly a crop of its image's LR
    s.use_hflip = s.use_rot = False
    lq, gt = s.sample(4, torch.Generator().manual_seed(3))
    for k in range(4):
        found = False
        for lr, hr in zip(s.lr, s.hr):
            u8 = (lq[k] * 255).round().to(torch.uint8)
            win = lr.unfold(1, 16, 1).unfold(2, 16, 1)  # (3, nh, nw, 16, 16)
            hits = (win == u8[:, None, None]).all(-1).all(-1).all(0).nonzero()
            for y, x in hits.tolist():
                if torch.equal((gt[k] * 255).round().to(torch.uint8), hr[:, 2 * y : 2 * y + 32, 2 * x : 2 * x + 32]):
                    found = True
        assert found
    # same generator state -> same batch (exact resume relies on this)
    a = s.sample(4, torch.Generator().manual_seed(5))[0]
    b = s.sample(4, torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)


def test_load_benchmark_crops_hr_to_lr_times_scale(data_dir):
    pairs = load_benchmark(data_dir / "superres" / "Set5", 3)
    assert [p[0] for p in pairs] == ["baby", "bird", "butterfly", "head", "woman"]
    for _, hr, lr in pairs:
        assert hr.shape[1] == 3 * lr.shape[1] and hr.shape[2] == 3 * lr.shape[2]


def test_resolve_dataset_errors(monkeypatch, tmp_path):
    from ffnet_sr.data import resolve_dataset

    monkeypatch.setenv("FFNET_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_dataset("NoSuchSet")
    (tmp_path / "superres" / "Mine").mkdir(parents=True)
    assert resolve_dataset("Mine") == tmp_path / "superres" / "Mine"
