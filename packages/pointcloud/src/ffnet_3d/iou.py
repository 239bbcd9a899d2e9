"""Rotated BEV IoU, 3D IoU and rotated NMS: numba on CPU and torch on any device.

The two implementations use different algorithms on purpose, so the agreement test between
them is meaningful:

* numba: Sutherland-Hodgman clipping of one rectangle by the other, shoelace area.
* torch: the intersection polygon's vertices are collected as candidates (corners of each box
  inside the other + pairwise edge intersections), sorted by angle about their centroid and fed
  to the shoelace formula, batched over all pairs; runs on CPU or CUDA tensors.

Boxes are LiDAR boxes ``(x, y, z, dx, dy, dz, heading)``; BEV functions read ``x, y, dx, dy, heading``.
3D IoU = BEV intersection x z-overlap / union volume (boxes are upright).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

__all__ = [
    "bev_iou_numba",
    "iou3d_numba",
    "nms_numba",
    "bev_iou_torch",
    "iou3d_torch",
    "nms_torch",
    "rotated_nms",
    "image_box_overlap",
]

_EPS = 1e-8


# =============================================================================== numba (CPU)
@numba.njit(cache=True)
def _rect_corners(x, y, dx, dy, yaw, out):
    c, s = np.cos(yaw), np.sin(yaw)
    hx, hy = dx / 2.0, dy / 2.0
    lx = (hx, -hx, -hx, hx)
    ly = (hy, hy, -hy, -hy)
    for k in range(4):  # counter-clockwise
        out[k, 0] = x + lx[k] * c - ly[k] * s
        out[k, 1] = y + lx[k] * s + ly[k] * c


@numba.njit(cache=True)
def _poly_area(poly, n):
    a = 0.0
    for i in range(n):
        j = (i + 1) % n
        a += poly[i, 0] * poly[j, 1] - poly[j, 0] * poly[i, 1]
    return 0.5 * a


@numba.njit(cache=True)
def _clip_area(subject, clip):
    """Area of the convex polygon ``subject`` (4, 2) clipped by the CCW convex quad ``clip``."""
    buf_a = np.empty((16, 2))
    buf_b = np.empty((16, 2))
    n = 4
    for i in range(4):
        buf_a[i, 0] = subject[i, 0]
        buf_a[i, 1] = subject[i, 1]
    for e in range(4):
        ax, ay = clip[e, 0], clip[e, 1]
        bx, by = clip[(e + 1) % 4, 0], clip[(e + 1) % 4, 1]
        m = 0
        for i in range(n):
            px, py = buf_a[i, 0], buf_a[i, 1]
            qx, qy = buf_a[(i + 1) % n, 0], buf_a[(i + 1) % n, 1]
            sp = (bx - ax) * (py - ay) - (by - ay) * (px - ax)  # >= 0: p inside (left of edge)
            sq = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
            if sp >= 0:
                buf_b[m, 0] = px
                buf_b[m, 1] = py
                m += 1
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                buf_b[m, 0] = px + t * (qx - px)
                buf_b[m, 1] = py + t * (qy - py)
                m += 1
        n = m
        if n == 0:
            return 0.0
        for i in range(n):
            buf_a[i, 0] = buf_b[i, 0]
            buf_a[i, 1] = buf_b[i, 1]
    return abs(_poly_area(buf_a, n))


@numba.njit(cache=True)
def _bev_inter_matrix(a, b):
    n, m = a.shape[0], b.shape[0]
    out = np.zeros((n, m))
    ca = np.empty((4, 2))
    cb = np.empty((4, 2))
    for i in range(n):
        _rect_corners(a[i, 0], a[i, 1], a[i, 3], a[i, 4], a[i, 6], ca)
        ra = 0.5 * np.hypot(a[i, 3], a[i, 4])
        for j in range(m):
            rb = 0.5 * np.hypot(b[j, 3], b[j, 4])
            if np.hypot(a[i, 0] - b[j, 0], a[i, 1] - b[j, 1]) > ra + rb:
                continue  # circumscribed circles do not touch
            _rect_corners(b[j, 0], b[j, 1], b[j, 3], b[j, 4], b[j, 6], cb)
            out[i, j] = _clip_area(ca, cb)
    return out


def _as7(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f"boxes must be (N, 7), got {boxes.shape}")
    return np.ascontiguousarray(boxes[:, :7])


def bev_iou_numba(a, b) -> np.ndarray:
    """Rotated BEV IoU matrix (N, M) of LiDAR boxes."""
    a, b = _as7(a), _as7(b)
    inter = _bev_inter_matrix(a, b)
    area_a = a[:, 3] * a[:, 4]
    area_b = b[:, 3] * b[:, 4]
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, _EPS)


def _z_overlap_np(a, b):
    top = np.minimum(a[:, None, 2] + a[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
    bot = np.maximum(a[:, None, 2] - a[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2)
    return np.clip(top - bot, 0, None)


def iou3d_numba(a, b) -> np.ndarray:
    """3D IoU matrix (N, M) of upright LiDAR boxes."""
    a, b = _as7(a), _as7(b)
    inter = _bev_inter_matrix(a, b) * _z_overlap_np(a, b)
    vol_a = a[:, 3] * a[:, 4] * a[:, 5]
    vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    return inter / np.maximum(vol_a[:, None] + vol_b[None] - inter, _EPS)


@numba.njit(cache=True)
def _greedy_nms(iou, order, thresh):
    n = order.shape[0]
    suppressed = np.zeros(iou.shape[0], dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    k = 0
    for ii in range(n):
        i = order[ii]
        if suppressed[i]:
            continue
        keep[k] = i
        k += 1
        for jj in range(ii + 1, n):
            j = order[jj]
            if not suppressed[j] and iou[i, j] > thresh:
                suppressed[j] = True
    return keep[:k]


def nms_numba(boxes, scores, iou_thresh: float) -> np.ndarray:
    """Greedy rotated-BEV NMS; returns kept indices sorted by descending score."""
    boxes = _as7(boxes)
    scores = np.asarray(scores, dtype=np.float64)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    iou = bev_iou_numba(boxes, boxes)
    return _greedy_nms(iou, order, float(iou_thresh))


# ============================================================================ torch (any device)
def _corners_torch(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 7) -> BEV corners (N, 4, 2), counter-clockwise."""
    x, y, dx, dy, yaw = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6]
    sx = torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=boxes.dtype, device=boxes.device)
    sy = torch.tensor([0.5, 0.5, -0.5, -0.5], dtype=boxes.dtype, device=boxes.device)
    lx = dx[:, None] * sx  # (N, 4)
    ly = dy[:, None] * sy
    c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    return torch.stack([x[:, None] + lx * c - ly * s, y[:, None] + lx * s + ly * c], dim=-1)


