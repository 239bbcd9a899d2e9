"""3D boxes and KITTI calibration.

Conventions (the ones OpenPCDet and the KITTI devkit use):

* LiDAR boxes are ``(x, y, z, dx, dy, dz, heading)``: geometric centre in the velodyne frame
  (x forward, y left, z up), ``dx`` = length along the heading, ``dy`` = width, ``dz`` = height,
  heading = yaw from +x towards +y.
* KITTI camera boxes (``label_2``) are ``(x, y, z, h, w, l, ry)`` in the *rectified* camera frame
  (x right, y down, z forward); ``(x, y, z)`` is the centre of the box's *bottom* face and ``ry``
  the rotation about the camera y axis, 0 when the box faces the camera's +x.

Conversions: ``heading = -ry - pi/2`` and the centre moves up by ``h/2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Calibration",
    "limit_period",
    "boxes_to_corners_3d",
    "points_in_boxes",
    "boxes_to_bev_corners",
]


def limit_period(val, offset: float = 0.5, period: float = 2 * np.pi):
    """Wrap angles into ``[-offset * period, (1 - offset) * period)``."""
    return val - np.floor(val / period + offset) * period


def boxes_to_corners_3d(boxes: np.ndarray) -> np.ndarray:
    """LiDAR boxes (N, 7) -> corners (N, 8, 3).

    Order: bottom face (z-) counter-clockwise seen from above starting at (+dx/2, +dy/2),
    then the top face in the same order.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    template = np.array(
        [[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]],
        dtype=np.float64,
    ) / 2.0
    corners = boxes[:, None, 3:6] * template[None]  # (N, 8, 3)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (N, 2, 2)
    corners[..., :2] = np.einsum("nij,nkj->nki", rot, corners[..., :2])
    return corners + boxes[:, None, :3]


def boxes_to_bev_corners(boxes: np.ndarray) -> np.ndarray:
    """LiDAR boxes (N, 7) -> BEV rectangle corners (N, 4, 2), counter-clockwise."""
    return boxes_to_corners_3d(boxes)[:, :4, :2]


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Mask (N_points, N_boxes): point i lies inside box j (boundary included, optional margin)."""
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    if len(boxes) == 0:
        return np.zeros((len(pts), 0), dtype=bool)
    d = pts[:, None, :] - boxes[None, :, :3]  # (N, M, 3)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local_x = d[..., 0] * c + d[..., 1] * s
    local_y = -d[..., 0] * s + d[..., 1] * c
    half = boxes[None, :, 3:6] / 2 + margin
    return (np.abs(local_x) <= half[..., 0]) & (np.abs(local_y) <= half[..., 1]) & (np.abs(d[..., 2]) <= half[..., 2])


@dataclass
class Calibration:
    """KITTI object calibration: ``P2`` (3, 4), ``R0_rect`` (3, 3), ``Tr_velo_to_cam`` (3, 4)."""

    P2: np.ndarray
    R0: np.ndarray
    V2C: np.ndarray

    def __post_init__(self):
        self.P2 = np.asarray(self.P2, dtype=np.float64).reshape(3, 4)
        self.R0 = np.asarray(self.R0, dtype=np.float64).reshape(3, 3)
        self.V2C = np.asarray(self.V2C, dtype=np.float64).reshape(3, 4)

    # ---- points -------------------------------------------------------------------------------
    def lidar_to_rect(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)[:, :3]
        return (pts @ self.V2C[:, :3].T + self.V2C[:, 3]) @ self.R0.T

    def rect_to_lidar(self, pts_rect: np.ndarray) -> np.ndarray:
        pts_rect = np.asarray(pts_rect, dtype=np.float64)[:, :3]
        pts_ref = pts_rect @ np.linalg.inv(self.R0).T  # undo rectification
        # invert the rigid [R | t]: p_velo = R^T (p_ref - t)
        return (pts_ref - self.V2C[:, 3]) @ np.linalg.inv(self.V2C[:, :3]).T

    def rect_to_img(self, pts_rect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project rectified camera points with P2 -> (pixels (N, 2), depth (N,))."""
        pts_rect = np.asarray(pts_rect, dtype=np.float64)
        hom = np.concatenate([pts_rect, np.ones((len(pts_rect), 1))], axis=1) @ self.P2.T
        depth = hom[:, 2] - self.P2[2, 3]  # depth in the rectified frame
        return hom[:, :2] / hom[:, 2:3], depth

    # ---- boxes --------------------------------------------------------------------------------
    def boxes_camera_to_lidar(self, loc: np.ndarray, dims_hwl: np.ndarray, ry: np.ndarray) -> np.ndarray:
        """KITTI camera boxes -> LiDAR boxes (N, 7)."""
        loc = np.asarray(loc, dtype=np.float64).reshape(-1, 3)
        h, w, ln = (np.asarray(dims_hwl, dtype=np.float64).reshape(-1, 3)[:, i] for i in range(3))
        xyz = self.rect_to_lidar(loc)
        xyz[:, 2] += h / 2  # bottom centre -> geometric centre
        heading = limit_period(-np.asarray(ry, dtype=np.float64).reshape(-1) - np.pi / 2)
        return np.concatenate([xyz, np.stack([ln, w, h, heading], axis=1)], axis=1)

    def boxes_lidar_to_camera(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LiDAR boxes (N, 7) -> (loc (N, 3) bottom centre in rect frame, dims hwl (N, 3), ry (N,))."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        bottom = boxes[:, :3].copy()
        bottom[:, 2] -= boxes[:, 5] / 2
        loc = self.lidar_to_rect(bottom)
        dims = boxes[:, [5, 4, 3]]  # h, w, l
        ry = limit_period(-boxes[:, 6] - np.pi / 2)
        return loc, dims, ry

    def boxes_to_image_bbox(self, boxes: np.ndarray, image_shape: tuple[int, int] | None = None):
        """2D image boxes (N, 4) x1 y1 x2 y2 of LiDAR boxes, clipped to ``image_shape`` (H, W).

        Also returns the fraction of each unclipped projected box that lies outside the image
        (a truncation estimate) and a mask of boxes with every corner in front of the camera.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        n = len(boxes)
        if n == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=bool)
        corners = boxes_to_corners_3d(boxes).reshape(-1, 3)
        rect = self.lidar_to_rect(corners)
        uv, depth = self.rect_to_img(rect)
        uv, depth = uv.reshape(n, 8, 2), depth.reshape(n, 8)
        in_front = (depth > 0.1).all(axis=1)
        bbox = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
        trunc = np.zeros(n)
        if image_shape is not None:
            H, W = image_shape
            clipped = bbox.copy()
            clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, W - 1)
            clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, H - 1)
            area = np.maximum(bbox[:, 2] - bbox[:, 0], 1e-6) * np.maximum(bbox[:, 3] - bbox[:, 1], 1e-6)
            inner = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
            trunc = np.clip(1.0 - inner / area, 0.0, 1.0)
            bbox = clipped
        trunc[~in_front] = 1.0
        return bbox, trunc, in_front

    def alpha(self, loc: np.ndarray, ry: np.ndarray) -> np.ndarray:
        """Observation angle: ``ry`` minus the azimuth of the object seen from the camera."""
        loc = np.asarray(loc, dtype=np.float64).reshape(-1, 3)
        return limit_period(np.asarray(ry) - np.arctan2(loc[:, 0], loc[:, 2]))

    def fov_mask(self, points: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
        """Points that project into the image (and lie in front of the camera)."""
        uv, depth = self.rect_to_img(self.lidar_to_rect(points))
        H, W = image_shape
        return (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
