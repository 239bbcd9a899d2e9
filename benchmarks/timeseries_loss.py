"""Training loss and precision on the default ETTh1 H=96 run: MSE (the reference) vs L1 vs Huber, fp32 vs bf16.

Each run is the README's default command with the epoch cap fixed instead of the 9-minute budget, so the result
does not depend on the machine's load (the default run stops by early stopping before either limit):

    uv run ffnet-ts forecast --data ETTh1 --horizon 96 --epochs 15 --loss <loss> --seed <seed> --threads 1 \
        [--precision bf16]

    nice -n 10 uv run python benchmarks/timeseries_loss.py            # resumable: finished runs are kept
    uv run python benchmarks/timeseries_loss.py --losses mse mae --seeds 2021 2022 --work /tmp/loss
    uv run python benchmarks/timeseries_loss.py --losses mse --precisions fp32 bf16 --seeds 2021 2022 2023 \
        --out results/timeseries_bf16_etth1      # CPU bf16 autocast vs fp32 (issue 9 §1's accuracy check)

Runs are written to ``--work/etth1_<loss>[_bf16]_s<seed>/`` (the CLI's usual outputs); a run whose ``metrics.json``
exists is not repeated. The test numbers are recomputed from each run's ``forecasts_H96.npz`` (the written
forecasts) against test targets rebuilt from the CSV with pandas, not read from metrics.json. Validation MSE is what a user may select on; test
is only reported. Output: ``--out`` (default results/timeseries_loss_etth1) .json and .md. Needs ``$FFNET_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "timeseries_loss_etth1"


def run_dir(work: Path, loss: str, seed: int, precision: str = "fp32") -> Path:
    return work / (f"etth1_{loss}_s{seed}" if precision == "fp32" else f"etth1_{loss}_{precision}_s{seed}")


def run_one(work: Path, loss: str, seed: int, threads: int, precision: str = "fp32") -> Path:
    d = run_dir(work, loss, seed, precision)
    if (d / "metrics.json").is_file():
        return d
    cmd = ["ffnet-ts", "forecast", "--data", "ETTh1", "--horizon", "96", "--epochs", "15", "--loss", loss,
           "--seed", str(seed), "--threads", str(threads), "--blend", "off", "--no-progress", "--out", str(d), "--force"]
    if precision != "fp32":
        cmd += ["--precision", precision]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return d


def etth1_test_targets(horizon: int = 96, lookback: int = 96) -> np.ndarray:
    """(windows, H, 7) standardized ETTh1 test targets, built with pandas from the CSV (the published borders:
    12/4/4 months of hourly rows, scaler fitted on the train rows), independently of ffnet_ts.data."""
    import pandas as pd

    root = Path(os.environ.get("FFNET_DATA_DIR", ""))
    hits = sorted(root.rglob("ETTh1.csv")) if root.is_dir() else []
    if not hits:
        raise SystemExit("ETTh1.csv not found under $FFNET_DATA_DIR (needed to rescore the written forecasts)")
    values = pd.read_csv(hits[0]).drop(columns=["date"]).to_numpy(np.float64)
    month = 30 * 24
    train = values[:12 * month]
    z = (values - train.mean(0)) / train.std(0)
    start, end = 16 * month - lookback, 20 * month
    n = end - start - lookback - horizon + 1
    return np.stack([z[start + i + lookback:start + i + lookback + horizon] for i in range(n)])


def rescore(d: Path, targets: np.ndarray, precision: str = "fp32") -> dict:
    """MSE / MAE of the written test forecasts against independently built standardized test targets.

    ``precision``: what the run was launched with (metrics.json records it too, since 2026-12-01; it wins)."""
    m = json.loads((d / "metrics.json").read_text())
    h = m["horizons"]["96"]
    pred = np.load(d / "forecasts_H96.npz")["predictions"].astype(np.float64)
    if pred.shape != targets.shape:
        raise SystemExit(f"{d}: forecasts {pred.shape} do not match the test targets {targets.shape}")
    err = pred - targets
    return {"loss": h["train_config"]["loss"], "precision": h["train_config"].get("precision", precision),
            "seed": h["train_config"]["seed"], "val_mse": h["best_val_mse"],
            "test_mse": float((err ** 2).mean()), "test_mae": float(np.abs(err).mean()),
            "metrics_json_mse": h["mse"], "test_windows": len(pred), "best_epoch": h["best_epoch"],
            "epochs_run": h["epochs_run"], "train_seconds": h["train_seconds"],
            "linear_test_mse": h["reference"]["linear"]["mse"], "naive_test_mse": h["reference"]["naive"]["mse"]}


def table(rows: list[dict]) -> str:
    lines = ["| training loss | precision | seed | best val MSE | test MSE / MAE (from forecasts_H96.npz) | "
             "epochs (best) | train s |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['loss']} | {r.get('precision', 'fp32')} | {r['seed']} | {r['val_mse']:.4f} | "
                     f"{r['test_mse']:.4f} / {r['test_mae']:.4f} | {r['epochs_run']} ({r['best_epoch']}) | "
                     f"{r['train_seconds']:.0f} |")
    by = {}
    for r in rows:
        by.setdefault((r["loss"], r.get("precision", "fp32")), []).append(r)
    for (loss, precision), rs in by.items():
        lines.append(f"| **{loss} mean** | {precision} | {len(rs)} seeds | {np.mean([r['val_mse'] for r in rs]):.4f} | "
                     f"{np.mean([r['test_mse'] for r in rs]):.4f} / {np.mean([r['test_mae'] for r in rs]):.4f} | | "
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f} |")
    lin = rows[0]["linear_test_mse"]
    lines.append(f"\nSame windows: closed-form linear test MSE {lin:.4f}, naive {rows[0]['naive_test_mse']:.4f}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--losses", nargs="+", default=["mse", "mae", "huber"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[2021, 2022])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--out", type=Path, default=OUT, help="output stem (.json / .md), relative to benchmarks/")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "ffnet" / "timeseries_loss")
    ap.add_argument("--collect-only", action="store_true", help="only tabulate runs that already finished")
    args = ap.parse_args(argv)
    rows, targets = [], etth1_test_targets()
    for loss in args.losses:
        for precision in args.precisions:
            for seed in args.seeds:
                d = (run_dir(args.work, loss, seed, precision) if args.collect_only
                     else run_one(args.work, loss, seed, args.threads, precision))
                if (d / "metrics.json").is_file():
                    rows.append(rescore(d, targets, precision))
    if not rows:
        print("no finished runs", file=sys.stderr)
        return 1
    out = args.out if args.out.is_absolute() else HERE / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    md = ("# ETTh1 H=96, default recipe, training loss x precision x seed\n\nGenerated by "
          "`benchmarks/timeseries_loss.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`.\n\n"
          + table(rows))
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