def _inside(pts: torch.Tensor, quad: torch.Tensor, eps: float) -> torch.Tensor:
    """pts (N, M, K, 2) inside CCW quads (N, M, 4, 2) -> (N, M, K) bool."""
    a = quad  # (N, M, 4, 2)
    b = torch.roll(quad, -1, dims=2)
    edge = (b - a)[:, :, None]  # (N, M, 1, 4, 2)
    rel = pts[:, :, :, None] - a[:, :, None]  # (N, M, K, 4, 2)
    cross = edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0]  # (N, M, K, 4)
    return (cross >= -eps).all(dim=-1)


def _bev_inter_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise BEV intersection areas (N, M) of boxes (N, 7) and (M, 7)."""
    n, m = a.shape[0], b.shape[0]
    ca = _corners_torch(a)[:, None].expand(n, m, 4, 2)  # (N, M, 4, 2)
    cb = _corners_torch(b)[None].expand(n, m, 4, 2)
    # candidates 1 + 2: corners of each box inside the other
    in_a = _inside(cb, ca, 1e-6)  # (N, M, 4)
    in_b = _inside(ca, cb, 1e-6)
    # candidates 3: edge-edge intersections, p + t r = q + u s
    p = ca[:, :, :, None]  # (N, M, 4, 1, 2)
    r = (torch.roll(ca, -1, dims=2) - ca)[:, :, :, None]
    q = cb[:, :, None]  # (N, M, 1, 4, 2)
    s = (torch.roll(cb, -1, dims=2) - cb)[:, :, None]
    denom = r[..., 0] * s[..., 1] - r[..., 1] * s[..., 0]  # (N, M, 4, 4)
    qp = q - p
    safe = torch.where(denom.abs() > 1e-12, denom, torch.ones_like(denom))
    t = (qp[..., 0] * s[..., 1] - qp[..., 1] * s[..., 0]) / safe
    u = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / safe
    tol = 1e-7
    hit = (denom.abs() > 1e-12) & (t >= -tol) & (t <= 1 + tol) & (u >= -tol) & (u <= 1 + tol)
    xpts = (p + t[..., None] * r).reshape(n, m, 16, 2)
    pts = torch.cat([ca, cb, xpts], dim=2)  # (N, M, 24, 2)
    valid = torch.cat([in_b, in_a, hit.reshape(n, m, 16)], dim=2)  # (N, M, 24)
    cnt = valid.sum(-1)  # (N, M)
    w = valid.to(pts.dtype)
    centre = (pts * w[..., None]).sum(2) / cnt.clamp(min=1)[..., None].to(pts.dtype)  # (N, M, 2)
    ang = torch.atan2(pts[..., 1] - centre[..., None, 1], pts[..., 0] - centre[..., None, 0])
    ang = torch.where(valid, ang, torch.full_like(ang, 10.0))  # invalid candidates sort last
    order = torch.argsort(ang, dim=-1)
    sp = torch.gather(pts, 2, order[..., None].expand_as(pts))  # (N, M, 24, 2)
    sv = torch.gather(valid, 2, order)
    first = sp[:, :, :1].expand_as(sp)
    sp = torch.where(sv[..., None], sp, first)  # pad with the first vertex: zero-length edges
    nxt = torch.roll(sp, -1, dims=2)
    area = 0.5 * (sp[..., 0] * nxt[..., 1] - nxt[..., 0] * sp[..., 1]).sum(-1).abs()
    return torch.where(cnt >= 3, area, torch.zeros_like(area))


def _as_tensor7(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[1] < 7:
        raise ValueError(f"boxes must be (N, 7), got {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    return t[:, :7]


def bev_iou_torch(a, b) -> torch.Tensor:
    """Rotated BEV IoU matrix (N, M); runs on the boxes' device."""
    a, b = _as_tensor7(a), _as_tensor7(b)
    b = b.to(a)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return a.new_zeros((a.shape[0], b.shape[0]))
    inter = _bev_inter_torch(a, b)
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None] - inter
    return inter / union.clamp(min=_EPS)


