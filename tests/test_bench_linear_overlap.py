"""benchmarks/timeseries_linear_overlap.py: forecasts that *are* the linear map's must overlap it completely."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("timeseries_linear_overlap")


def _fake_run(tmp_path, data_dir, shift=0.0):
    """A run directory whose written forecasts are the closed-form linear + fixed cycle forecasts (+ ``shift``)."""
    from ffnet_ts import data as D
    from ffnet_ts import reference as Rf

    h = 24
    series = D.load(str(data_dir / "timeseries" / "ETTh1.csv"))
    prep = D.prepare(series, 96, h)
    cp = D.remove_cycle(prep, replace(D.fit_cycle(prep, 24), shrink=None))
    w = Rf.fit_linear(cp).weight
    resid = np.stack([Rf._windows(cp, "test", c)[:, :96] @ w[:-1] + w[-1] for c in cp.out_idx], -1)
    fc = D.add_cycle(cp, "test", resid) + np.float32(shift)
    a, _ = prep.borders["test"]
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / f"forecasts_H{h}.npz", predictions=fc, columns=np.array(prep.columns),
             target_start_ns=series.dates.asi8[a + 96:a + 96 + len(fc)], mean=prep.mean, std=prep.std)
    lin_mse = Rf.reference_metrics(prep, "test", cycle_prep=cp)["linear_cycle"]["mse"]
    written = float(np.square(fc.astype(np.float64) - prep.targets("test")).mean())
    (run / "metrics.json").write_text(json.dumps({
        "data": "ETTh1", "source": str(data_dir / "timeseries" / "ETTh1.csv"), "lookback": 96,
        "horizons": {str(h): {"mse": written, "cycle": {"used": True, "period": 24, "amplitude": "fixed"},
                              "train_config": {"seed": 1}, "reference": {"linear_cycle": {"mse": lin_mse}}}}}))
    return run, lin_mse, written


def test_the_linear_maps_own_forecasts_overlap_it_completely(bench, data_dir, tmp_path):
    run, lin_mse, _ = _fake_run(tmp_path, data_dir)
    assert bench.main([str(run), "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert row["linear_mse"] == pytest.approx(lin_mse, abs=1e-9)
    assert row["ffnet_mse"] == pytest.approx(lin_mse, rel=1e-5)  # float32 file vs float64 refit
    assert row["error_correlation"] > 0.99999 and row["rms_forecast_difference"] < 1e-5
    assert all(v == pytest.approx(lin_mse, rel=1e-5) for v in row["blends"].values())
    assert "| ETTh1 | 24 | 1 | 1 | 24 fixed |" in (tmp_path / "out.md").read_text()


def test_a_shifted_forecast_is_scored_from_the_file_and_blends_shrink_the_shift(bench, data_dir, tmp_path):
    run, lin_mse, written = _fake_run(tmp_path, data_dir, shift=0.2)
    assert bench.main([str(run), "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert row["ffnet_mse"] == pytest.approx(written, rel=1e-6) and written > lin_mse + 0.03
    assert row["rms_forecast_difference"] == pytest.approx(0.2, rel=1e-4)  # the forecasts differ by the shift
    # blending with weight w moves the forecast w * 0.2 from the linear one: the error grows with w
    b = [row["blends"][str(w)] for w in bench.BLENDS]
    assert lin_mse < b[0] < b[1] < b[2] < row["ffnet_mse"]


def test_a_run_whose_metrics_disagree_with_its_file_is_refused(bench, data_dir, tmp_path, capsys):
    run, _, written = _fake_run(tmp_path, data_dir, shift=0.2)
    meta = json.loads((run / "metrics.json").read_text())
    meta["horizons"]["24"]["mse"] = written - 0.01  # a more precise in-memory copy, say
    (run / "metrics.json").write_text(json.dumps(meta))
    assert bench.main([str(run), "--out", str(tmp_path / "out")]) == 2
    assert "written forecasts score" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
    assert bench.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2


def _model_run(tmp_path, data_dir):
    """A run directory holding a (random, untrained) DLinear's checkpoint and the forecasts it writes."""
    import torch
    from ffnet_ts import data as D
    from ffnet_ts import reference as Rf
    from ffnet_ts import train as T
    from ffnet_ts.model import create_model

    h = 24
    series = D.load(str(data_dir / "timeseries" / "ETTh1.csv"))
    prep = D.prepare(series, 96, h)
    cp = D.remove_cycle(prep, replace(D.fit_cycle(prep, 24), shrink=None))
    torch.manual_seed(0)
    args = {"n_vars": 7, "lookback": 96, "horizon": h}
    net = create_model("dlinear", **args)
    fc = D.add_cycle(cp, "test", T.evaluate(net, cp, "test", return_predictions=True)["predictions"])
    a, _ = prep.borders["test"]
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / f"forecasts_H{h}.npz", predictions=fc, columns=np.array(prep.columns),
             target_start_ns=series.dates.asi8[a + 96:a + 96 + len(fc)], mean=prep.mean, std=prep.std)
    T.save_atomic({"format": T.CHECKPOINT_FORMAT, "model": {"name": "dlinear", "args": args},
                   "state_dict": net.state_dict()}, run / f"checkpoint_H{h}.pt")
    (run / "metrics.json").write_text(json.dumps({
        "data": "ETTh1", "source": str(data_dir / "timeseries" / "ETTh1.csv"), "lookback": 96,
        "horizons": {str(h): {"mse": float(np.square(fc.astype(np.float64) - prep.targets("test")).mean()),
                              "cycle": {"used": True, "period": 24, "amplitude": "fixed"},
                              "reference": {"linear_cycle": Rf.reference_metrics(prep, "test", cycle_prep=cp)
                                            ["linear_cycle"]}}}}))
    return run, net, cp


def test_validated_blend_reads_validation_from_the_checkpoint_and_test_only_for_the_choice(bench, data_dir,
                                                                                           tmp_path):
    from ffnet_ts import reference as Rf
    from ffnet_ts import train as T

    run, net, cp = _model_run(tmp_path, data_dir)
    assert bench.main([str(run), "--validate", "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out.json").read_text())["rows"]
    v = row["validated"]
    # the ends of the weight grid are the two models alone, scored independently
    assert v["val_mse"]["1.0"] == pytest.approx(T.evaluate(net, cp, "val")["mse"], rel=1e-6)
    assert v["val_mse"]["0.0"] == pytest.approx(Rf.fit_linear(cp).val_mse, rel=1e-6)
    assert v["chosen_w"] == min(bench.WEIGHTS, key=lambda w: v["val_mse"][str(w)])
    # an untrained network is far worse than the linear map on validation: the choice leans to the linear map
    assert v["chosen_w"] < 0.5 and v["test_mse"] < row["ffnet_mse"]
    assert "w chosen on validation" in (tmp_path / "out.md").read_text()


def test_a_checkpoint_that_did_not_write_the_forecasts_is_refused(bench, data_dir, tmp_path):
    import torch

    run, net, _ = _model_run(tmp_path, data_dir)
    ck = torch.load(run / "checkpoint_H24.pt", weights_only=False)
    ck["state_dict"] = {k: v + 0.01 for k, v in ck["state_dict"].items()}
    torch.save(ck, run / "checkpoint_H24.pt")
    with pytest.raises(SystemExit, match="does not reproduce the written forecasts"):
        bench.main([str(run), "--validate", "--out", str(tmp_path / "out")])
