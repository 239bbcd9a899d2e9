"""benchmarks/timeseries_loss.py rescoring: its pandas-built ETTh1 test targets are the protocol's targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("timeseries_loss")


def test_pandas_targets_match_the_protocol(bench, data_dir):
    from ffnet_ts import data as D

    targets = bench.etth1_test_targets()
    prep = D.prepare(D.load("ETTh1"), 96, 96)
    assert targets.shape == (2785, 96, 7) == (prep.windows("test"), 96, prep.n_vars)
    s, _ = prep.borders["test"]
    _, y = D.gather_windows(prep.data, s, torch.arange(prep.windows("test")), 96, 96)
    np.testing.assert_allclose(targets, y.numpy(), atol=2e-6)


def test_rescore_uses_the_written_forecasts(bench, data_dir, tmp_path):
    targets = bench.etth1_test_targets()
    run = tmp_path / "etth1_mse_s1"
    run.mkdir()
    pred = targets + 0.5  # every error is 0.5: MSE 0.25, MAE 0.5
    np.savez(run / "forecasts_H96.npz", predictions=pred.astype(np.float32))
    h = {"train_config": {"loss": "mse", "seed": 1}, "best_val_mse": 0.7, "mse": 9.9, "best_epoch": 1,
         "epochs_run": 2, "train_seconds": 1.0, "reference": {"linear": {"mse": 0.38}, "naive": {"mse": 1.29}}}
    (run / "metrics.json").write_text(json.dumps({"horizons": {"96": h}}))
    r = bench.rescore(run, targets)
    assert r["test_mse"] == pytest.approx(0.25, abs=1e-6) and r["test_mae"] == pytest.approx(0.5, abs=1e-6)
    assert r["metrics_json_mse"] == 9.9  # reported beside, never used for the score
    np.savez(run / "forecasts_H96.npz", predictions=pred[:-1])
    with pytest.raises(SystemExit, match="do not match"):
        bench.rescore(run, targets)
