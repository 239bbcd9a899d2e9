"""Rotated BEV / 3D IoU and rotated NMS: numba vs torch, and hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ffnet_3d.iou import (
    bev_iou_numba,
    bev_iou_torch,
    image_box_overlap,
    iou3d_numba,
    iou3d_torch,
    nms_numba,
    nms_torch,
)


def _random_boxes(rng, n, spread=3.0):
    b = np.zeros((n, 7))
    b[:, :2] = rng.uniform(-spread, spread, (n, 2))
    b[:, 2] = rng.uniform(-0.5, 0.5, n)
    b[:, 3:6] = rng.uniform(0.3, 4.0, (n, 3))
    b[:, 6] = rng.uniform(-np.pi, np.pi, n)
    return b


def box(x=0.0, y=0.0, z=0.0, l=1.0, w=1.0, h=1.0, yaw=0.0):  # noqa: E741
    return [x, y, z, l, w, h, yaw]


CASES = [  # (a, b, expected BEV IoU, expected 3D IoU)
    (box(), box(), 1.0, 1.0),
    (box(), box(x=5), 0.0, 0.0),
    (box(l=2, w=2), box(x=1, l=2, w=2), 1 / 3, 1 / 3),
    (box(l=4, w=2), box(x=1, l=4, w=2), 3 / 5, 3 / 5),
    (box(), box(yaw=math.pi / 4), (2 * (math.sqrt(2) - 1)) / (2 - 2 * (math.sqrt(2) - 1)), None),
    (box(), box(yaw=math.pi / 2), 1.0, 1.0),
    (box(l=2, w=2, h=2), box(l=2, w=2, h=2, z=1), 1.0, 1 / 3),
    (box(l=4, w=1), box(l=4, w=1, yaw=math.pi / 2), 1 / 7, None),
]


@pytest.mark.parametrize("a, b, bev, iou3d", CASES)
def test_known_values(a, b, bev, iou3d):
    a, b = np.array([a]), np.array([b])
    assert bev_iou_numba(a, b)[0, 0] == pytest.approx(bev, abs=1e-9)
    assert bev_iou_torch(torch.tensor(a), torch.tensor(b))[0, 0].item() == pytest.approx(bev, abs=1e-9)
    expected_3d = bev if iou3d is None else iou3d
    assert iou3d_numba(a, b)[0, 0] == pytest.approx(expected_3d, abs=1e-9)
    assert iou3d_torch(torch.tensor(a), torch.tensor(b))[0, 0].item() == pytest.approx(expected_3d, abs=1e-9)


def test_numba_and_torch_agree_on_random_boxes(dev):
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 120), _random_boxes(rng, 90)
    ref_bev, ref_3d = bev_iou_numba(a, b), iou3d_numba(a, b)
    assert (ref_bev > 0).mean() > 0.2  # plenty of overlapping pairs, not a vacuous comparison
    ta, tb = torch.tensor(a, device=dev), torch.tensor(b, device=dev)
    np.testing.assert_allclose(bev_iou_torch(ta, tb).cpu().numpy(), ref_bev, atol=1e-9)
    np.testing.assert_allclose(iou3d_torch(ta, tb).cpu().numpy(), ref_3d, atol=1e-9)
    # float32 on the device (what decoding uses) agrees to float precision
    np.testing.assert_allclose(bev_iou_torch(ta.float(), tb.float()).cpu().numpy(), ref_bev, atol=2e-5)


def test_against_rasterised_reference():
    rng = np.random.default_rng(3)
    a, b = _random_boxes(rng, 4, 1.0), _random_boxes(rng, 4, 1.0)
    n = 1200
    g = np.stack(np.meshgrid(np.linspace(-6, 6, n), np.linspace(-6, 6, n)), -1).reshape(-1, 2)

    def inside(bx):
        d = g - bx[:2]
        c, s = math.cos(bx[6]), math.sin(bx[6])
        return (np.abs(d[:, 0] * c + d[:, 1] * s) <= bx[3] / 2) & (np.abs(-d[:, 0] * s + d[:, 1] * c) <= bx[4] / 2)

    iou = bev_iou_numba(a, b)
    for i in range(4):
        ma, mb = inside(a[i]), inside(b[i])
        raster = (ma & mb).sum() / max((ma | mb).sum(), 1)
        assert iou[i, i] == pytest.approx(raster, abs=0.01)


def test_nms_agrees_and_suppresses(dev):
    boxes = np.array([box(l=4, w=2), box(x=0.3, l=4, w=2), box(x=10, l=4, w=2), box(x=0.6, l=4, w=2)])
    scores = np.array([0.9, 0.95, 0.5, 0.1])
    keep = nms_numba(boxes, scores, 0.5)
    np.testing.assert_array_equal(keep, [1, 2])  # 1 wins over 0 and 3 (IoU > 0.5), 2 is elsewhere
    tk = nms_torch(torch.tensor(boxes, device=dev), torch.tensor(scores, device=dev), 0.5)
    np.testing.assert_array_equal(tk.cpu().numpy(), keep)
    rng = np.random.default_rng(5)
    many = _random_boxes(rng, 150, 6.0)
    s = rng.uniform(size=150)
    for thr in (0.01, 0.1, 0.5):
        k1 = nms_numba(many, s, thr)
        k2 = nms_torch(torch.tensor(many, device=dev), torch.tensor(s, device=dev), thr).cpu().numpy()
        np.testing.assert_array_equal(k1, k2)


def test_image_box_overlap_criteria():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 25, 10]])
    assert image_box_overlap(a, b, -1)[0, 0] == pytest.approx(50 / 250)
    assert image_box_overlap(a, b, 0)[0, 0] == pytest.approx(50 / 100)
    assert image_box_overlap(a, b, 1)[0, 0] == pytest.approx(50 / 200)


@pytest.mark.gpu
def test_cuda_iou_and_nms():
    rng = np.random.default_rng(0)
    a = _random_boxes(rng, 200)
    s = rng.uniform(size=200)
    t = torch.tensor(a, device="cuda")
    np.testing.assert_allclose(bev_iou_torch(t, t).cpu().numpy(), bev_iou_numba(a, a), atol=1e-9)
    np.testing.assert_array_equal(nms_torch(t, torch.tensor(s, device="cuda"), 0.2).cpu().numpy(),
                                  nms_numba(a, s, 0.2))
