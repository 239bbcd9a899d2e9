"""FFNet-3D on the six real KITTI frames: recall of the labelled objects and false positives per frame.

For each checkpoint (``--checkpoint NAME=PATH``; ``shipped`` = the one in the package) every scan of
``$FFNET_DATA_DIR/pointcloud/kitti/training`` goes through the same path as ``ffnet-3d detect``
(field-of-view crop -> voxelize -> detector -> decode at the checkpoint's default score threshold).

* recall: a labelled Car / Pedestrian / Cyclist is found when a detection of the *same class* has
  BEV IoU >= 0.5 with it (greedy, highest score first, each detection matches at most one label).
  Only labels whose centre lies inside the detector's point-cloud range count (the ``synth_cpu``
  grid ends at x = 51.2 m, |y| = 25.6 m); labels outside it are listed separately.
* false positives: detections not matched that way. ``fp_no_overlap`` are those that overlap *no*
  labelled 3D box of any type (Van, Truck, Misc, ... included): detections on walls, vegetation
  and poles, the failure the issue describes, as opposed to a poorly localised box on a real object.

The six frames hold 5 Cars, 2 Pedestrians and 1 Cyclist: a small sample, so one object is 12-50
points of recall. A BEV montage per checkpoint (points, predicted boxes solid, labels dashed)
is written to ``--png-dir`` (default ``packages/pointcloud/docs``); ``--synth DIR`` also writes a
montage of the first six synthetic frames of DIR in the same style, for side-by-side comparison.

Usage (the README's table):
    FFNET_DATA_DIR=/work/shared/data nice -n 10 uv run python benchmarks/pointcloud_real.py --threads 1 \\
        --checkpoint shipped --name pointcloud_real

Writes benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("Car", "Pedestrian", "Cyclist")


def match_frame(det_boxes, det_names, det_scores, gt_boxes, gt_names, all_boxes, iou_thresh=0.5) -> dict:
    """Greedy same-class matching at BEV IoU >= ``iou_thresh`` (highest score first).

    ``all_boxes``: every labelled 3D box of the frame (any type), for the no-overlap count.
    Returns per-label ``found`` flags and per-detection ``tp`` / ``no_overlap`` flags.
    """
    from ffnet_3d.iou import bev_iou_numba

    nd, ng = len(det_boxes), len(gt_boxes)
    found = np.zeros(ng, bool)
    tp = np.zeros(nd, bool)
    if nd and ng:
        iou = bev_iou_numba(np.asarray(det_boxes, float), np.asarray(gt_boxes, float))
        for i in np.argsort(-np.asarray(det_scores), kind="stable"):
            cand = [(iou[i, j], j) for j in range(ng) if not found[j] and gt_names[j] == det_names[i]
                    and iou[i, j] >= iou_thresh]
            if cand:
                j = max(cand)[1]
                found[j] = tp[i] = True
    no_overlap = np.ones(nd, bool)
    if nd and len(all_boxes):
        no_overlap = bev_iou_numba(np.asarray(det_boxes, float), np.asarray(all_boxes, float)).max(1) <= 0.0
    return {"found": found, "tp": tp, "no_overlap": no_overlap & ~tp}


def montage(path, frames: list[dict], title: str, xlim, ylim) -> None:
    """Up to six BEV panels (x forward up, y left to the left), colour = height."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from ffnet.fileio import save_figure
    from ffnet_3d.boxes import boxes_to_bev_corners
    from ffnet_3d.viz import CLASS_COLORS

    n = len(frames)
    cols = 3
    rows = (n + cols - 1) // cols
    w_panel = 5.0
    h_panel = w_panel * (xlim[1] - xlim[0]) / (ylim[1] - ylim[0])
    fig, axes = plt.subplots(rows, cols, figsize=(cols * w_panel, rows * h_panel + 0.6), squeeze=False)
    for ax, fr in zip(axes.ravel(), frames):
        p = fr["points"]
        m = (p[:, 0] >= xlim[0]) & (p[:, 0] <= xlim[1]) & (p[:, 1] >= ylim[0]) & (p[:, 1] <= ylim[1])
        p = p[m]
        ax.scatter(-p[:, 1], p[:, 0], s=0.15, c=p[:, 2], cmap="viridis", vmin=-2.3, vmax=1.0, linewidths=0)
        for boxes, names, scores, dashed in ((fr.get("gt_boxes"), fr.get("gt_names"), None, True),
                                             (fr.get("det_boxes"), fr.get("det_names"), fr.get("det_scores"), False)):
            if boxes is None or len(boxes) == 0:
                continue
            for k, c in enumerate(boxes_to_bev_corners(np.asarray(boxes, float))):
                col = "k" if dashed else CLASS_COLORS.get(str(names[k]), "#ff7f0e")
                poly = np.vstack([c, c[:1]])
                ax.plot(-poly[:, 1], poly[:, 0], color=col, lw=0.9 if dashed else 1.2, ls="--" if dashed else "-")
                if scores is not None:
                    ax.text(-c[:, 1].min(), c[:, 0].max(), f"{scores[k]:.2f}", fontsize=5, color=col)
        ax.set_xlim(-ylim[1], -ylim[0])
        ax.set_ylim(*xlim)
        ax.set_aspect("equal")
        ax.set_title(fr["title"], fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, label=k) for k, c in CLASS_COLORS.items()]
    handles.append(plt.Line2D([], [], color="k", ls="--", label="label"))
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncol=4)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(fig, path, dpi=110)


