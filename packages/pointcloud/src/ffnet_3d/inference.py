"""Inference helpers: batched prediction, KITTI result objects, dataset evaluation, single-scan detect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .boxes import Calibration
from .centerpoint import decode
from .config import Config
from .data import KittiDetectionDataset, collate, prepare_points  # noqa: F401
from .io import KittiObjects, atomic_write_text, parse_label_lines
from .kitti_eval import kitti_eval
from .synth import synth_calibration
from .voxelize import voxelize_numba

__all__ = ["predict", "predictions_to_kitti", "as_written", "evaluate", "detect_points"]


@torch.no_grad()
def predict(model, batch: dict, cfg: Config, device) -> list[dict]:
    """Decoded detections per frame: numpy ``boxes`` (K, 7) LiDAR, ``scores``, ``names``."""
    model.eval()
    out = model(batch["voxels"].to(device), batch["coords"].to(device), batch["batch_size"])
    t = cfg.test
    dets = decode(out, cfg.data.point_cloud_range, cfg.data.voxel_size, model.feature_map_stride,
                  t.score_thresh, t.nms_thresh, t.topk, t.post_max)
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


@torch.no_grad()
def detect_points(model, cfg: Config, points: np.ndarray, calib: Calibration | None = None,
                  image_shape=(375, 1242), device="cpu") -> dict:
    """Detect on one scan. Without a calibration the field-of-view filter is skipped."""
    d = cfg.data
    pts = prepare_points(points, cfg, calib, image_shape)
    vox, coords, num, _ = voxelize_numba(pts, d.voxel_size, d.point_cloud_range, d.max_points_per_voxel,
                                         d.max_voxels_test)
    feats = vox.sum(1) / np.maximum(num, 1)[:, None].astype(np.float32)
    batch = {"voxels": torch.from_numpy(feats), "batch_size": 1,
             "coords": torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), torch.from_numpy(coords)], 1)}
    return predict(model, batch, cfg, device)[0]


def default_calibration() -> Calibration:
    """Used to express results in camera coordinates when no calibration is given (documented)."""
    return synth_calibration()


__all__ += ["default_calibration"]
