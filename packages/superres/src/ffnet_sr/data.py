"""Image IO, dataset resolution, the preloaded on-the-fly training sampler and benchmark sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .imresize import bicubic_degrade

IMG_EXTS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def data_dir() -> Path | None:
    """The shared data root (``$FFNET_DATA_DIR``), or None when unset."""
    d = os.environ.get("FFNET_DATA_DIR")
    return Path(d) if d else None


def resolve_dataset(name_or_path: str | os.PathLike) -> Path:
    """Resolve ``Set5`` / ``superres/T91`` / an explicit path to an existing directory.

    Names are looked up under ``$FFNET_DATA_DIR/superres`` and ``$FFNET_DATA_DIR``.
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    root = data_dir()
    if root is not None:
        for cand in (root / "superres" / p, root / p):
            if cand.exists():
                return cand
    hint = "" if root else " (FFNET_DATA_DIR is not set)"
    raise FileNotFoundError(f"dataset '{name_or_path}' not found as a path or under FFNET_DATA_DIR{hint}")


def list_images(folder: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMG_EXTS)


def load_rgb_u8(path: str | os.PathLike) -> torch.Tensor:
    """Load any image as a (3, H, W) uint8 RGB tensor (grayscale is replicated)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)


class PairSampler:
    """Random aligned LR/HR patch batches from HR folders, degraded once at load time.

    Every HR image is mod-cropped and bicubic-downscaled (MATLAB uint8 path, see
    ``imresize.bicubic_degrade``) when the sampler is built, so each step only crops, flips and
    rotates in memory. Images are drawn with probability proportional to their area (uniform over
    patch positions), which keeps the 291 set's many small T91 images from being oversampled.
    """

    def __init__(self, folders: list[str | os.PathLike], scale: int, lr_patch: int, use_hflip: bool = True,
                 use_rot: bool = True, max_images: int | None = None):
        self.scale, self.lr_patch = scale, lr_patch
        self.use_hflip, self.use_rot = use_hflip, use_rot
        self.hr: list[torch.Tensor] = []
        self.lr: list[torch.Tensor] = []
        self.files: list[Path] = []
        files = [f for d in folders for f in list_images(resolve_dataset(d))]
        if max_images:
            files = files[:max_images]
        for f in files:
            hr, lr = bicubic_degrade(load_rgb_u8(f), scale)
            if min(lr.shape[-2:]) < lr_patch:
                continue
            self.hr.append(hr)
            self.lr.append(lr)
            self.files.append(f)
        if not self.lr:
            raise ValueError(f"no training image of at least {lr_patch * scale}px found in {folders}")
        area = torch.tensor([float(x.shape[-1] * x.shape[-2]) for x in self.lr], dtype=torch.float64)
        self.weights = area / area.sum()

    def __len__(self) -> int:
        return len(self.lr)

    def patch(self, i: int, r) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned uint8 (LR, HR) patch of image ``i``; ``r`` holds 5 uniforms (y, x, hflip, vflip, transpose)."""
        p, s = self.lr_patch, self.scale
        lr, hr = self.lr[i], self.hr[i]
        h, w = lr.shape[-2:]
        y, x = int(r[0] * (h - p + 1)), int(r[1] * (w - p + 1))
        lq = lr[:, y : y + p, x : x + p]
        gt = hr[:, y * s : (y + p) * s, x * s : (x + p) * s]
        if self.use_hflip and r[2] < 0.5:
            lq, gt = lq.flip(-1), gt.flip(-1)
        if self.use_rot:  # vertical flip x transpose (+ the hflip above) = all 8 dihedral transforms
            if r[3] < 0.5:
                lq, gt = lq.flip(-2), gt.flip(-2)
            if r[4] < 0.5:
                lq, gt = lq.transpose(-1, -2), gt.transpose(-1, -2)
        return lq, gt

    def sample(self, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return float (B, 3, p, p) LR and (B, 3, p*s, p*s) HR patches in [0, 1]."""
        idx = torch.multinomial(self.weights, batch_size, replacement=True, generator=gen).tolist()
        r = torch.rand(batch_size, 5, generator=gen).tolist()
        lqs, gts = zip(*(self.patch(i, ri) for i, ri in zip(idx, r)))
        return to_float(torch.stack(lqs)), to_float(torch.stack(gts))


def load_benchmark(name_or_path: str | os.PathLike, scale: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Load a benchmark set as ``[(name, hr_u8, lr_u8)]``.

    Accepts the EDSR layout (``HR/`` + ``LR_bicubic/X{s}/{name}x{s}.png``) or a plain folder of HR
    images. Missing LR images are made with the MATLAB-compatible degradation; HR is cropped to
    exactly ``scale`` times the LR size.
    """
    root = resolve_dataset(name_or_path)
    hr_dir = root / "HR" if (root / "HR").is_dir() else root
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    out = []
    for f in list_images(hr_dir):
        hr = load_rgb_u8(f)
        lr_file = lr_dir / f"{f.stem}x{scale}{f.suffix}"
        if lr_file.exists():
            lr = load_rgb_u8(lr_file)
            hr = hr[:, : lr.shape[1] * scale, : lr.shape[2] * scale].contiguous()
        else:
            hr, lr = bicubic_degrade(hr, scale)
        out.append((f.stem, hr, lr))
    if not out:
        raise FileNotFoundError(f"no images in {hr_dir}")
    return out
