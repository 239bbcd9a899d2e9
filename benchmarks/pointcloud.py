"""FFNet-3D benchmark: sparse backbone latency / memory on real KITTI frames, and AP vs a SECOND baseline.

(a) Backbone forward latency on the six real KITTI frames ($FFNET_DATA_DIR), standard KITTI grid
    (0.05 x 0.05 x 0.1 m, camera field of view), same voxels for every backbone: our sparse FFNet
    encoder (``kitti`` preset, re-parameterized, eval) vs a SECOND ``VoxelBackBone8x`` of similar
    parameter count (``second_kitti``), on the pure-PyTorch implementation (its depthwise convs on
    the fused numba kernel; ``torch-ref``: the same with ``FFNET_SPARSE_FUSED=0``, the plain-torch
    reference kernel) and on spconv. One child process per (implementation, thread count) holds all
    backbones and runs them interleaved frame by frame (the machine is shared: load hits all alike);
    wall and CPU (process) time are both reported, and ratios to SECOND. ``--memory`` adds one child
    per backbone for its own peak RSS. Untrained weights: latency does not depend on them (BN
    statistics are set to non-trivial values before fusing).
(c) The whole ``ffnet-3d detect`` pipeline on the six real frames with the shipped checkpoint:
    read -> crop -> voxelize -> encoder -> BEV -> neck -> head -> decode -> NMS -> KITTI lines (the
    PNG and interpreter start-up excluded), per-stage medians, the median end-to-end time per scan,
    and the throughput of batches of 8 scans (scans / s), at each thread count; with
    torch's OpenMP wait policy chosen as ``ffnet-3d detect`` chooses it (passive only when the load
    average says the cores are busy, unless ``OMP_WAIT_POLICY`` is set); the policy is recorded.
(b) Car / Pedestrian / Cyclist AP (R40, BEV and 3D, easy / moderate / hard) on seeded synthetic
    validation sets (``ffnet-3d synth --seed S --n 100``, seeds 1000 and 2000 by default, generated if
    missing; per seed and the mean), scored from the written KITTI result lines, for our detector
    and the SECOND-style baseline, both trained with the same recipe and step budget
    (``--train`` trains them here; otherwise the given run directories / checkpoints are evaluated).

Usage (the README's numbers):
    nice -n 10 uv run python benchmarks/pointcloud.py --threads 1 2 --skip-ap          # (a) + (c)
    nice -n 10 uv run python benchmarks/pointcloud.py --threads 1 --skip-latency --skip-detect \\
        --ours runs/ffnet3d_synth_cpu/model.safetensors --baseline runs/second_synth_cpu/model.safetensors \\
        --val-seeds 1000 2000 --out benchmarks/results/pointcloud_ap.json

Writes benchmarks/results/pointcloud.json and benchmarks/results/pointcloud.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


# ------------------------------------------------------------------------------ (a) latency child
def _count_macs(enc, run, inputs) -> float:
    """Multiply-accumulates of one forward (mean over frames), from the kernel maps actually used."""
    import torch
    from ffnet.sparse import SparseConv3d, SparseLinear, SubMConv3d

    total = [0]

    def hook(mod, inp, out):
        x = inp[0]
        if isinstance(mod, SparseLinear):
            total[0] += x.features.shape[0] * mod.in_features * mod.out_features
            return
        ks = mod.kernel_size
        if isinstance(mod, SubMConv3d):
            nmap = x.cache.get(("torch", "subm-nbr", ks))  # the fused depthwise kernel's map (centre included)
            kmap = x.cache.get(("torch", "subm", ks))
            if nmap is not None:
                pairs = nmap.num_pairs
            else:
                pairs = 0 if kmap is None else kmap.num_pairs
                pairs += x.features.shape[0] if kmap is None or kmap.identity_offset is not None else 0
        else:
            kmap = x.cache.get(("torch", "conv", ks, mod.stride, mod.padding))
            pairs = kmap[0].num_pairs if kmap is not None else 0
        total[0] += pairs * (mod.in_channels // mod.groups) * mod.out_channels

    handles = [m.register_forward_hook(hook) for m in enc.modules()
               if isinstance(m, (SubMConv3d, SparseConv3d, SparseLinear))]
    with torch.no_grad():
        for _, feats, coords, _n in inputs:
            run(feats, coords)
    for h in handles:
        h.remove()
    return total[0] / len(inputs)


def _build_encoder(backbone: str, impl: str, device: str):
    import torch
    from ffnet import reparameterize_model
    from ffnet_3d.config import get_preset
    from ffnet_3d.model import Detector

    preset = "second_kitti" if backbone == "second" else "kitti"
    cfg = get_preset(preset)
    if backbone == "ffnet3d-k3335":  # smaller depthwise kernels (the CPU recipe's choice)
        cfg.model.kernel_sizes = (3, 3, 3, 5)
    cfg.model.sparse_impl = "torch" if impl == "torch-ref" else impl
    torch.manual_seed(0)
    det = Detector(cfg)
    enc = det.encoder
    # non-trivial BN statistics, then fuse (the deploy form of FFNet)
    for mod in enc.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    enc.eval()
    reparameterize_model(enc)
    return det, enc.to(device), cfg


def _child_latency(backbones: list[str], impl: str, rounds: int, threads: int, device: str) -> list[dict]:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    if impl == "torch-ref":
        os.environ["FFNET_SPARSE_FUSED"] = "0"
    from ffnet.sparse import SparseTensor
    from ffnet_3d.data import prepare_points
    from ffnet_3d.io import KittiFrames, data_root
    from ffnet_3d.model import count_parameters
    from ffnet_3d.voxelize import voxelize_numba

    models = {b: _build_encoder(b, impl, device) for b in backbones}
    frames = KittiFrames(data_root() / "kitti")
    cfg = next(iter(models.values()))[2]
    d = cfg.data
    inputs = []
    for fid in frames.ids:
        pts = prepare_points(frames.points(fid), cfg, frames.calib(fid), frames.image_shape(fid))
        vox, coords, num, _ = voxelize_numba(pts, d.voxel_size, d.point_cloud_range, d.max_points_per_voxel,
                                             d.max_voxels_test)
        feats = (vox.sum(1) / np.maximum(num, 1)[:, None]).astype(np.float32)
        c = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), torch.from_numpy(coords)], 1)
        inputs.append((fid, torch.from_numpy(feats).to(device), c.to(device), len(coords)))

    def runner(det, enc):
        def run(feats, coords):
            x = SparseTensor((feats - det.feat_center.to(device)) / det.feat_scale.to(device), coords,
                             det.sparse_shape, 1)
            out = enc(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        return run

    runs = {b: runner(det, enc) for b, (det, enc, _) in models.items()}
    with torch.no_grad():
        t0 = time.perf_counter()
        for run in runs.values():
            run(*inputs[0][1:3])  # warm-up (numba kernel loading / spconv import / allocator)
        warmup_s = time.perf_counter() - t0
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        wall = {b: {fid: [] for fid, *_ in inputs} for b in runs}
        cpu = {b: {fid: [] for fid, *_ in inputs} for b in runs}
        shapes = {}
        for _ in range(rounds):
            for fid, feats, coords, _n in inputs:
                for b, run in runs.items():  # interleaved: every backbone sees the same load
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = run(feats, coords)
                    wall[b][fid].append(time.perf_counter() - t0)
                    cpu[b][fid].append(time.process_time() - c0)
                    shapes[b] = list(out.shape[1:])
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = []
    for b, (_det, enc, _) in models.items():
        macs = _count_macs(enc, runs[b], inputs) if impl != "spconv" else None
        lat = [min(v) for v in wall[b].values()]  # best of rounds per frame (least disturbed by other load)
        cpu_t = [min(v) for v in cpu[b].values()]
        row = {
            "backbone": b, "impl": impl, "device": device, "threads": threads,
            "params": count_parameters(enc), "gmacs": None if macs is None else round(macs / 1e9, 2),
            "bev_shape": shapes[b], "voxels_per_frame": [n for *_, n in inputs],
            "latency_ms_per_frame": {fid: round(1000 * t, 1) for fid, t in zip(wall[b], lat)},
            "latency_ms_mean": round(1000 * statistics.mean(lat), 1),
            "cpu_ms_mean": round(1000 * statistics.mean(cpu_t), 1),
            "warmup_s_all_backbones": round(warmup_s, 2),
        }
        if len(models) == 1:
            row["peak_mem_mb"] = (round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if device.startswith("cuda")
                                  else round(max(peak_rss - base_rss, 0) / 1024, 1))
        rows.append(row)
    return rows


BACKBONES = ("ffnet3d", "ffnet3d-k3335", "second")
LATENCY_IMPLS = ("torch", "torch-ref", "spconv")


def _run_child(args: list[str]) -> tuple[list | dict | None, str]:
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if res.returncode != 0:
        return None, (res.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(res.stdout.strip().splitlines()[-1]), ""


def latency_table(rounds: int, threads: int, device: str, memory: bool = False) -> list[dict]:
    rows = []
    for impl in LATENCY_IMPLS:
        out, err = _run_child(["--child", ",".join(BACKBONES), impl, "--rounds", str(rounds), "--threads",
                               str(threads), "--device", device])
        if out is None:
            rows += [{"backbone": b, "impl": impl, "threads": threads, "error": err} for b in BACKBONES]
            continue
        if memory:
            for r in out:
                mem, _ = _run_child(["--child", r["backbone"], impl, "--rounds", "1", "--threads", str(threads),
                                     "--device", device])
                r["peak_mem_mb"] = mem[0].get("peak_mem_mb") if mem else None
        rows += out
        for r in out:
            print(f"  {threads} thr {r['backbone']:14s} {impl:9s} {r['latency_ms_mean']:8.1f} ms wall "
                  f"{r['cpu_ms_mean']:8.1f} ms CPU", flush=True)
    return rows


# ------------------------------------------------------------------------------- (c) detect pipeline
def _child_detect(threads: int, rounds: int, checkpoint: str | None, batch: int) -> dict:
    from ffnet_3d.cli import _passive_omp_wait

    _passive_omp_wait()  # as `ffnet-3d detect` does (before torch loads its OpenMP runtime)
    import torch

    torch.set_num_threads(threads)
    from ffnet_3d.checkpoint import load_model
    from ffnet_3d.inference import (
        DETECT_STAGES,
        StageTimer,
        detect_batch,
        detect_points,
        predictions_to_kitti,
    )
    from ffnet_3d.io import KittiFrames, data_root, read_calib, read_points

    frames = KittiFrames(data_root() / "kitti")
    t0 = time.perf_counter()
    model, cfg, meta = load_model(checkpoint, "cpu")
    load_s = time.perf_counter() - t0

    def one_scan(fid, timer):
        with timer("read"):
            pts = read_points(frames.velodyne(fid))
            calib = read_calib(frames.calib_path(fid))
            shape = frames.image_shape(fid)
        det = detect_points(model, cfg, pts, calib, shape, "cpu", timer=timer)
        with timer("lines"):
            lines = predictions_to_kitti(det, calib, shape).to_lines()
        return lines

    t0 = time.perf_counter()
    one_scan(frames.ids[0], StageTimer())  # start-up: numba kernel loading, first-call allocations
    warm_s = time.perf_counter() - t0
    per_frame: dict[str, list[StageTimer]] = {fid: [] for fid in frames.ids}
    n_dets = {}
    for _ in range(rounds):
        for fid in frames.ids:
            timer = StageTimer()
            n_dets[fid] = len(one_scan(fid, timer))
            per_frame[fid].append(timer)
    best = {fid: min(ts, key=lambda t: t.total()[0]) for fid, ts in per_frame.items()}  # best round per frame
    totals = {fid: t.total() for fid, t in best.items()}
    stages = {s: {"wall_ms_median": round(1000 * statistics.median(t.wall.get(s, 0.0) for t in best.values()), 1),
                  "cpu_ms_median": round(1000 * statistics.median(t.cpu.get(s, 0.0) for t in best.values()), 1)}
              for s in DETECT_STAGES}
    # batch of `batch` scans (the six frames, cycled), read + crop + voxelize + one forward + decode
    ids = [frames.ids[i % len(frames.ids)] for i in range(batch)]
    batch_times = []
    for _ in range(max(2, rounds)):
        t0 = time.perf_counter()
        scans = [(read_points(frames.velodyne(f)), read_calib(frames.calib_path(f)), frames.image_shape(f))
                 for f in ids]
        dets = detect_batch(model, cfg, scans, "cpu")
        for (_, calib, shape), det in zip(scans, dets):
            predictions_to_kitti(det, calib, shape).to_lines()
        batch_times.append(time.perf_counter() - t0)
    return {
        "threads": threads, "checkpoint": checkpoint or "shipped", "recipe_steps": meta.get("steps"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (spinning)"),
        "model_load_s": round(load_s, 2), "first_pass_s": round(warm_s, 2),
        "per_frame_ms": {fid: round(1000 * w, 1) for fid, (w, _) in totals.items()},
        "per_frame_cpu_ms": {fid: round(1000 * c, 1) for fid, (_, c) in totals.items()},
        "detections": n_dets,
        "median_ms": round(1000 * statistics.median(w for w, _ in totals.values()), 1),
        "median_cpu_ms": round(1000 * statistics.median(c for _, c in totals.values()), 1),
        "stages": stages,
        "batch": batch, "batch_s_best": round(min(batch_times), 3),
        "batch_scans_per_s": round(batch / min(batch_times), 2),
        "single_scans_per_s": round(1000 / statistics.mean(1000 * w for w, _ in totals.values()), 2),
    }


def detect_table(rounds: int, threads: int, checkpoint: str | None, batch: int) -> dict:
    args = ["--detect-child", str(threads), "--rounds", str(rounds), "--batch", str(batch)]
    if checkpoint:
        args += ["--detect-checkpoint", checkpoint]
    out, err = _run_child(args)
    if out is None:
        return {"threads": threads, "error": err}
    print(f"  detect, {threads} thr: median {out['median_ms']} ms / scan (CPU {out['median_cpu_ms']} ms), "
          f"batch of {batch}: {out['batch_scans_per_s']} scans/s", flush=True)
    return out


# ------------------------------------------------------------------------------------------ (b) AP
def ap_table(detectors: dict[str, Path], val_dirs: dict[int, Path], threads: int, device: str) -> dict:
    """AP of each checkpoint on each seeded validation set, plus the mean over the sets.

    ``evaluate`` scores the detections exactly as their KITTI result lines read (2 decimals), so the
    numbers are what the devkit would compute from the result files.
    """
    import torch

    torch.set_num_threads(threads)
    from ffnet_3d.checkpoint import load_model
    from ffnet_3d.inference import evaluate
    from ffnet_3d.kitti_eval import summary

    out = {}
    for name, path in detectors.items():
        model, cfg, meta = load_model(path, device)
        per_seed, eval_s = {}, {}
        for seed, val_dir in val_dirs.items():
            t0 = time.perf_counter()
            res, _ = evaluate(model, val_dir, cfg, device, progress=False)
            eval_s[seed] = round(time.perf_counter() - t0, 1)
            per_seed[seed] = {"R40": summary(res, "R40"), "R11": summary(res, "R11")}
            print(f"  {name} seed {seed}: {per_seed[seed]['R40']}", flush=True)
        mean = {key: {cls: {m: [None if any(per_seed[s][key][cls][m][i] is None for s in per_seed)
                                else round(statistics.mean(per_seed[s][key][cls][m][i] for s in per_seed), 2)
                                for i in range(3)] for m in metrics}
                          for cls, metrics in next(iter(per_seed.values()))[key].items()}
                for key in ("R40", "R11")}
        out[name] = {"checkpoint": str(path), "recipe": meta, "params": sum(p.numel() for p in model.parameters()),
                     "eval_s": eval_s, "seeds": {str(s): v for s, v in per_seed.items()}, **mean}
    return out


def train_both(train_dir: Path, runs: Path, threads: int) -> tuple[Path, Path]:
    from ffnet_3d.config import get_preset
    from ffnet_3d.train import train

    paths = []
    for preset, name in (("synth_cpu", "ffnet3d_synth_cpu"), ("second_synth_cpu", "second_synth_cpu")):
        paths.append(train(get_preset(preset), train_dir, runs / name, threads=threads, progress=False))
    return paths[0], paths[1]


def ensure_synth(path: Path, n: int, seed: int) -> Path:
    from ffnet_3d.synth import write_dataset

    if not (path / "training" / "velodyne" / f"{n - 1:06d}.bin").is_file():
        write_dataset(path, n, seed=seed, progress=False)
    return path


# ---------------------------------------------------------------------------------------- report
def _fmt(v):
    return "-" if v is None else f"{v:.2f}"


def markdown(res: dict) -> str:
    lines = ["# FFNet-3D benchmark", "", f"Command: `{res['command']}`", "",
             f"Machine: {res['machine']}; torch threads {res['threads']}; device {res['device']}. "
             f"Load average (1/5/15 min) at start {res.get('load_avg_at_start')}, at end {res.get('load_avg_at_end')}"
             f"{': the machine was shared and loaded, wall times are inflated; compare the ratios and CPU times' if (res.get('load_avg_at_start') or [0])[0] > 1.5 else ''}.", ""]
    if res.get("latency"):
        lines += ["## (a) Sparse backbone forward on the six real KITTI frames (standard grid, FOV points)", "",
                  "Backbones interleaved frame by frame inside one process per (implementation, threads); best of "
                  "rounds per frame, mean over frames. `torch` = pure-PyTorch implementation with the fused numba "
                  "depthwise kernel; `torch-ref` = the same with `FFNET_SPARSE_FUSED=0` (plain-torch reference "
                  "kernel); `spconv` = spconv 2.3.8 native CPU kernels (its depthwise convs use the same fused "
                  "kernel, since spconv has none).", "",
                  "| threads | backbone | sparse impl | params (fused) | GMACs / frame | wall (ms) | CPU (ms) | "
                  "wall / SECOND | CPU / SECOND | peak mem (MB) |",
                  "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        ok = {(r["threads"], r["backbone"], r["impl"]): r for r in res["latency"] if "error" not in r}
        for r in res["latency"]:
            if "error" in r:
                lines.append(f"| {r['threads']} | {r['backbone']} | {r['impl']} | error: {r['error']} |"
                             " - | - | - | - | - | - |")
                continue
            gm = "-" if r.get("gmacs") is None else r["gmacs"]
            ref = ok.get((r["threads"], "second", r["impl"]))
            rw = f"{r['latency_ms_mean'] / ref['latency_ms_mean']:.2f}x" if ref else "-"
            rc = f"{r['cpu_ms_mean'] / ref['cpu_ms_mean']:.2f}x" if ref else "-"
            lines.append(f"| {r['threads']} | {r['backbone']} | {r['impl']} | {r['params']:,} | {gm} | "
                         f"{r['latency_ms_mean']} | {r['cpu_ms_mean']} | {rw} | {rc} | {r.get('peak_mem_mb', '-')} |")
        lines.append("")
        first = next(iter(ok.values()), None)
        if first:
            lines.append("Voxels per frame: " + ", ".join(str(v) for v in first["voxels_per_frame"]))
            lines.append("")
    if res.get("detect"):
        lines += ["## (c) `ffnet-3d detect` pipeline on the six real KITTI frames (shipped checkpoint)", "",
                  "Per scan: read -> crop -> voxelize -> encoder -> BEV -> neck -> head -> decode -> NMS -> KITTI "
                  "lines, in one process after one untimed warm-up pass (numba kernel loading); excludes interpreter "
                  "start-up, imports, model loading and the PNG. Best of rounds per frame; medians over the six "
                  "frames.", "",
                  "| stage | " + " | ".join(f"{d['threads']} thr wall (ms) | {d['threads']} thr CPU (ms)"
                                           for d in res["detect"] if "error" not in d) + " |",
                  "|---|" + "---:|---:|" * sum("error" not in d for d in res["detect"])]
        good = [d for d in res["detect"] if "error" not in d]
        if good:
            for stage in good[0]["stages"]:
                lines.append(f"| {stage} | " + " | ".join(f"{d['stages'][stage]['wall_ms_median']} | "
                                                           f"{d['stages'][stage]['cpu_ms_median']}" for d in good) + " |")
            lines.append("| **median end-to-end per scan** | " + " | ".join(
                f"**{d['median_ms']}** | {d['median_cpu_ms']}" for d in good) + " |")
            lines.append("")
            lines += ["| threads | median ms / scan | per-frame ms | scans / s one by one | batch | scans / s in batches "
                      "| model load (s) | first pass (s) | OMP_WAIT_POLICY |", "|---:|---:|---|---:|---:|---:|---:|---:|---|"]
            for d in good:
                lines.append(f"| {d['threads']} | {d['median_ms']} | {', '.join(str(v) for v in d['per_frame_ms'].values())} "
                             f"| {d['single_scans_per_s']} | {d['batch']} | {d['batch_scans_per_s']} | "
                             f"{d['model_load_s']} | {d['first_pass_s']} | {d.get('omp_wait_policy', 'PASSIVE')} |")
        for d in res["detect"]:
            if "error" in d:
                lines.append(f"\n{d['threads']} threads: error {d['error']}")
        lines.append("")
    if res.get("ap"):
        seeds = list(next(iter(res["ap"].values())).get("seeds", {}))
        lines += [f"## (b) AP R40 on seeded synthetic validation sets (100 frames each, seeds {', '.join(seeds)})", "",
                  "Scored from the KITTI result lines `ffnet-3d eval` writes (2 decimals). Each cell: mean over the "
                  "seeds, then each seed's value in brackets.", "",
                  "| detector | class | BEV E / M / H | 3D E / M / H |", "|---|---|---|---|"]

        def cell(r, cls, m):
            out = []
            for i in range(3):
                each = " / ".join(_fmt(r["seeds"][s]["R40"][cls][m][i]) for s in seeds)
                out.append(f"{_fmt(r['R40'][cls][m][i])} ({each})" if len(seeds) > 1 else _fmt(r["R40"][cls][m][i]))
            return " · ".join(out)

        for name, r in res["ap"].items():
            for cls in r["R40"]:
                lines.append(f"| {name} | {cls} | {cell(r, cls, 'bev')} | {cell(r, cls, '3d')} |")
        lines += ["", "| detector | checkpoint | params | training steps | training wall time (s) | eval wall (s) per set |",
                  "|---|---|---:|---:|---:|---|"]
        for name, r in res["ap"].items():
            lines.append(f"| {name} | {r['checkpoint']} | {r['params']:,} | {r['recipe'].get('steps')} | "
                         f"{r['recipe'].get('wall_time_s')} | {', '.join(str(v) for v in r['eval_s'].values())} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=2, metavar=("BACKBONES", "IMPL"), help=argparse.SUPPRESS)
    p.add_argument("--detect-child", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    p.add_argument("--detect-checkpoint", help="checkpoint for (c) (default: the shipped one)")
    p.add_argument("--batch", type=int, default=8, help="scans per batch for the (c) throughput")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="one or more torch thread counts")
    p.add_argument("--memory", action="store_true", help="(a): also one child per backbone for its peak memory")
    p.add_argument("--skip-detect", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-ap", action="store_true")
    p.add_argument("--ours", type=Path, help="our trained checkpoint")
    p.add_argument("--baseline", type=Path, help="the SECOND-style checkpoint trained with the same budget")
    p.add_argument("--train", action="store_true", help="train both detectors here first (hours on CPU)")
    p.add_argument("--train-dir", type=Path, default=Path("runs/synth_train"))
    p.add_argument("--val-dir", type=Path, default=Path("runs/synth_val"),
                   help="seed-1000 validation set; seed S goes to <val-dir>_sS (generated if missing)")
    p.add_argument("--val-seeds", type=int, nargs="+", default=[1000, 2000],
                   help="seeds of the 100-frame synthetic validation sets (AP per seed and mean)")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--out", type=Path, default=RESULTS / "pointcloud.json")
    p.add_argument("--wait", type=float, default=0.0,
                   help="wait up to this many seconds for --ours / --baseline to appear (trainings still running)")
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(_child_latency(args.child[0].split(","), args.child[1], args.rounds, args.threads[0],
                                        args.device)))
        return 0
    if args.detect_child is not None:
        print(json.dumps(_child_detect(args.detect_child, args.rounds, args.detect_checkpoint, args.batch)))
        return 0

    res = {"command": "python benchmarks/pointcloud.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
           "threads": args.threads, "device": args.device,
           "load_avg_at_start": [round(v, 2) for v in os.getloadavg()]}
    t_run = time.perf_counter()
    if not args.skip_latency:
        print("(a) backbone latency on the real KITTI frames", flush=True)
        res["latency"] = [r for t in args.threads for r in latency_table(args.rounds, t, args.device, args.memory)]
    if not args.skip_detect:
        print("(c) detect pipeline on the real KITTI frames", flush=True)
        res["detect"] = [detect_table(args.rounds, t, args.detect_checkpoint, args.batch) for t in args.threads]
    if not args.skip_ap:
        if args.train:
            ensure_synth(args.train_dir, 400, 0)
            args.ours, args.baseline = train_both(args.train_dir, args.runs, args.threads[0])
        if not args.ours:
            p.error("(b) needs --ours (and usually --baseline) checkpoints (or --train, or --skip-ap)")
        detectors = {"ffnet3d": args.ours, **({"second": args.baseline} if args.baseline else {})}
        deadline = time.time() + args.wait
        while not all(v.is_file() for v in detectors.values()) and time.time() < deadline:
            time.sleep(30)
        print("(b) AP on the seeded synthetic validation sets", flush=True)
        val_dirs = {s: ensure_synth(args.val_dir if s == 1000 else args.val_dir.with_name(f"{args.val_dir.name}_s{s}"),
                                    100, s) for s in args.val_seeds}
        res["ap"] = ap_table(detectors, val_dirs, args.threads[0], args.device)
    res["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    res["wall_s"] = round(time.perf_counter() - t_run, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, args.out)
    md = args.out.with_suffix(".md")
    tmp = md.with_suffix(".tmp")
    tmp.write_text(markdown(res))
    os.replace(tmp, md)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