def run_checkpoint(name: str, ckpt: str | None, frames, ids, png_dir: Path | None, extra_thresh=()) -> dict:
    import torch
    from ffnet_3d.checkpoint import load_model
    from ffnet_3d.data import in_range_mask
    from ffnet_3d.inference import detect_points

    model, cfg, meta = load_model(ckpt, "cpu")
    pr = cfg.data.point_cloud_range
    per_frame, panels = [], []
    tot = {c: [0, 0] for c in CLASSES}  # found, labelled (in range)
    out_of_range = 0
    fp = fp_no = 0
    n_det = 0
    extra = {}
    t0 = time.perf_counter()
    for fid in ids:
        points = frames.points(fid)
        calib = frames.calib(fid)
        shape = frames.image_shape(fid)
        labels = frames.labels(fid)
        with torch.no_grad():
            det = detect_points(model, cfg, points, calib, shape, "cpu")
        all_obj = labels.select(labels.name != "DontCare")
        all_boxes = all_obj.boxes_lidar(calib) if len(all_obj) else np.zeros((0, 7))
        sel = labels.select(np.isin(labels.name, CLASSES))
        gt_boxes = sel.boxes_lidar(calib) if len(sel) else np.zeros((0, 7))
        inr = in_range_mask(gt_boxes[:, :3], pr) if len(gt_boxes) else np.zeros(0, bool)
        out_of_range += int((~inr).sum())
        gt_in, names_in = gt_boxes[inr], np.asarray(sel.name)[inr]
        m = match_frame(det["boxes"], det["names"], det["scores"], gt_in, names_in, all_boxes)
        for thr in extra_thresh:  # the same detections, kept above a stricter score
            k = det["scores"] >= thr
            mx = match_frame(det["boxes"][k], det["names"][k], det["scores"][k], gt_in, names_in, all_boxes)
            ex = extra.setdefault(thr, {"found": 0, "fp": 0})
            ex["found"] += int(mx["found"].sum())
            ex["fp"] += int((~mx["tp"]).sum())
        for c in CLASSES:
            tot[c][0] += int(m["found"][names_in == c].sum())
            tot[c][1] += int((names_in == c).sum())
        fp += int((~m["tp"]).sum())
        fp_no += int(m["no_overlap"].sum())
        n_det += len(det["boxes"])
        per_frame.append({"frame": fid, "detections": len(det["boxes"]), "labelled_in_range": int(inr.sum()),
                          "found": int(m["found"].sum()), "fp": int((~m["tp"]).sum()),
                          "fp_no_overlap": int(m["no_overlap"].sum()),
                          "dets": [{"name": str(n), "score": round(float(s), 3), "tp": bool(t),
                                    "box": [round(float(v), 2) for v in b]}
                                   for n, s, t, b in zip(det["names"], det["scores"], m["tp"], det["boxes"])]})
        panels.append({"points": points[calib.fov_mask(points, shape)], "det_boxes": det["boxes"],
                       "det_names": det["names"], "det_scores": det["scores"], "gt_boxes": gt_boxes,
                       "gt_names": np.asarray(sel.name),
                       "title": f"{fid}: {int(m['found'].sum())}/{int(inr.sum())} found, {int((~m['tp']).sum())} FP"})
    wall = time.perf_counter() - t0
    found = sum(v[0] for v in tot.values())
    lab = sum(v[1] for v in tot.values())
    res = {"name": name, "checkpoint": str(ckpt or "shipped"), "train_meta": meta,
           "score_thresh": cfg.test.score_thresh, "frames": len(ids),
           "recall": found / max(lab, 1), "found": found, "labelled_in_range": lab,
           "labelled_out_of_range": out_of_range,
           "per_class": {c: {"found": v[0], "labelled": v[1]} for c, v in tot.items()},
           "fp_per_frame": fp / len(ids), "fp_no_overlap_per_frame": fp_no / len(ids),
           "detections_per_frame": n_det / len(ids), "wall_s": round(wall, 1),
           "at_score": {str(t): {"found": v["found"], "fp_per_frame": v["fp"] / len(ids)} for t, v in extra.items()},
           "per_frame": per_frame}
    if png_dir is not None:
        png = png_dir / f"real_kitti_{name}.png"
        montage(png, panels, f"{name}: six real KITTI frames, score >= {cfg.test.score_thresh} "
                             f"(recall@BEV0.5 {found}/{lab}, {fp / len(ids):.1f} FP/frame)",
                (pr[0], pr[3]), (pr[1], pr[4]))
        res["png"] = str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png)
    return res


