"""KITTI object-detection AP (2D image box, BEV, 3D) with 40 (and legacy 11) recall points.

A re-implementation of the KITTI devkit's ``evaluate_object`` rules, written from its documented
behaviour:

* classes and official IoU thresholds: Car 0.7, Pedestrian 0.5, Cyclist 0.5 (all metrics);
* difficulties: easy / moderate / hard admit ground truth with 2D box height > 40 / 25 / 25 px,
  occlusion <= 0 / 1 / 2 and truncation <= 0.15 / 0.30 / 0.50; other ground truth of the class
  is *ignored* (neither TP nor FN; a detection matched to it is not a FP);
* neighbouring classes are ignored, not counted: Van for Car, Person_sitting for Pedestrian;
* detections whose 2D box is lower than the difficulty's minimum height are ignored;
* DontCare regions: an unmatched detection whose image box lies inside a DontCare box
  (intersection / detection area above the class threshold) is not a FP. The devkit applies this
  test with the metric's own overlap function; DontCare labels carry no 3D box (location -1000),
  so in practice only the 2D ``bbox`` metric is affected, and that is what we do;
* per class and difficulty, detection scores of the true positives are sampled into 41 recall
  thresholds (``getThresholds``), precision is made monotone from the right, and
  AP_R40 = mean precision at recall 1/40 ... 40/40, AP_R11 = mean at recall 0, 0.1, ... 1.0.

Like the devkit, very small evaluation sets behave in a quantised way: with ``n`` valid ground
truths that are all detected there are ``min(n, 41)`` thresholds, so R40 reaches 100 only when
``n >= 41`` (``n = 1`` gives R40 = 0 and R11 = 100/11).
"""

from __future__ import annotations

import json
import math

import numba
import numpy as np

from .io import KittiObjects
from .iou import bev_iou_numba, image_box_overlap, iou3d_numba

__all__ = ["kitti_eval", "format_table", "camera_to_eval_boxes", "OFFICIAL_MIN_OVERLAP", "get_thresholds"]

CLASSES = ("Car", "Pedestrian", "Cyclist")
OFFICIAL_MIN_OVERLAP = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
DIFFICULTIES = ("easy", "moderate", "hard")
NEIGHBOUR = {"car": "van", "pedestrian": "person_sitting"}
N_SAMPLE_PTS = 41


def camera_to_eval_boxes(objs: KittiObjects) -> np.ndarray:
    """Camera boxes -> upright boxes (N, 7) in a right-handed z-up frame (x = z_cam, y = -x_cam).

    IoU is invariant under this rigid change of axes, so no calibration is needed for evaluation.
    """
    if len(objs) == 0:
        return np.zeros((0, 7))
    h, w, ln = objs.dims[:, 0], objs.dims[:, 1], objs.dims[:, 2]
    x = objs.loc[:, 2]
    y = -objs.loc[:, 0]
    z = -objs.loc[:, 1] + h / 2
    return np.stack([x, y, z, ln, w, h, -objs.ry - np.pi / 2], axis=1)


