"""Our PSNR/SSIM equal BasicSR's calculate_psnr / calculate_ssim (Y channel, crop_border = scale)."""

import numpy as np
import pytest
from ffnet_sr.data import load_benchmark
from ffnet_sr.evaluate import bicubic_upscale
from ffnet_sr.metrics import calculate_psnr, calculate_ssim


@pytest.fixture(scope="module")
def basicsr_metrics():
    from basicsr.metrics import calculate_psnr as ref_psnr
    from basicsr.metrics import calculate_ssim as ref_ssim
    from ffnet_sr import basicsr_plugin  # noqa: F401  (installs the torchvision shim)

    return ref_psnr, ref_ssim


@pytest.mark.parametrize("sset,scale,names", [("Set5", 2, None), ("Set14", 3, ("bridge", "face"))])
def test_metrics_equal_basicsr_on_benchmark(data_dir, basicsr_metrics, sset, scale, names):
    """Set14/bridge is grayscale: it goes through the same 3-channel path BasicSR's cv2 reader takes."""
    ref_psnr, ref_ssim = basicsr_metrics
    pairs = [p for p in load_benchmark(data_dir / "superres" / sset, scale) if names is None or p[0] in names]
    for name, hr, lr in pairs:
        sr = bicubic_upscale(lr, scale)
        gt = hr.permute(1, 2, 0).numpy()
        for y in (True, False) if name in ("bird", "face") else (True,):
            # BasicSR expects OpenCV's BGR channel order
            p_ref = ref_psnr(sr[..., ::-1], gt[..., ::-1], crop_border=scale, test_y_channel=y)
            s_ref = ref_ssim(sr[..., ::-1], gt[..., ::-1], crop_border=scale, test_y_channel=y)
            assert calculate_psnr(sr, gt, crop_border=scale, test_y_channel=y) == pytest.approx(p_ref, abs=1e-9)
            assert calculate_ssim(sr, gt, crop_border=scale, test_y_channel=y) == pytest.approx(s_ref, abs=1e-9)


@pytest.mark.parametrize("scale,published", [(2, 33.66), (4, 28.42)])
def test_bicubic_set5_matches_published(data_dir, scale, published):
    """Bicubic on Set5 (33.66 dB x2, 28.42 dB x4 in SR papers): checks data, resize and metric together.

    Papers computed it in MATLAB (rounded uint8 Y); BasicSR-style float Y differs by ~0.01-0.02 dB.
    """
    pairs = load_benchmark(data_dir / "superres" / "Set5", scale)
    gt = [hr.permute(1, 2, 0).numpy() for _, hr, _ in pairs]
    sr = [bicubic_upscale(lr, scale) for _, _, lr in pairs]
    psnr = np.mean([calculate_psnr(a, b, scale) for a, b in zip(sr, gt)])
    assert abs(psnr - published) < 0.03


def test_psnr_identical_is_inf_and_shape_check():
    a = np.zeros((8, 8, 3), np.uint8)
    assert calculate_psnr(a, a) == float("inf")
    with pytest.raises(AssertionError):
        calculate_psnr(a, np.zeros((8, 9, 3), np.uint8))