def iou3d_torch(a, b) -> torch.Tensor:
    """3D IoU matrix (N, M) of upright boxes; runs on the boxes' device."""
    a, b = _as_tensor7(a), _as_tensor7(b)
    b = b.to(a)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return a.new_zeros((a.shape[0], b.shape[0]))
    top = torch.minimum(a[:, None, 2] + a[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
    bot = torch.maximum(a[:, None, 2] - a[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2)
    inter = _bev_inter_torch(a, b) * (top - bot).clamp(min=0)
    vol_a = a[:, 3] * a[:, 4] * a[:, 5]
    vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    return inter / (vol_a[:, None] + vol_b[None] - inter).clamp(min=_EPS)


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float, chunk: int = 512) -> torch.Tensor:
    """Greedy rotated-BEV NMS on the boxes' device; returns kept indices (descending score).

    The IoU matrix is computed on the device in row chunks; only the boolean suppression mask
    crosses to the host for the inherently sequential greedy pass (as torchvision's CUDA NMS does).
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order]
    over = torch.cat([bev_iou_torch(b[i:i + chunk], b) > iou_thresh for i in range(0, len(b), chunk)])
    over = over.cpu().numpy()
    n = len(b)
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        removed |= over[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


def rotated_nms(boxes, scores, iou_thresh: float):
    """Dispatch: torch tensors -> :func:`nms_torch` on their device; numpy -> :func:`nms_numba`."""
    if isinstance(boxes, torch.Tensor):
        if boxes.device.type == "cpu":
            keep = nms_numba(boxes.detach().double().numpy(), scores.detach().double().numpy(), iou_thresh)
            return torch.from_numpy(keep)
        return nms_torch(boxes, scores, iou_thresh)
    return nms_numba(boxes, scores, iou_thresh)


# ============================================================================== 2D image boxes
def image_box_overlap(a: np.ndarray, b: np.ndarray, criterion: int = -1) -> np.ndarray:
    """Axis-aligned image-box overlap (N, M).

    ``criterion`` -1: IoU; 0: intersection / area(a); 1: intersection / area(b) (KITTI devkit).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None]
    if criterion == -1:
        denom = area_a + area_b - inter
    elif criterion == 0:
        denom = np.broadcast_to(area_a, inter.shape)
    else:
        denom = np.broadcast_to(area_b, inter.shape)
    return np.where(denom > 0, inter / np.where(denom > 0, denom, 1), 0.0)
