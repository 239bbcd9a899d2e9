"""Tiled super-resolution of image files: reading/writing every common mode, bounded memory.

Tiling: the LR image is cut into ``tile`` x ``tile`` cores; each core is run with ``overlap``
extra LR pixels of real context on every side (clipped at the image border) and only the core's
output is kept. Once ``overlap`` covers the network's receptive radius the result equals untiled
inference exactly (up to float rounding), because every kept pixel then sees the same inputs and
the same zero padding at true image borders. Output tiles are quantized straight into the output
array (uint8 / uint16), so peak memory is the image arrays plus one tile's activations.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ffnet.fileio import atomic_output
from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = 400_000_000  # large photos are legitimate inputs here; memory is bounded by tiling


class ImageError(ValueError):
    """A user-facing problem with one input or output image (reported as one line, exit code 2)."""


@dataclass
class ImageData:
    color: np.ndarray  # (H, W, 3) RGB or (H, W, 1) gray, uint8 or uint16
    alpha: np.ndarray | None = None  # (H, W), same dtype as color
    info: dict = field(default_factory=dict)  # icc_profile etc., passed through to the writer

    @property
    def max_value(self) -> int:
        return 65535 if self.color.dtype == np.uint16 else 255


def _png_bit_depth(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None for other files."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def read_image(path: str | os.PathLike) -> ImageData:
    """Read RGB / RGBA / L / LA / P / 16-bit PNG / JPEG (EXIF orientation applied) into ImageData."""
    path = Path(path)
    if not path.is_file():
        raise ImageError("no such file")
    if path.stat().st_size == 0:
        raise ImageError("empty file")
    png = _png_bit_depth(path)
    if png is not None and png[0] == 16 and png[1] in (2, 6):
        # NOTE: Pillow decodes 16-bit RGB(A) PNGs to 8 bits; OpenCV (a basicsr dependency) keeps 16.
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None or arr.dtype != np.uint16:
            raise ImageError("cannot decode 16-bit PNG")
        color = np.ascontiguousarray(arr[..., 2::-1])  # BGR(A) -> RGB
        alpha = np.ascontiguousarray(arr[..., 3]) if arr.shape[2] == 4 else None
        return ImageData(color, alpha)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            info = {k: im.info[k] for k in ("icc_profile", "dpi") if k in im.info}
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                g = np.asarray(im).astype(np.int64)
                return ImageData(np.clip(g, 0, 65535).astype(np.uint16)[..., None], None, info)
            if mode in ("1", "L"):
                return ImageData(np.asarray(im.convert("L"))[..., None].copy(), None, info)
            if mode == "LA":
                a = np.asarray(im)
                return ImageData(a[..., :1].copy(), a[..., 1].copy(), info)
            if mode in ("RGBA", "PA", "RGBa"):
                a = np.asarray(im.convert("RGBA"))
                return ImageData(a[..., :3].copy(), a[..., 3].copy(), info)
            return ImageData(np.asarray(im.convert("RGB")).copy(), None, info)
    except ImageError:
        raise
    except Exception as e:  # PIL raises many types for corrupt / non-image files
        raise ImageError(f"cannot read image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'corrupt'})") from None


def write_image(path: str | os.PathLike, img: ImageData, force: bool = False) -> None:
    """Write via a temp file in the same folder + atomic rename; refuse to overwrite unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ImageError(f"output {path} exists (use --force to overwrite)")
    ext = path.suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        raise ImageError(f"unsupported output format '{ext}'")
    is16 = img.color.dtype == np.uint16
    if ext in (".jpg", ".jpeg") and img.alpha is not None:
        raise ImageError("JPEG cannot store an alpha channel; write .png instead")
    with atomic_output(path, suffix=ext) as tmp:
        gray = img.color.shape[2] == 1
        if is16 and ext == ".png" and not (gray and img.alpha is None):
            import cv2  # 16-bit RGB(A) / gray+alpha PNG: Pillow cannot write these

            c = np.repeat(img.color, 3, axis=2) if gray else img.color
            arr = c[..., ::-1] if img.alpha is None else np.dstack([c[..., ::-1], img.alpha])
            if not cv2.imwrite(tmp, np.ascontiguousarray(arr)):
                raise ImageError(f"cannot write {path}")
        else:
            if is16 and not (gray and img.alpha is None and ext in (".png", ".tif", ".tiff")):
                img = ImageData(*[None if a is None else (a // 257).astype(np.uint8) for a in (img.color, img.alpha)],
                                img.info)
            color = img.color[..., 0] if gray else img.color
            im = Image.fromarray(color)
            if img.alpha is not None:
                im = Image.merge("LA" if gray else "RGBA", [*im.split(), Image.fromarray(img.alpha)])
            kw = {"quality": 95} if ext in (".jpg", ".jpeg") else {}
            if "icc_profile" in img.info:
                kw["icc_profile"] = img.info["icc_profile"]
            im.save(tmp, **kw)


def _tiles(n: int, tile: int) -> list[tuple[int, int]]:
    return [(s, min(s + tile, n)) for s in range(0, n, tile)]


@torch.no_grad()
def tiled_upscale(model: nn.Module, color: np.ndarray, scale: int, tile: int | None = 256, overlap: int = 32,
                  device: str | torch.device = "cpu", out_dtype=None, progress=None,
                  gray_out: bool = False) -> np.ndarray:
    """Super-resolve an (H, W, 3) uint8/uint16/float image tile by tile.

    Args:
        model: maps (1, 3, h, w) in [0, 1] to (1, 3, s h, s w).
        color: RGB array; integer inputs are scaled by their dtype's maximum.
        tile: LR tile core size (None or 0 = whole image at once).
        overlap: LR context pixels added on each side of a core.
        out_dtype: output dtype (default: the input dtype); floats stay unquantized.
        progress: optional callable ``progress(n_tiles_done)``.
        gray_out: average the output channels per tile into a single channel (gray images fed as R=G=B).
    """
    h, w, c = color.shape
    in_max = float(np.iinfo(color.dtype).max) if np.issubdtype(color.dtype, np.integer) else 1.0
    out_dtype = np.dtype(out_dtype or color.dtype)
    out_max = float(np.iinfo(out_dtype).max) if np.issubdtype(out_dtype, np.integer) else 1.0
    out = np.empty((h * scale, w * scale, 1 if gray_out else c), dtype=out_dtype)
    device = torch.device(device)
    channels_last = device.type == "cpu"
    tile = tile or max(h, w)
    for y0, y1 in _tiles(h, tile):
        for x0, x1 in _tiles(w, tile):
            py0, py1 = max(0, y0 - overlap), min(h, y1 + overlap)
            px0, px1 = max(0, x0 - overlap), min(w, x1 + overlap)
            x = torch.from_numpy(np.ascontiguousarray(color[py0:py1, px0:px1])).to(device)
            x = (x.float() / in_max).permute(2, 0, 1)[None]  # (1, 3, h', w')
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = model(x)[0]  # (3, s h', s w')
            y = y[:, (y0 - py0) * scale : (y1 - py0) * scale, (x0 - px0) * scale : (x1 - px0) * scale]
            y = y.permute(1, 2, 0).float().cpu()
            if gray_out:
                y = y.mean(dim=2, keepdim=True)
            if out_max != 1.0:
                y = (y.clamp_(0, 1) * out_max).round_()
            out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = y.numpy().astype(out_dtype, copy=False)
            if progress is not None:
                progress(1)
    return out


def resize_plane(plane: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscaling of a single (H, W) plane (alpha), same dtype, row strips to bound memory."""
    h, w = plane.shape
    maxv = float(np.iinfo(plane.dtype).max)
    out = np.empty((h * scale, w * scale), dtype=plane.dtype)
    strip = max(8, 2_000_000 // max(1, w))
    pad = 4
    for s0 in range(0, h, strip):
        s1 = min(h, s0 + strip)
        p0, p1 = max(0, s0 - pad), min(h, s1 + pad)
        t = torch.from_numpy(plane[p0:p1].astype(np.float32))[None, None]
        r = F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)[0, 0]
        r = r[(s0 - p0) * scale : (s1 - p0) * scale]
        out[s0 * scale : s1 * scale] = r.clamp_(0, maxv).round_().numpy().astype(plane.dtype)
    return out


def upscale_image(model: nn.Module, img: ImageData, scale: int, tile: int | None = 256, overlap: int = 32,
                  device: str | torch.device = "cpu", progress=None) -> ImageData:
    """Upscale colour with the model (gray through the RGB model, averaged back) and alpha bicubically."""
    color = img.color
    gray = color.shape[2] == 1
    if gray:
        color = np.repeat(color, 3, axis=2)
    # a gray image goes through the RGB network as R=G=B; its three outputs are averaged back per tile
    out = tiled_upscale(model, color, scale, tile, overlap, device, progress=progress, gray_out=gray)
    alpha = resize_plane(img.alpha, scale) if img.alpha is not None else None
    return ImageData(out, alpha, dict(img.info))


def n_tiles(h: int, w: int, tile: int | None) -> int:
    if not tile:
        return 1
    return math.ceil(h / tile) * math.ceil(w / tile)


__all__ = ["ImageData", "ImageError", "read_image", "write_image", "tiled_upscale", "upscale_image", "resize_plane",
           "n_tiles"]
