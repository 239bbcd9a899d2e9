"""PSNR / SSIM exactly as the SR literature (and BasicSR) computes them.

Inputs are RGB uint8-valued arrays (H, W, 3) in [0, 255]. ``test_y_channel`` uses the BT.601
luma of MATLAB's ``rgb2ycbcr`` (16-235 range); ``crop_border`` pixels are removed on every side.
SSIM uses the 11x11 Gaussian window (sigma 1.5) with 'valid' borders of Wang et al.
``tests/test_sr_metrics.py`` checks equality with ``basicsr.metrics``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 255] -> (H, W) luma in [16, 235].

    Mirrors BasicSR's ``to_y_channel`` arithmetic (float32 input and result, float64 dot product in
    B, G, R order), so the metrics agree with BasicSR's to the last bits.
    """
    x = img.astype(np.float32) / 255.0
    y = x[..., ::-1] @ np.array([24.966, 128.553, 65.481]) + 16.0
    return ((y / 255.0).astype(np.float32) * 255.0).astype(np.float64)


def _prepare(img: np.ndarray, crop_border: int, test_y_channel: bool) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        if img.shape[2] == 3:
            return rgb_to_y(img)[..., None]
        return (img.astype(np.float32) / 255.0 * 255.0).astype(np.float64)
    return img.astype(np.float64)


def calculate_psnr(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = True) -> float:
    assert img.shape == img2.shape, f"image shapes differ: {img.shape} vs {img2.shape}"
    a, b = _prepare(img, crop_border, test_y_channel), _prepare(img2, crop_border, test_y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def _ssim_channel(a: torch.Tensor, b: torch.Tensor) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    win = _gaussian_window()[None, None]
    x = torch.stack([a, b, a * a, b * b, a * b])[:, None]  # (5, 1, H, W)
    mu_a, mu_b, aa, bb, ab = F.conv2d(x, win)[:, 0]  # 'valid' filtering
    va, vb, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(ssim.mean())


def calculate_ssim(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = True) -> float:
    assert img.shape == img2.shape, f"image shapes differ: {img.shape} vs {img2.shape}"
    a, b = _prepare(img, crop_border, test_y_channel), _prepare(img2, crop_border, test_y_channel)
    ta, tb = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
    return float(np.mean([_ssim_channel(ta[..., c], tb[..., c]) for c in range(a.shape[2])]))


def tensor_to_u8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounding like BasicSR's ``tensor2img``."""
    return (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
