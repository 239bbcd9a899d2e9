"""End to end: the README's `ffnet-ts forecast --data ETTh1` and `ffnet-ts predict` through the console script.

The full default run takes minutes; here the same command runs with the tiny variant and one epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def _script() -> list[str]:
    exe = Path(sys.executable).parent / "ffnet-ts"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ffnet_ts.cli"]


@pytest.mark.slow
def test_forecast_then_predict_on_etth1(data_dir, tmp_path):
    env = {**os.environ, "FFNET_DATA_DIR": str(data_dir), "MPLBACKEND": "Agg"}
    out = tmp_path / "etth1"
    run = subprocess.run([*_script(), "forecast", "--data", "ETTh1", "--model", "ffnet_ts_tiny", "--epochs", "1",
                          "--threads", "1", "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "|      96 |" in run.stdout and "2785" in run.stdout  # every ETTh1 H=96 test window
    metrics = json.loads((out / "metrics.json").read_text())
    h96 = metrics["horizons"]["96"]
    assert h96["test_windows"] == 2785 and h96["mse"] < 1.0  # persistence scores ~0.65 here; a trained net less
    for name in ("checkpoint_H96.pt", "forecasts_H96.npz", "forecast_H96.png"):
        assert (out / name).is_file()

    csv = Path(metrics["source"])
    pred = subprocess.run([*_script(), "predict", "--checkpoint", str(out / "checkpoint_H96.pt"), "--data", str(csv),
                           "--out", str(tmp_path / "next96.csv")], env=env, capture_output=True, text=True, timeout=600)
    assert pred.returncode == 0, pred.stderr[-2000:]
    fc = pd.read_csv(tmp_path / "next96.csv", parse_dates=["date"])
    assert len(fc) == 96 and fc["date"].iloc[0] == pd.Timestamp("2018-06-26 20:00:00")

    bad = subprocess.run([*_script(), "forecast", "--data", "ETTh9"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown dataset 'ETTh9'")