def get_thresholds(scores: np.ndarray, num_gt: int, num_sample_pts: int = N_SAMPLE_PTS) -> np.ndarray:
    """Scores at which recall crosses the ``num_sample_pts`` linearly spaced recall levels."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    current_recall = 0.0
    out = []
    n = len(scores)
    for i, score in enumerate(scores):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < n - 1 else l_recall
        if (r_recall - current_recall) < (current_recall - l_recall) and i < n - 1:
            continue
        out.append(score)
        current_recall += 1.0 / (num_sample_pts - 1.0)
    return np.asarray(out, dtype=np.float64)


def _clean(gt: KittiObjects, dt: KittiObjects, cls: str, difficulty: int):
    """ignored flags: 0 = evaluated, 1 = ignored (matched det is no FP), -1 = other class."""
    cls_l = cls.lower()
    ignored_gt = np.full(len(gt), -1, dtype=np.int64)
    num_valid = 0
    for i in range(len(gt)):
        name = str(gt.name[i]).lower()
        height = gt.bbox[i, 3] - gt.bbox[i, 1]
        if name == cls_l:
            valid = 1
        elif NEIGHBOUR.get(cls_l) == name:
            valid = 0
        else:
            valid = -1
        ignore = (
            gt.occluded[i] > MAX_OCCLUSION[difficulty]
            or gt.truncated[i] > MAX_TRUNCATION[difficulty]
            or height <= MIN_HEIGHT[difficulty]
        )
        if valid == 1 and not ignore:
            ignored_gt[i] = 0
            num_valid += 1
        elif valid == 0 or (ignore and valid == 1):
            ignored_gt[i] = 1
    ignored_dt = np.full(len(dt), -1, dtype=np.int64)
    for i in range(len(dt)):
        height = abs(dt.bbox[i, 3] - dt.bbox[i, 1])
        if height < MIN_HEIGHT[difficulty]:
            ignored_dt[i] = 1
        elif str(dt.name[i]).lower() == cls_l:
            ignored_dt[i] = 0
    return ignored_gt, ignored_dt, num_valid


@numba.njit(cache=True)
def _statistics(overlaps, dt_scores, ignored_gt, ignored_det, dc_overlaps, min_overlap, thresh, compute_fp):
    """One frame: (tp, fp, fn, scores of the TPs). overlaps: (n_dt, n_gt); dc_overlaps: (n_dt, n_dc)."""
    n_dt, n_gt = overlaps.shape
    no_det = -10000000.0
    assigned = np.zeros(n_dt, dtype=np.bool_)
    below = np.zeros(n_dt, dtype=np.bool_)
    if compute_fp:
        for j in range(n_dt):
            below[j] = dt_scores[j] < thresh
    tp = 0
    fp = 0
    fn = 0
    tp_scores = np.empty(n_gt)
    for i in range(n_gt):
        if ignored_gt[i] == -1:
            continue
        det_idx = -1
        valid = no_det
        max_overlap = 0.0
        assigned_ignored = False
        for j in range(n_dt):
            if ignored_det[j] == -1 or assigned[j] or below[j]:
                continue
            ov = overlaps[j, i]
            if not compute_fp and ov > min_overlap and dt_scores[j] > valid:
                det_idx = j
                valid = dt_scores[j]
            elif compute_fp and ov > min_overlap and (ov > max_overlap or assigned_ignored) and ignored_det[j] == 0:
                max_overlap = ov
                det_idx = j
                valid = 1.0
                assigned_ignored = False
            elif compute_fp and ov > min_overlap and valid == no_det and ignored_det[j] == 1:
                det_idx = j
                valid = 1.0
                assigned_ignored = True
        if valid == no_det and ignored_gt[i] == 0:
            fn += 1
        elif valid != no_det and (ignored_gt[i] == 1 or ignored_det[det_idx] == 1):
            assigned[det_idx] = True
        elif valid != no_det:
            tp_scores[tp] = dt_scores[det_idx]
            tp += 1
            assigned[det_idx] = True
    if compute_fp:
        for j in range(n_dt):
            if not (assigned[j] or ignored_det[j] == -1 or ignored_det[j] == 1 or below[j]):
                fp += 1
        nstuff = 0
        for k in range(dc_overlaps.shape[1]):
            for j in range(n_dt):
                if assigned[j] or ignored_det[j] == -1 or ignored_det[j] == 1 or below[j]:
                    continue
                if dc_overlaps[j, k] > min_overlap:
                    assigned[j] = True
                    nstuff += 1
        fp -= nstuff
    return tp, fp, fn, tp_scores[:tp]


def _overlaps(gt: KittiObjects, dt: KittiObjects, metric: str) -> np.ndarray:
    """(n_dt, n_gt) overlap matrix for ``metric`` in {"bbox", "bev", "3d"}."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    if metric == "bbox":
        return image_box_overlap(dt.bbox, gt.bbox, -1)
    fn = bev_iou_numba if metric == "bev" else iou3d_numba
    return fn(camera_to_eval_boxes(dt), camera_to_eval_boxes(gt))


def _precision_at_thresholds(frames, min_overlap, thresholds):
    pr = np.zeros((len(thresholds), 3))
    for ov, scores, ig, idt, dco in frames:
        for t, thr in enumerate(thresholds):
            tp, fp, fn, _ = _statistics(ov, scores, ig, idt, dco, min_overlap, thr, True)
            pr[t] += (tp, fp, fn)
    return pr