def synth_montage(synth_dir: Path, png: Path, xlim, ylim, n: int = 6) -> None:
    from ffnet_3d.io import KittiFrames

    fr = KittiFrames(synth_dir)
    panels = []
    for fid in list(fr.ids)[:n]:
        calib = fr.calib(fid)
        pts = fr.points(fid)
        shape = fr.image_shape(fid)
        lab = fr.labels(fid)
        lab = lab.select(np.isin(lab.name, CLASSES))
        panels.append({"points": pts[calib.fov_mask(pts, shape)], "gt_boxes": lab.boxes_lidar(calib) if len(lab)
                       else np.zeros((0, 7)), "gt_names": lab.name, "title": f"synthetic {fid}"})
    montage(png, panels, f"synthetic frames ({synth_dir}), labels dashed", xlim, ylim)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                    help="checkpoint to measure (repeatable); 'shipped' alone = the packaged checkpoint")
    ap.add_argument("--data", help="KITTI root (default $FFNET_DATA_DIR/pointcloud/kitti)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="pointcloud_real", help="results file stem")
    ap.add_argument("--png-dir", default=str(ROOT / "packages/pointcloud/docs"))
    ap.add_argument("--no-png", action="store_true")
    ap.add_argument("--extra-thresh", type=float, nargs="*", default=[0.3],
                    help="also report recall / FP at these stricter score thresholds")
    ap.add_argument("--synth", help="also write a montage of six frames of this synthetic dataset")
    ap.add_argument("--synth-png", default=None, help="path of that montage (default PNG_DIR/synthetic_frames.png)")
    args = ap.parse_args(argv)

    import torch
    from ffnet_3d.io import KittiFrames, data_root

    torch.set_num_threads(args.threads)
    root = Path(args.data) if args.data else data_root() / "kitti"
    frames = KittiFrames(root)
    ids = list(frames.ids)
    png_dir = None if args.no_png else Path(args.png_dir)
    specs = args.checkpoint or ["shipped"]
    results = []
    for spec in specs:
        name, _, path = spec.partition("=")
        if not path:
            name, path = (spec, None) if spec == "shipped" else (Path(spec).parent.name or spec, spec)
        results.append(run_checkpoint(name, path, frames, ids, png_dir, args.extra_thresh))
    if args.synth:
        png = Path(args.synth_png) if args.synth_png else Path(args.png_dir) / "synthetic_frames.png"
        synth_montage(Path(args.synth), png, (0.0, 51.2), (-25.6, 25.6))

    lines = [f"# FFNet-3D on the six real KITTI frames ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `FFNET_DATA_DIR=... nice -n 10 uv run python benchmarks/pointcloud_real.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "Recall: labelled Car / Pedestrian / Cyclist inside the detector's range found by a same-class detection "
             "at BEV IoU >= 0.5. FP: unmatched detections at the checkpoint's default score threshold; "
             "'no overlap': FPs overlapping no labelled object of any type. Six frames (5 Cars, 2 Pedestrians, "
             "1 Cyclist in total) are a small sample.", "",
             "| checkpoint | score thr | recall (all) | Car | Ped | Cyc | FP / frame | FP no overlap / frame | dets / frame |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        pc = r["per_class"]
        lines.append(f"| {r['name']} | {r['score_thresh']} | {r['found']}/{r['labelled_in_range']} "
                     f"({100 * r['recall']:.0f} %) | " + " | ".join(f"{pc[c]['found']}/{pc[c]['labelled']}" for c in CLASSES)
                     + f" | {r['fp_per_frame']:.2f} | {r['fp_no_overlap_per_frame']:.2f} | {r['detections_per_frame']:.2f} |")
    for thr in args.extra_thresh:
        lines += ["", f"Same detections kept at score >= {thr}:", "",
                  "| checkpoint | recall (all) | FP / frame |", "|---|---:|---:|"]
        for r in results:
            e = r["at_score"][str(thr)]
            lines.append(f"| {r['name']} | {e['found']}/{r['labelled_in_range']} | {e['fp_per_frame']:.2f} |")
    if results:
        lines += ["", f"Labels outside the detector's range (not counted): {results[0]['labelled_out_of_range']}."]
    save(args.name, {"environment": environment(), "data": str(root), "frames": ids, "results": results},
         "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
