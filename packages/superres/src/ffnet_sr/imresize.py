"""MATLAB-compatible bicubic ``imresize`` (the degradation of the classic SR benchmarks).

Re-implemented from MATLAB's documented behaviour (Keys cubic kernel a=-0.5, kernel widened by
1/scale when downscaling for antialiasing, symmetric boundary extension). It is expressed as two
dense weight matrices, so a resize is ``W_h @ img @ W_w^T``: fast, exact and differentiable.
``tests/test_sr_data.py`` checks it against BasicSR's ``matlab_functions.imresize``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def _cubic(x: torch.Tensor) -> torch.Tensor:
    absx = x.abs()
    absx2, absx3 = absx**2, absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * (
        (absx > 1) & (absx <= 2)
    )


@lru_cache(maxsize=64)
def resize_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """Dense (out_len, in_len) float64 matrix of MATLAB bicubic weights along one axis."""
    kernel_width = 4.0
    aa = scale < 1 and antialiasing
    if aa:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    p = math.ceil(kernel_width) + 2
    idx = left[:, None] + torch.arange(p, dtype=torch.float64)[None, :]  # (out, p), 1-based
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if aa else _cubic(dist)
    w = w / w.sum(1, keepdim=True)
    # symmetric extension (edge pixel repeated), expressed on 0-based indices
    i0 = idx.long() - 1
    i0 = torch.where(i0 < 0, -i0 - 1, i0)
    i0 = torch.where(i0 >= in_len, 2 * in_len - 1 - i0, i0)
    i0 = i0.clamp(0, in_len - 1)  # only reachable for inputs shorter than the kernel
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, i0, w)
    return mat


def imresize(img: torch.Tensor | np.ndarray, scale: float, antialiasing: bool = True):
    """Resize like MATLAB ``imresize(img, scale, 'bicubic')`` (output not rounded).

    Args:
        img: float tensor (..., H, W) or numpy array (H, W[, C]) with values in any range.
        scale: the same factor for both axes; the output size is ``ceil(size * scale)``.
        antialiasing: widen the kernel when downscaling (MATLAB's default).
    """
    if isinstance(img, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(img)).double()
        t = t.permute(2, 0, 1) if t.ndim == 3 else t
        out = imresize(t, scale, antialiasing)
        return (out.permute(1, 2, 0) if out.ndim == 3 else out).numpy()
    h, w = img.shape[-2:]
    mh = resize_matrix(h, math.ceil(h * scale), float(scale), antialiasing).to(img.device)
    mw = resize_matrix(w, math.ceil(w * scale), float(scale), antialiasing).to(img.device)
    dtype = img.dtype if img.is_floating_point() else torch.float32
    x = img.to(torch.float64)
    return (mh @ x @ mw.T).to(dtype)


def bicubic_degrade(hr_u8: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mod-crop a (C, H, W) uint8 HR image to a multiple of ``scale`` and make its uint8 LR twin.

    Follows MATLAB's uint8 code path: resize along H, round half up to uint8, then along W and
    round again. This reproduces the LR_bicubic PNGs of Set5/Set14 bit for bit (tested), so the
    training inputs have exactly the statistics of the benchmark inputs.
    """
    c, h, w = hr_u8.shape
    hr = hr_u8[:, : h - h % scale, : w - w % scale].contiguous()
    h, w = hr.shape[-2:]
    mh = resize_matrix(h, h // scale, 1.0 / scale)
    mw = resize_matrix(w, w // scale, 1.0 / scale)
    tmp = torch.floor(mh @ hr.double() + 0.5).clamp(0, 255)
    lr = torch.floor(tmp @ mw.T + 0.5).clamp(0, 255).to(torch.uint8)
    return hr, lr.contiguous()
