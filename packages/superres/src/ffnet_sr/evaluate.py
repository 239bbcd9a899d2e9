"""Benchmark evaluation: Y-channel PSNR / SSIM (crop_border = scale) per image and mean, plus a
side-by-side crop (bicubic | model | HR) for a quick look."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .data import load_benchmark
from .imresize import imresize
from .metrics import calculate_psnr, calculate_ssim, tensor_to_u8
from .upscale import tiled_upscale


def bicubic_upscale(lr_u8: torch.Tensor, scale: int) -> np.ndarray:
    """MATLAB bicubic upscaling of a (3, h, w) uint8 LR image -> (s h, s w, 3) uint8 (the 'Bicubic' row)."""
    up = imresize(lr_u8.double() / 255.0, float(scale))
    return tensor_to_u8(up)


@torch.no_grad()
def evaluate(model: nn.Module | None, dataset: str | os.PathLike, scale: int, device: str = "cpu",
             tile: int | None = None, overlap: int = 32) -> dict:
    """PSNR/SSIM of ``model`` (or of bicubic upscaling when ``model`` is None) on a benchmark set."""
    pairs = load_benchmark(dataset, scale)
    rows, images = [], {}
    for name, hr, lr in pairs:
        if model is None:
            sr = bicubic_upscale(lr, scale)
        else:
            sr = tiled_upscale(model, lr.permute(1, 2, 0).numpy(), scale, tile=tile, overlap=overlap, device=device)
        gt = hr.permute(1, 2, 0).numpy()
        rows.append({"image": name, "psnr": calculate_psnr(sr, gt, crop_border=scale, test_y_channel=True),
                     "ssim": calculate_ssim(sr, gt, crop_border=scale, test_y_channel=True)})
        images[name] = (lr, sr, gt)
    return {
        "dataset": str(dataset), "scale": scale, "metric": "Y channel (BT.601), crop_border=scale",
        "psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows])),
        "per_image": rows, "_images": images,
    }


def save_crop_figure(result: dict, path: str | os.PathLike, scale: int, image: str | None = None,
                     crop: int = 96, label: str = "FFNetSR") -> Path:
    """Save a bicubic | model | HR crop of one image, centred where the model gains most over bicubic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ffnet.fileio import save_figure

    name = image or result["per_image"][0]["image"]
    lr, sr, gt = result["_images"][name]
    bic = bicubic_upscale(lr, scale)
    err = np.abs(bic.astype(np.float32) - gt).mean(2) - np.abs(sr.astype(np.float32) - gt).mean(2)
    h, w = err.shape
    c = min(crop, h, w)
    # pick the crop with the largest total gain (box sum via a cumulative-sum table, coarse stride)
    ii = np.pad(err.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, by, bx = -np.inf, 0, 0
    for y in range(0, h - c + 1, max(1, c // 4)):
        for x in range(0, w - c + 1, max(1, c // 4)):
            s = ii[y + c, x + c] - ii[y, x + c] - ii[y + c, x] + ii[y, x]
            if s > best:
                best, by, bx = s, y, x
    panels = [("Bicubic", bic), (label, sr), ("HR", gt)]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (title, im) in zip(axes, panels):
        ax.imshow(im[by : by + c, bx : bx + c], interpolation="nearest")
        if title != "HR":
            title += f"  {calculate_psnr(im, gt, crop_border=scale):.2f} dB"
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{name} x{scale} (crop {c}x{c} at y={by}, x={bx}; PSNR on the whole Y image)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def public(result: dict) -> dict:
    """The JSON-serializable part of an ``evaluate`` result."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def write_json(obj: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
