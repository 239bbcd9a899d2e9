"""Inference helpers: batched prediction, KITTI result objects, dataset evaluation, single-scan detect."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .boxes import Calibration
from .centerpoint import decode
from .config import Config
from .data import KittiDetectionDataset, collate, in_range_mask, prepare_points  # noqa: F401
from .io import KittiObjects, atomic_write_text, parse_label_lines
from .kitti_eval import kitti_eval
from .synth import synth_calibration
from .voxelize import voxelize_numba

__all__ = ["predict", "predictions_to_kitti", "as_written", "evaluate", "detect_points", "StageTimer",
           "DETECT_STAGES", "forward_staged", "voxel_batch", "detect_batch",
           "crop_points"]

# The stages of `ffnet-3d detect`, in order (``lines`` and ``png`` are timed by the CLI).
DETECT_STAGES = ("read", "crop", "voxelize", "encoder", "bev", "neck", "head", "decode", "nms", "lines")


class StageTimer:
    """Wall and CPU (process) time per named stage, summed over repeated entries.

    ``with timer("neck"): ...``; nested stages are allowed (``nms`` inside ``decode``) and are
    subtracted from their parent, so the stages add up to the total.
    """

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._stack: list[list[float]] = []

    @contextmanager
    def __call__(self, name: str):
        child = [0.0, 0.0]  # time spent in nested stages
        self._stack.append(child)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            self._stack.pop()
            self.wall[name] = self.wall.get(name, 0.0) + dt - child[0]
            self.cpu[name] = self.cpu.get(name, 0.0) + dc - child[1]
            if self._stack:
                self._stack[-1][0] += dt
                self._stack[-1][1] += dc

    def total(self, exclude=()) -> tuple[float, float]:
        """``(wall, cpu)`` seconds over all stages except ``exclude``."""
        keys = [k for k in self.wall if k not in exclude]
        return sum(self.wall[k] for k in keys), sum(self.cpu[k] for k in keys)

    def table(self, exclude=("png",)) -> str:
        """Markdown table (ms); the total leaves out ``exclude`` (listed below it)."""
        lines = ["| stage | wall (ms) | CPU (ms) |", "|---|---:|---:|"]
        order = [k for k in DETECT_STAGES if k in self.wall] + [k for k in self.wall if k not in DETECT_STAGES]
        for k in order:
            if k not in exclude:
                lines.append(f"| {k} | {1000 * self.wall[k]:.1f} | {1000 * self.cpu[k]:.1f} |")
        wall, cpu = self.total(exclude)
        lines.append(f"| **total** | **{1000 * wall:.1f}** | **{1000 * cpu:.1f}** |")
        for k in order:
            if k in exclude:
                lines.append(f"| ({k}, not in total) | {1000 * self.wall[k]:.1f} | {1000 * self.cpu[k]:.1f} |")
        return "\n".join(lines)


@contextmanager
def _nullstage(name: str):
    yield


def forward_staged(model, voxel_features, voxel_coords, batch_size: int, timer: StageTimer | None = None):
    """``model(voxel_features, voxel_coords, batch_size)`` with the encoder / BEV / neck / head timed.

    Same computation as :meth:`ffnet_3d.model.Detector.forward` (tested equal).
    """
    from ffnet.sparse import SparseTensor, to_bev

    stage = timer or _nullstage
    with stage("encoder"):
        feats = (voxel_features - model.feat_center) / model.feat_scale
        x = SparseTensor(feats, voxel_coords.int(), model.sparse_shape, batch_size)
        x = model.encoder.forward_features(x)
    with stage("bev"):
        x = to_bev(x)
    with stage("neck"):
        x = model.neck(x)
    with stage("head"):
        return model.forward_head(x)


@torch.no_grad()
def predict(model, batch: dict, cfg: Config, device, timer: StageTimer | None = None) -> list[dict]:
    """Decoded detections per frame: numpy ``boxes`` (K, 7) LiDAR, ``scores``, ``names``."""
    model.eval()
    out = forward_staged(model, batch["voxels"].to(device), batch["coords"].to(device), batch["batch_size"], timer)
    t = cfg.test
    with (timer or _nullstage)("decode"):
        dets = decode(out, cfg.data.point_cloud_range, cfg.data.voxel_size, model.feature_map_stride,
                      t.score_thresh, t.nms_thresh, t.topk, t.post_max, timer=timer)
        classes = np.asarray(cfg.data.classes)
        return [{"boxes": d["boxes"].cpu().double().numpy(), "scores": d["scores"].cpu().double().numpy(),
                 "names": classes[d["labels"].cpu().numpy()]} for d in dets]


def predictions_to_kitti(det: dict, calib: Calibration, image_shape) -> KittiObjects:
    return KittiObjects.from_lidar_boxes(det["names"], det["boxes"], calib, scores=det["scores"],
                                         image_shape=image_shape)


def as_written(objs: KittiObjects, source: str = "<result>") -> tuple[KittiObjects, list[str]]:
    """``(objects as a KITTI result file stores them, the file's lines)``.

    Result lines carry 2 decimals (4 for the score); the KITTI devkit and every outside evaluator
    score those, so :func:`evaluate` scores them too rather than the full-precision boxes.
    """
    lines = objs.to_lines()
    if not lines:
        return objs.select(np.zeros(len(objs), dtype=bool)), lines  # keeps an (empty) score array
    return parse_label_lines(lines, source), lines


def evaluate(model, data_dir, cfg: Config, device="cpu", ids=None, batch_size: int = 4, result_dir=None,
             progress: bool = True) -> tuple[dict, list[KittiObjects]]:
    """Run the model over a labelled KITTI-layout directory -> (kitti_eval result, detections).

    Detections are scored exactly as their KITTI result lines read (:func:`as_written`), so the
    AP equals what the devkit computes from the files written to ``result_dir``.
    """
    ds = KittiDetectionDataset(data_dir, cfg, model.out_size, model.feature_map_stride, ids=ids, training=False)
    if not ds.has_labels:
        raise ValueError(f"{ds.frames.split_dir}: evaluation needs label_2/ for every frame")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    gts, dts = [], []
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="eval", unit="batch")
    for batch in it:
        for det, gt, calib, shape, fid in zip(predict(model, batch, cfg, device), batch["gt"], batch["calib"],
                                              batch["image_shape"], batch["frame_ids"]):
            objs, lines = as_written(predictions_to_kitti(det, calib, shape), f"{fid}.txt")
            gts.append(gt)
            dts.append(objs)
            if result_dir is not None:
                atomic_write_text(Path(result_dir) / f"{fid}.txt", "\n".join(lines) + ("\n" if lines else ""))
    return kitti_eval(gts, dts, classes=cfg.data.classes, metrics=("bev", "3d")), dts


def _fov_mask(points: np.ndarray, calib: Calibration, image_shape) -> np.ndarray:
    """:meth:`Calibration.fov_mask` with the 3x3 / 3x4 products written out per column.

    Same float64 formulas; the matrix products in ``fov_mask`` go through OpenBLAS, whose own
    thread pool (not torch's thread setting) made this the slowest stage of ``detect`` on a loaded
    2-core machine (60 ms CPU vs 9 ms).
    """
    p = [points[:, i].astype(np.float64) for i in range(3)]
    v, r0, p2 = calib.V2C, calib.R0, calib.P2
    ref = [p[0] * v[j, 0] + p[1] * v[j, 1] + p[2] * v[j, 2] + v[j, 3] for j in range(3)]
    rect = [ref[0] * r0[i, 0] + ref[1] * r0[i, 1] + ref[2] * r0[i, 2] for i in range(3)]
    hom = [rect[0] * p2[i, 0] + rect[1] * p2[i, 1] + rect[2] * p2[i, 2] + p2[i, 3] for i in range(3)]
    u, w_, depth = hom[0] / hom[2], hom[1] / hom[2], hom[2] - p2[2, 3]
    h, w = image_shape
    return (depth > 0) & (u >= 0) & (u < w) & (w_ >= 0) & (w_ < h)


def crop_points(points: np.ndarray, cfg: Config, calib: Calibration | None, image_shape) -> np.ndarray:
    """:func:`ffnet_3d.data.prepare_points` (range + field-of-view filter; the same points in the same
    order, tested on the real KITTI frames), with the cheap range test first so that only in-range
    points are projected, and the projection kept off OpenBLAS (:func:`_fov_mask`)."""
    points = points[in_range_mask(points, cfg.data.point_cloud_range)]
    if cfg.data.fov_only and calib is not None:
        points = points[_fov_mask(points, calib, image_shape)]
    return points


def voxel_batch(point_sets: list[np.ndarray], cfg: Config) -> dict:
    """Voxelize cropped scans into one batch (``voxels`` mean features, ``coords`` [b, z, y, x])."""
    d = cfg.data
    feats, coords = [], []
    for b, pts in enumerate(point_sets):
        vox, c, num, _ = voxelize_numba(pts, d.voxel_size, d.point_cloud_range, d.max_points_per_voxel,
                                        d.max_voxels_test)
        feats.append(torch.from_numpy(vox.sum(1) / np.maximum(num, 1)[:, None].astype(np.float32)))
        coords.append(torch.cat([torch.full((len(c), 1), b, dtype=torch.int32), torch.from_numpy(c)], 1))
    return {"voxels": torch.cat(feats), "coords": torch.cat(coords), "batch_size": len(point_sets)}


@torch.no_grad()
def detect_points(model, cfg: Config, points: np.ndarray, calib: Calibration | None = None,
                  image_shape=(375, 1242), device="cpu", timer: StageTimer | None = None) -> dict:
    """Detect on one scan. Without a calibration the field-of-view filter is skipped.

    ``timer`` records the stages crop, voxelize, encoder, bev, neck, head, decode and nms.
    """
    stage = timer or _nullstage
    with stage("crop"):
        pts = crop_points(points, cfg, calib, image_shape)
    with stage("voxelize"):
        batch = voxel_batch([pts], cfg)
    return predict(model, batch, cfg, device, timer)[0]


@torch.no_grad()
def detect_batch(model, cfg: Config, scans: list[tuple[np.ndarray, Calibration | None, tuple[int, int]]],
                 device="cpu", timer: StageTimer | None = None) -> list[dict]:
    """Detect on several scans in one forward pass: ``scans`` = ``[(points, calib, image_shape), ...]``."""
    stage = timer or _nullstage
    with stage("crop"):
        pts = [crop_points(p, cfg, c, s) for p, c, s in scans]
    with stage("voxelize"):
        batch = voxel_batch(pts, cfg)
    return predict(model, batch, cfg, device, timer)


def default_calibration() -> Calibration:
    """Used to express results in camera coordinates when no calibration is given (documented)."""
    return synth_calibration()


__all__ += ["default_calibration"]
