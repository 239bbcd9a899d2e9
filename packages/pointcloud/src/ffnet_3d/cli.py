"""``ffnet-3d``: synth | train | eval | detect.

Bad input gets one ``ffnet-3d: error: ...`` line and exit code 2; outputs are written to temp files
and renamed, and existing outputs are never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _refuse_existing(paths, force: bool) -> None:
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        raise CLIError(f"refusing to overwrite {existing[0]}" + (f" (+{len(existing) - 1} more)" if len(existing) > 1
                                                                 else "") + "; pass --force")


def _device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"device {name!r} requested but CUDA is not available")
    return name


def _apply_overrides(cfg, sets: list[str]):
    import yaml

    from .config import config_from_dict

    d: dict = {}
    for item in sets or []:
        if "=" not in item:
            raise CLIError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return config_from_dict(d, cfg) if d else cfg


def _default_data(arg) -> Path:
    if arg:
        return Path(arg)
    from .io import data_root

    return data_root() / "kitti"


# ------------------------------------------------------------------------------------ commands
def cmd_synth(args) -> int:
    from .synth import SynthConfig, write_dataset

    if args.n < 1:
        raise CLIError("--n must be >= 1")
    out = Path(args.output)
    split = out / "training"
    targets = [split / "velodyne" / f"{i:06d}.bin" for i in range(args.start, args.start + args.n)]
    _refuse_existing(targets + [out / "synth.json"], args.force)
    write_dataset(out, args.n, seed=args.seed, cfg=SynthConfig(version=args.scene_version), start=args.start,
                  progress=not args.quiet)
    print(f"wrote {args.n} frames to {split}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .train import train

    cfg = _apply_overrides(load_config(args.config), args.set)
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    if args.batch_size is not None:
        cfg.train.batch_size = args.batch_size
    data = _default_data(args.data)
    out = Path(args.output)
    if not args.resume:
        _refuse_existing([out / "model.safetensors", out / "last.pt"], args.force)
    final = train(cfg, data, out, resume=args.resume, device=_device(args.device), max_steps=args.max_steps,
                  ckpt_steps=args.ckpt_steps, progress=not args.quiet, threads=args.threads)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"weights: {final}")
    return 0


def cmd_eval(args) -> int:
    import torch

    from .checkpoint import load_model
    from .inference import evaluate
    from .io import atomic_write_text
    from .kitti_eval import format_table, to_json

    if args.threads:
        torch.set_num_threads(args.threads)
    json_path = Path(args.json)
    _refuse_existing([json_path], args.force)
    if args.results and Path(args.results).is_dir():
        _refuse_existing(sorted(Path(args.results).glob("*.txt")), args.force)
    device = _device(args.device)
    model, cfg, meta = load_model(args.checkpoint, device)
    if args.set:
        cfg = _apply_overrides(cfg, args.set)
    ids = None
    if args.ids:
        ids = [s.strip() for s in Path(args.ids).read_text().split()] if Path(args.ids).is_file() \
            else args.ids.split(",")
    res, _ = evaluate(model, _default_data(args.data), cfg, device, ids=ids, batch_size=args.batch_size,
                      result_dir=args.results, progress=not args.quiet)
    print(format_table(res, "R40"))
    print()
    print(format_table(res, "R11"))
    payload = json.loads(to_json(res))
    payload = {"checkpoint": str(args.checkpoint or "shipped"), "data": str(_default_data(args.data)), "ap": payload}
    atomic_write_text(json_path, json.dumps(payload, indent=2))
    print(f"wrote {json_path}")
    return 0


def _busy(load: float, cpus: int) -> bool:
    """Whether other processes already occupy the cores (1-minute load average above ``cpus - 1``)."""
    return load > max(cpus - 1, 0.5)


def _passive_omp_wait() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` for one-scan inference on a busy machine, unless the user set it.

    torch's OpenMP threads spin at every barrier by default. On an idle machine that is the fast
    choice (2-thread detection: 56 ms per scan spinning vs 112 ms passive, six real KITTI frames); on a
    machine whose cores are already taken a spinning thread waits for a partner that is not scheduled,
    and 2-thread detection took 2.4-15 s per scan instead of 0.86 s passive (load average 5-13,
    benchmarks/results/pointcloud_detect.md). So: passive only when the 1-minute load average says
    the cores are busy at start. Only effective before torch (and its OpenMP runtime) is loaded,
    hence here and not in a library module.
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average (e.g. Windows): the safe choice
        load = float("inf")
    if _busy(load, os.cpu_count() or 1):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def cmd_detect(args) -> int:
    _passive_omp_wait()
    scan = Path(args.scan)
    stem = scan.name.split(".")[0]
    out = Path(args.output)
    txt, png, js = out / f"{stem}.txt", out / f"{stem}_bev.png", out / f"{stem}.json"
    _refuse_existing([txt, png, js], args.force)
    import time

    t_start = time.perf_counter()
    # validate the inputs before the heavy imports (torch, the model)
    from .io import read_calib, read_points

    def read():
        pts = read_points(scan)
        calib_path = args.calib
        if calib_path is None:
            sibling = scan.parent.parent / "calib" / f"{stem}.txt"
            calib_path = sibling if sibling.is_file() else None
        return pts, (read_calib(calib_path) if calib_path is not None else None)

    points, calib = read()

    import numpy as np
    import torch

    from .checkpoint import load_model
    from .inference import StageTimer, default_calibration, detect_points, predictions_to_kitti
    from .io import atomic_write_text, read_label
    from .viz import bev_png, render_open3d

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    model, cfg, _ = load_model(args.checkpoint, device)
    timer = None
    if args.profile:
        # one untimed pass first: numba's compiled-kernel loading and torch's first-call allocations are
        # one-off start-up costs, reported apart from the per-scan stages
        t_warm = time.perf_counter()
        detect_points(model, cfg, points, calib, (375, 1242), device)
        warm = time.perf_counter() - t_warm
        timer = StageTimer()
        with timer("read"):
            points, calib = read()
    if args.score_thresh is not None:
        cfg.test.score_thresh = args.score_thresh
    image_shape = (375, 1242)
    img = scan.parent.parent / "image_2" / f"{stem}.png"
    if img.is_file():
        from .io import KittiFrames

        image_shape = KittiFrames(scan.parent.parent).image_shape(stem)
    det = detect_points(model, cfg, points, calib, image_shape, device, timer=timer)
    t_lines = time.perf_counter()
    used_calib = calib if calib is not None else default_calibration()
    objs = predictions_to_kitti(det, used_calib, image_shape)
    lines = objs.to_lines()
    if timer is not None:
        timer.wall["lines"], timer.cpu["lines"] = time.perf_counter() - t_lines, 0.0
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(txt, "\n".join(lines) + ("\n" if lines else ""))
    atomic_write_text(js, json.dumps({"scan": str(scan), "frame": "lidar", "box": "x y z dx dy dz heading",
                                      "calibration": "file" if calib is not None else "default (none given)",
                                      "detections": [{"name": str(n), "score": round(float(s), 4),
                                                      "box": [round(float(v), 3) for v in b]}
                                                     for n, s, b in zip(det["names"], det["scores"], det["boxes"])]},
                                     indent=2))
    gt_boxes = gt_names = None
    label_path = Path(args.labels) if args.labels else scan.parent.parent / "label_2" / f"{stem}.txt"
    if label_path.is_file() and calib is not None:
        gt = read_label(label_path)
        gt = gt.select(np.isin(gt.name, list(cfg.data.classes)))
        gt_boxes, gt_names = gt.boxes_lidar(calib), gt.name
    pr = cfg.data.point_cloud_range
    t_png = time.perf_counter()
    bev_png(png, points, det["boxes"], det["names"], det["scores"], gt_boxes, gt_names,
            xlim=(pr[0], pr[3]), ylim=(pr[1], pr[4]), title=f"{scan.name}: {len(lines)} detections")
    for line in lines:
        print(line)
    print(f"wrote {txt}, {png}, {js}", file=sys.stderr)
    if timer is not None:
        timer.wall["png"], timer.cpu["png"] = time.perf_counter() - t_png, 0.0
        print(f"\nprofile of {scan.name} ({torch.get_num_threads()} torch threads, device {device}; "
              f"wall = perf_counter, CPU = process time; 'lines' and 'png' wall only):", file=sys.stderr)
        print(timer.table(exclude=("png",)), file=sys.stderr)
        print(f"start-up, not in the total: {t_warm - t_start:.2f} s to import and load the model, {warm:.2f} s "
              f"for an untimed first pass (loads numba's cached kernels, allocator warm-up)", file=sys.stderr)
    if args.render:
        ok = render_open3d(out / f"{stem}_3d.png", points, det["boxes"], gt_boxes)
        print(f"open3d render: {'wrote ' + str(out / (stem + '_3d.png')) if ok else 'skipped (no Vulkan driver)'}",
              file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffnet-3d", description="FFNet-3D: LiDAR 3D detection (KITTI format).")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic KITTI-format dataset (open3d ray casting)")
    s.add_argument("--n", type=int, default=200, help="number of frames")
    s.add_argument("-o", "--output", required=True, help="output directory (gets training/...)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--start", type=int, default=0, help="index of the first frame (frames are seeded by index)")
    s.add_argument("--scene-version", type=int, choices=(1, 2), default=2,
                   help="scene model: 2 (default) closer to real HDL-64E scans; 1 the original generator, which "
                        "the shipped checkpoint was trained on and the README's seed-1000/2000 AP tables use")
    s.add_argument("--force", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_synth)

    t = sub.add_parser("train", help="train a detector")
    t.add_argument("--config", required=True, help="preset name (kitti, synth_cpu, second_synth_cpu, tiny, ...) "
                                                   "or YAML file")
    t.add_argument("--data", help="KITTI-layout directory (default: $FFNET_DATA_DIR/pointcloud/kitti)")
    t.add_argument("-o", "--output", default="runs/ffnet3d", help="run directory")
    t.add_argument("--resume", help="training state to continue from (e.g. RUN/last.pt)")
    t.add_argument("--device", default="auto")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--ckpt-steps", type=int, default=0, help="also checkpoint every N steps")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. train.lr=1e-3")
    t.add_argument("--force", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="KITTI AP (R40 and R11, BEV and 3D) of a checkpoint")
    e.add_argument("--checkpoint", help="weights (default: the checkpoint shipped in the package)")
    e.add_argument("--data", help="labelled KITTI-layout directory (default: $FFNET_DATA_DIR/pointcloud/kitti)")
    e.add_argument("--ids", help="comma-separated frame ids or a file listing them")
    e.add_argument("--json", default="ffnet3d_eval.json", help="where to write the AP JSON")
    e.add_argument("--results", help="also write KITTI result files here (the AP is computed from exactly these "
                                     "lines)")
    e.add_argument("--batch-size", type=int, default=4)
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int)
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="override e.g. test.score_thresh=0.05")
    e.add_argument("--force", action="store_true")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("detect", help="detect objects in one scan: KITTI result lines + BEV PNG")
    d.add_argument("scan", help=".bin (KITTI), .pcd.bin (nuScenes), .pcd or .ply")
    d.add_argument("--calib", help="KITTI calib file (default: ../calib/<id>.txt next to the scan, if present)")
    d.add_argument("--labels", help="ground-truth label file to draw (default: ../label_2/<id>.txt if present)")
    d.add_argument("--checkpoint", help="weights (default: the shipped checkpoint)")
    d.add_argument("-o", "--output", default="ffnet3d_detect", help="output directory")
    d.add_argument("--score-thresh", type=float)
    d.add_argument("--render", action="store_true", help="also an open3d offscreen render (needs Vulkan)")
    d.add_argument("--device", default="auto")
    d.add_argument("--threads", type=int)
    d.add_argument("--profile", action="store_true",
                   help="print a per-stage timing table (read, crop, voxelize, encoder, BEV, neck, head, decode, "
                        "NMS, KITTI lines; PNG listed apart) to stderr, after one untimed warm-up pass")
    d.add_argument("--force", action="store_true")
    d.set_defaults(func=cmd_detect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .io import PointCloudError

    try:
        return args.func(args)
    except (CLIError, PointCloudError, ValueError, FileNotFoundError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"ffnet-3d: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
