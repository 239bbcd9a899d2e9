"""KITTI-layout detection dataset: load, field-of-view filter, augment, voxelize, build targets.

Augmentation (training only) is seeded by ``(seed, epoch, index)``, so a resumed run sees exactly
the samples an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .boxes import Calibration, limit_period, points_in_boxes
from .centerpoint import build_targets
from .config import Config
from .io import KittiFrames, KittiObjects, PointCloudError
from .voxelize import voxelize_numba

__all__ = ["KittiDetectionDataset", "collate", "Sample", "in_range_mask", "prepare_points"]


def in_range_mask(xyz: np.ndarray, pr) -> np.ndarray:
    return ((xyz[:, 0] >= pr[0]) & (xyz[:, 0] < pr[3]) & (xyz[:, 1] >= pr[1]) & (xyz[:, 1] < pr[4])
            & (xyz[:, 2] >= pr[2]) & (xyz[:, 2] < pr[5]))


def prepare_points(points: np.ndarray, cfg: Config, calib: Calibration | None, image_shape) -> np.ndarray:
    """Field-of-view filter (when configured and a calibration exists) + range filter."""
    if cfg.data.fov_only and calib is not None:
        points = points[calib.fov_mask(points, image_shape)]
    return points[in_range_mask(points, cfg.data.point_cloud_range)]


@dataclass
class Sample:
    frame_id: str
    voxels: torch.Tensor  # (M, C) mean features
    coords: torch.Tensor  # (M, 3) zyx int32
    targets: dict | None
    gt: KittiObjects | None
    calib: Calibration | None
    image_shape: tuple[int, int]


class KittiDetectionDataset(torch.utils.data.Dataset):
    """Frames of a KITTI-object directory as voxel tensors (+ CenterPoint targets when labelled).

    Args:
        root: KITTI layout root (see :class:`ffnet_3d.io.KittiFrames`).
        cfg: experiment config.
        out_size: (H, W) of the detector's head maps; ``stride``: its feature-map stride.
        ids: frame ids to use (default: all).
        training: enable augmentation and training-size voxel budget.
    """

    def __init__(self, root, cfg: Config, out_size: tuple[int, int], stride: int, ids=None, training: bool = False):
        self.frames = KittiFrames(root)
        self.ids = list(ids) if ids is not None else list(self.frames.ids)
        missing = set(self.ids) - set(self.frames.ids)
        if missing:
            raise PointCloudError(f"frame ids not in {self.frames.split_dir}: {sorted(missing)[:5]}")
        self.cfg = cfg
        self.out_size = tuple(out_size)
        self.stride = int(stride)
        self.training = training
        self.epoch = 0
        self.class_index = {c: i for i, c in enumerate(cfg.data.classes)}
        self.has_labels = all(self.frames.label_path(f).is_file() for f in self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ ground-truth sampling
    def _build_gt_database(self) -> None:
        """Every labelled object of the training frames with its points (an OpenPCDet-style GT database).

        Built once, lazily, from the same field-of-view-filtered points ``__getitem__`` loads.
        """
        d = self.cfg.data
        db = {c: [] for c in range(len(d.classes))}
        for fi, fid in enumerate(self.ids):
            points, boxes, labels, _ = self._load(fid)
            if not len(boxes):
                continue
            inside = points_in_boxes(points, boxes)
            for k in range(len(boxes)):
                m = inside[:, k]
                if m.sum() >= d.gt_sample_min_points:
                    db[int(labels[k])].append((fi, boxes[k].copy(), points[m].copy()))
        self._gt_db = db

    def _gt_sample(self, rng, index, points, boxes, labels):
        """Paste objects of other frames at their recorded position (their LiDAR pattern depends on
        it) when their BEV footprint overlaps no box already in the scene; scene points inside a
        pasted box are removed so each pasted box holds exactly its own points."""
        from .iou import bev_iou_numba

        if getattr(self, "_gt_db", None) is None:
            self._build_gt_database()
        d = self.cfg.data
        new_boxes, new_labels, new_points = [], [], []
        taken = boxes.copy()
        for c, n_max in enumerate(d.gt_sample_max[: len(d.classes)]):
            pool = self._gt_db.get(c, [])
            if n_max <= 0 or not pool:
                continue
            for j in rng.choice(len(pool), size=min(int(n_max), len(pool)), replace=False):
                src, box, pts = pool[int(j)]
                if src == index:
                    continue
                if len(taken) and (bev_iou_numba(box[None], taken) > 0).any():
                    continue
                taken = np.concatenate([taken, box[None]])
                new_boxes.append(box)
                new_labels.append(c)
                new_points.append(pts)
        if not new_boxes:
            return points, boxes, labels
        nb = np.stack(new_boxes)
        keep = ~points_in_boxes(points, nb).any(1)
        points = np.concatenate([points[keep]] + new_points).astype(np.float32)
        return points, np.concatenate([boxes, nb]), np.concatenate([labels, np.asarray(new_labels, np.int64)])

    def _load(self, fid):
        """(FOV-filtered points, LiDAR boxes, class indices, (calib, gt, image shape)) of one frame."""
        d = self.cfg.data
        points = self.frames.points(fid)
        calib_path = self.frames.calib_path(fid)
        calib = self.frames.calib(fid) if calib_path.is_file() else None
        image_shape = self.frames.image_shape(fid)
        if d.fov_only and calib is not None:
            points = points[calib.fov_mask(points, image_shape)]
        gt = self.frames.labels(fid) if self.has_labels else None
        boxes = labels = None
        if gt is not None:
            if calib is None:
                raise PointCloudError(f"{calib_path}: labelled frame without calibration")
            objs = gt.select(np.isin(gt.name, list(d.classes)))
            boxes = objs.boxes_lidar(calib).reshape(-1, 7)
            labels = np.array([self.class_index[n] for n in objs.name], dtype=np.int64)
        return points, boxes, labels, (calib, gt, image_shape)

    def _augment(self, rng, points, boxes):
        d = self.cfg.data
        if d.flip_y and rng.random() < 0.5:  # mirror across the x axis
            points[:, 1] = -points[:, 1]
            boxes[:, 1] = -boxes[:, 1]
            boxes[:, 6] = -boxes[:, 6]
        angle = rng.uniform(*d.rot_range)
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s], [s, c]], dtype=np.float64)
        points[:, :2] = (points[:, :2].astype(np.float64) @ rot.T).astype(np.float32)
        boxes[:, :2] = boxes[:, :2] @ rot.T
        boxes[:, 6] = limit_period(boxes[:, 6] + angle)
        scale = rng.uniform(*d.scale_range)
        points[:, :3] *= scale
        boxes[:, :6] *= scale
        return points, boxes

    def __getitem__(self, index: int) -> Sample:
        fid = self.ids[index]
        d = self.cfg.data
        points, boxes, labels, (calib, gt, image_shape) = self._load(fid)
        targets = None
        if gt is not None:
            if self.training:
                rng = np.random.default_rng([self.cfg.train.seed, self.epoch, index])
                if any(n > 0 for n in d.gt_sample_max):
                    # its own generator: switching GT sampling on leaves the other draws unchanged
                    points, boxes, labels = self._gt_sample(
                        np.random.default_rng([self.cfg.train.seed, self.epoch, index, 1]), index, points, boxes,
                        labels)
                points, boxes = self._augment(rng, points.copy(), boxes.copy())
            points = points[in_range_mask(points, d.point_cloud_range)]
            ok = in_range_mask(boxes[:, :3], d.point_cloud_range) if len(boxes) else np.zeros(0, bool)
            if len(boxes) and d.min_points_in_gt > 0:
                ok &= points_in_boxes(points, boxes).sum(0) >= d.min_points_in_gt
            boxes, labels = boxes[ok], labels[ok]
            t = self.cfg.train
            targets = build_targets(boxes, labels, len(d.classes), self.out_size, d.point_cloud_range, d.voxel_size,
                                    self.stride, t.max_objects, t.gaussian_overlap, t.min_radius)
        else:
            points = points[in_range_mask(points, d.point_cloud_range)]
        max_vox = d.max_voxels_train if self.training else d.max_voxels_test
        vox, coords, num, _ = voxelize_numba(points, d.voxel_size, d.point_cloud_range, d.max_points_per_voxel,
                                             max_vox)
        feats = vox.sum(1) / np.maximum(num, 1)[:, None].astype(np.float32)  # (M, C) mean
        return Sample(fid, torch.from_numpy(feats), torch.from_numpy(coords),
                      None if targets is None else {k: torch.from_numpy(v) for k, v in targets.items()},
                      gt, calib, image_shape)


def collate(samples: list[Sample]) -> dict:
    """Batch: voxels (N, C), coords (N, 4) [b, z, y, x], stacked targets, and per-frame metadata."""
    feats = torch.cat([s.voxels for s in samples])
    coords = torch.cat([
        torch.cat([torch.full((len(s.coords), 1), i, dtype=torch.int32), s.coords], dim=1)
        for i, s in enumerate(samples)
    ])
    batch = {"voxels": feats, "coords": coords, "batch_size": len(samples), "frame_ids": [s.frame_id for s in samples],
             "gt": [s.gt for s in samples], "calib": [s.calib for s in samples],
             "image_shape": [s.image_shape for s in samples]}
    if all(s.targets is not None for s in samples):
        batch["targets"] = {k: torch.stack([s.targets[k] for s in samples]) for k in samples[0].targets}
    return batch