def _eval_one(gt_annos, dt_annos, cls, difficulty, metric, min_overlap, overlap_cache):
    frames = []
    all_scores = []
    n_valid = 0
    for k, (gt, dt) in enumerate(zip(gt_annos, dt_annos)):
        ov = overlap_cache[k]
        ig, idt, nv = _clean(gt, dt, cls, difficulty)
        n_valid += nv
        scores = np.zeros(len(dt)) if dt.score is None else np.asarray(dt.score, dtype=np.float64)
        if metric == "bbox":
            dc = gt.bbox[np.char.lower(gt.name.astype(str)) == "dontcare"]
            dco = image_box_overlap(dt.bbox, dc, 0) if len(dt) and len(dc) else np.zeros((len(dt), len(dc)))
        else:
            dco = np.zeros((len(dt), 0))
        frames.append((ov, scores, ig, idt, dco))
        _, _, _, tps = _statistics(ov, scores, ig, idt, dco, min_overlap, 0.0, False)
        all_scores.append(tps)
    if n_valid == 0:
        return None
    thresholds = get_thresholds(np.concatenate(all_scores) if all_scores else np.zeros(0), n_valid)
    precision = np.zeros(N_SAMPLE_PTS)
    recall = np.zeros(N_SAMPLE_PTS)
    if len(thresholds):
        pr = _precision_at_thresholds(frames, min_overlap, thresholds)
        k = len(thresholds)
        precision[:k] = pr[:, 0] / np.maximum(pr[:, 0] + pr[:, 1], 1e-12)
        recall[:k] = pr[:, 0] / np.maximum(pr[:, 0] + pr[:, 2], 1e-12)
        for i in range(k):
            precision[i] = precision[i:k].max()
    return {
        "R40": float(precision[1:].sum() / 40.0 * 100.0),
        "R11": float(precision[::4].sum() / 11.0 * 100.0),
        "num_gt": int(n_valid),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
    }


def kitti_eval(
    gt_annos: list[KittiObjects],
    dt_annos: list[KittiObjects],
    classes=CLASSES,
    metrics=("bbox", "bev", "3d"),
    min_overlaps: dict | None = None,
) -> dict:
    """KITTI AP per class / metric / difficulty.

    Args:
        gt_annos: ground truth per frame (KITTI label_2 objects, including DontCare).
        dt_annos: detections per frame (same order), ``score`` set.
        classes: class names to evaluate.
        metrics: subset of ``("bbox", "bev", "3d")``.
        min_overlaps: IoU threshold per class (default: official Car 0.7, Ped/Cyc 0.5).

    Returns:
        ``{cls: {metric: {difficulty: {"R40", "R11", "num_gt", ...} or None}}}``; None when the
        class has no valid ground truth at that difficulty.
    """
    if len(gt_annos) != len(dt_annos):
        raise ValueError(f"{len(gt_annos)} ground-truth frames but {len(dt_annos)} detection frames")
    min_overlaps = {**OFFICIAL_MIN_OVERLAP, **(min_overlaps or {})}
    out: dict = {}
    for metric in metrics:
        if metric not in ("bbox", "bev", "3d"):
            raise ValueError(f"unknown metric {metric!r}")
        cache = [_overlaps(g, d, metric) for g, d in zip(gt_annos, dt_annos)]
        for cls in classes:
            for di, dname in enumerate(DIFFICULTIES):
                res = _eval_one(gt_annos, dt_annos, cls, di, metric, min_overlaps[cls], cache)
                out.setdefault(cls, {}).setdefault(metric, {})[dname] = res
    return out


def summary(result: dict, key: str = "R40") -> dict:
    """Compact ``{cls: {metric: [easy, moderate, hard]}}`` (None where undefined)."""
    return {
        cls: {m: [None if r is None else round(r[key], 2) for r in per.values()] for m, per in metrics.items()}
        for cls, metrics in result.items()
    }


def format_table(result: dict, key: str = "R40") -> str:
    """Markdown table of AP (easy / moderate / hard) per class and metric."""
    metrics = list(next(iter(result.values())).keys()) if result else []
    header = "| class | " + " | ".join(f"{m.upper()} AP{key[1:]} E / M / H" for m in metrics) + " |"
    lines = [header, "|---" * (len(metrics) + 1) + "|"]
    for cls, per in result.items():
        cells = []
        for m in metrics:
            vals = [r[key] if r is not None else math.nan for r in per[m].values()]
            cells.append(" / ".join("-" if math.isnan(v) else f"{v:.2f}" for v in vals))
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(result: dict) -> str:
    slim = {
        cls: {m: {d: (None if r is None else {k: r[k] for k in ("R40", "R11", "num_gt")}) for d, r in per.items()}
              for m, per in metrics.items()}
        for cls, metrics in result.items()
    }
    return json.dumps(slim, indent=2)
