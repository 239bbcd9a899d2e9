"""Image-backbone CPU latency: FFNet-1/-2 (fused and unfused) vs timm convnext_tiny and fastvit_sa12.

Batch 1 at 256x256, channels_last, eval, torch.inference_mode, random weights; median of interleaved
rounds (all models timed round-robin in one run). fastvit_sa12 is timed re-parameterized too (its
deploy form), so FFNet's fused form meets a fused peer.

    uv run python benchmarks/core_latency.py [--rounds 30] [--threads N] [--name STEM]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ffnet  # noqa: E402
from _common import environment, interleaved_medians, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--name", default="core_latency", help="results file stem in benchmarks/results/")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res = args.img_size
    x = torch.randn(1, 3, res, res).to(memory_format=torch.channels_last)

    models = {}
    for name in ("ffnet_1", "ffnet_2"):
        m = ffnet.create_model(name).eval()
        models[f"{name} (unfused)"] = m
        models[f"{name} (fused)"] = ffnet.reparameterize_model(copy.deepcopy(m))
    models["convnext_tiny"] = timm.create_model("convnext_tiny").eval()
    fv = timm.create_model("fastvit_sa12").eval()
    models["fastvit_sa12 (fused)"] = timm.utils.reparameterize_model(copy.deepcopy(fv))
    models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}

    def runner(m):
        def run():
            with torch.inference_mode():
                m(x)
        return run

    timings = interleaved_medians({k: runner(m) for k, m in models.items()}, rounds=args.rounds)
    rows = []
    ref = timings["convnext_tiny"]["median_s"]
    for k, m in models.items():
        p = ffnet.profile(m, (1, 3, res, res))
        rows.append(dict(model=k, params_m=p["params"] / 1e6, gmacs=p["macs"] / 1e9,
                         median_ms=timings[k]["median_s"] * 1e3, min_ms=timings[k]["min_s"] * 1e3,
                         speed_vs_convnext_tiny=ref / timings[k]["median_s"]))
    fusion = {n: timings[f"{n} (unfused)"]["median_s"] / timings[f"{n} (fused)"]["median_s"]
              for n in ("ffnet_1", "ffnet_2")}
    env = environment()
    lines = [f"CPU latency, batch 1, {res}x{res}, channels_last, {env['threads']} threads, median of "
             f"{args.rounds} interleaved rounds (torch {env['torch']}, {env['date']})", "",
             "| model | params (M) | GMACs | median ms | speed vs convnext_tiny |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['params_m']:.2f} | {r['gmacs']:.2f} | {r['median_ms']:.1f} | "
              f"{r['speed_vs_convnext_tiny']:.2f}x |" for r in rows]
    lines += ["", "Fusion speed-up (unfused / fused median): " +
              ", ".join(f"{k} {v:.2f}x" for k, v in fusion.items()), ""]
    save(args.name, dict(env=env, img_size=res, rounds=args.rounds, rows=rows, fusion_speedup=fusion),
         "\n".join(lines))


if __name__ == "__main__":
    main()
