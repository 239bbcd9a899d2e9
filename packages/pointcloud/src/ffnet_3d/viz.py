"""Bird's-eye-view PNG (matplotlib, always available) and an optional open3d offscreen render.

The open3d render needs Vulkan (Debian ``libvulkan1`` + ``mesa-vulkan-drivers``). Filament can
abort the whole process when Vulkan is half-present, so the render runs in a child process and
any failure there is reported as ``False``, never raised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .boxes import boxes_to_bev_corners, boxes_to_corners_3d

__all__ = ["bev_png", "render_open3d"]

CLASS_COLORS = {"Car": "#1f77b4", "Pedestrian": "#d62728", "Cyclist": "#2ca02c"}


def bev_png(
    path: str | os.PathLike,
    points: np.ndarray,
    pred_boxes: np.ndarray | None = None,
    pred_names=None,
    pred_scores=None,
    gt_boxes: np.ndarray | None = None,
    gt_names=None,
    xlim=(0.0, 70.4),
    ylim=(-40.0, 40.0),
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Write a BEV scatter of ``points`` with predicted (solid) and ground-truth (dashed) boxes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    x0, x1 = xlim
    y0, y1 = ylim
    m = (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)
    p = points[m]
    h = 7.0
    w = h * (y1 - y0) / (x1 - x0)
    fig, ax = plt.subplots(figsize=(max(w, 4.0), h))
    # BEV with x (forward) up and y (left) to the left, like a driver's map view
    ax.scatter(-p[:, 1], p[:, 0], s=0.5, c=p[:, 2], cmap="viridis", vmin=-2.5, vmax=1.0, linewidths=0)

    def draw(boxes, names, scores, dashed):
        if boxes is None or len(boxes) == 0:
            return
        corners = boxes_to_bev_corners(np.asarray(boxes))
        for k, c in enumerate(corners):
            name = str(names[k]) if names is not None else "Car"
            col = CLASS_COLORS.get(name, "#ff7f0e")
            poly = np.vstack([c, c[:1]])
            ax.plot(-poly[:, 1], poly[:, 0], color="k" if dashed else col, lw=1.0 if dashed else 1.4,
                    ls="--" if dashed else "-")
            front = (c[0] + c[3]) / 2
            ctr = c.mean(0)
            ax.plot([-ctr[1], -front[1]], [ctr[0], front[0]], color="k" if dashed else col, lw=0.8)
            if scores is not None:
                ax.text(-c[:, 1].min(), c[:, 0].max(), f"{scores[k]:.2f}", fontsize=5, color=col)

    draw(gt_boxes, gt_names, None, True)
    draw(pred_boxes, pred_names, pred_scores, False)
    ax.set_xlim(-y1, -y0)
    ax.set_ylim(x0, x1)
    ax.set_aspect("equal")
    ax.set_xlabel("-y (m, left <- -> right)")
    ax.set_ylabel("x (m, forward)")
    handles = [plt.Line2D([], [], color=c, label=n) for n, c in CLASS_COLORS.items()]
    if gt_boxes is not None and len(gt_boxes):
        handles.append(plt.Line2D([], [], color="k", ls="--", label="ground truth"))
    ax.legend(handles=handles, loc="lower right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    from ffnet.fileio import save_figure

    save_figure(fig, path, dpi=dpi)
    return path


def _render_child(npz_path: str, out_path: str, width: int, height: int) -> None:  # pragma: no cover - child
    from ._open3d import o3d

    o3d_ = o3d()
    data = np.load(npz_path)
    pts = data["points"]
    renderer = o3d_.visualization.rendering.OffscreenRenderer(width, height)
    mat = o3d_.visualization.rendering.MaterialRecord()
    mat.shader = "defaultUnlit"
    mat.point_size = 1.5
    pcd = o3d_.geometry.PointCloud(o3d_.utility.Vector3dVector(pts[:, :3].astype(np.float64)))
    g = np.clip((pts[:, 2] + 2.5) / 3.5, 0, 1)
    pcd.colors = o3d_.utility.Vector3dVector(np.stack([g, 0.6 * np.ones_like(g), 1 - g], 1))
    renderer.scene.set_background([1, 1, 1, 1])
    renderer.scene.add_geometry("points", pcd, mat)
    line_mat = o3d_.visualization.rendering.MaterialRecord()
    line_mat.shader = "unlitLine"
    line_mat.line_width = 2.0
    edges = [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]]
    for k, key in enumerate(("pred", "gt")):
        boxes = data[key]
        for i, corners in enumerate(boxes_to_corners_3d(boxes) if len(boxes) else []):
            ls = o3d_.geometry.LineSet(o3d_.utility.Vector3dVector(corners), o3d_.utility.Vector2iVector(edges))
            ls.paint_uniform_color([0.1, 0.3, 0.9] if k == 0 else [0, 0, 0])
            renderer.scene.add_geometry(f"{key}{i}", ls, line_mat)
    renderer.setup_camera(60.0, [25, 0, -1], [-12, 0, 18], [0, 0, 1])
    img = renderer.render_to_image()
    o3d_.io.write_image(out_path, img)


def render_open3d(path: str | os.PathLike, points: np.ndarray, pred_boxes=None, gt_boxes=None,
                  width: int = 960, height: int = 540, timeout: float = 120.0) -> bool:
    """Offscreen 3D render to PNG when Vulkan is present; returns False (never raises) otherwise."""
    from ._open3d import vulkan_available

    if not vulkan_available():
        return False
    path = Path(path)
    with tempfile.TemporaryDirectory() as td:
        npz = os.path.join(td, "scene.npz")
        np.savez(npz, points=np.asarray(points, np.float32),
                 pred=np.zeros((0, 7)) if pred_boxes is None else np.asarray(pred_boxes, np.float64).reshape(-1, 7),
                 gt=np.zeros((0, 7)) if gt_boxes is None else np.asarray(gt_boxes, np.float64).reshape(-1, 7))
        tmp_png = os.path.join(td, "render.png")
        args = json.dumps([npz, tmp_png, width, height])
        code = f"import json; from ffnet_3d.viz import _render_child; _render_child(*json.loads({args!r}))"
        try:
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if res.returncode != 0 or not os.path.isfile(tmp_png):
            return False
        from ffnet.fileio import atomic_write_bytes

        atomic_write_bytes(path, Path(tmp_png).read_bytes())  # the render lives in a temp dir: copy, then rename
    return True
