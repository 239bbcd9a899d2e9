"""Cycle removal (``--cycle``): the train-split cycle against pandas, exact round trips, the validation-only
decision, and the same forecasts from checkpoint, ``predict`` and the ONNX graph."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from ffnet_ts import cli
from ffnet_ts import data as D
from ffnet_ts import reference as R
from ffnet_ts.export import build_from_checkpoint, export_checkpoint
from ffnet_ts.testing import tiny_checkpoint

L, H = 48, 24

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def etth1(data_dir):
    return D.load(str(data_dir / "timeseries" / "ETTh1.csv"))


@pytest.mark.parametrize("step, period", [("1h", 24), ("15min", 96), ("10min", 144), ("30min", 48), ("1D", 7),
                                          ("7D", None), ("7min", None), ("25h", None)])
def test_daily_period(step, period):
    assert D.daily_period(pd.Timedelta(step).value) == period


def test_cycle_equals_pandas_hour_of_day_means(etth1):
    prep = D.prepare(etth1, 96, 96)
    cyc = D.fit_cycle(prep, 24)
    # independent: pandas, raw CSV values, train rows (12 months), standardized, grouped by the clock hour
    df = pd.read_csv(etth1.source, parse_dates=["date"]).iloc[:12 * 30 * 24]
    vals = df.drop(columns="date")
    z = (vals - vals.mean()) / vals.std(ddof=0)
    by_hour = z.groupby(df["date"].dt.hour).mean().to_numpy()  # ETTh1 starts at midnight: phase == hour
    np.testing.assert_allclose(cyc.table, by_hour, atol=1e-6)
    assert cyc.phases(pd.DatetimeIndex(["2016-07-01 05:00", "2030-01-02 23:00"]).asi8).tolist() == [5, 23]


def test_residual_round_trip_and_equal_errors(etth1):
    prep = D.prepare(etth1, L, H)
    res = R.choose_cycle(prep, 24)[0]
    assert res.cycle.period == 24 and prep.cycle is None
    z = prep.data.double().numpy()
    # the residual plus the cycle is the series again (float32 storage of the residual)
    back = res.data.double().numpy() + res.cycle.at(etth1.dates.asi8)
    assert np.abs(back - z).max() < 1e-5
    # adding the cycle to the residual targets gives the series' targets: equal errors for any forecast
    np.testing.assert_allclose(D.add_cycle(res, "test", res.targets("test")), prep.targets("test"), atol=1e-5)
    rng = np.random.default_rng(0)
    fake = res.targets("test") + rng.normal(0, 0.3, res.targets("test").shape).astype(np.float32)
    mse_resid = np.mean((fake - res.targets("test")) ** 2)
    mse_series = np.mean((D.add_cycle(res, "test", fake).astype(np.float64) - prep.targets("test")) ** 2)
    assert mse_series == pytest.approx(mse_resid, rel=1e-5)


def test_auto_decides_on_validation_only(etth1):
    prep = D.prepare(etth1, L, H)
    end = prep.borders["val"][1]

    class NoTest(dict):
        def __getitem__(self, split):
            if split == "test":
                raise AssertionError("the cycle decision touched the test split")
            return super().__getitem__(split)

    guarded = dataclasses.replace(prep, data=prep.data[:end].clone(),
                                  borders=NoTest(train=prep.borders["train"], val=prep.borders["val"]))
    res, rec = R.choose_cycle(guarded, "auto")
    lin = rec["linear_val_mse"]
    se = rec["linear_val_se"]
    best = next(k for k in ("off", "fixed", "window") if lin[k] - min(lin.values()) <= se[k])  # one-SE rule
    assert rec["period"] == 24 and rec["used"] == (best != "off") and set(lin) == {"off", "fixed", "window"}
    assert res is not None and rec["amplitude"] == best and res.cycle.amplitude == best
    assert lin["off"] == pytest.approx(R.fit_linear(prep).val_mse, rel=1e-12)  # same validation, full data


def test_auto_keeps_a_series_without_a_cycle_as_it_is():
    rng = np.random.default_rng(1)
    values = np.cumsum(rng.standard_normal((1500, 2)), 0)  # random walks: no daily cycle to find
    s = D.Series("rw", pd.date_range("2021-01-01", periods=1500, freq="h"), values, ["a", "OT"], "OT")
    res, rec = R.choose_cycle(D.prepare(s, L, H), "auto")
    lin = rec["linear_val_mse"]
    assert res is None and rec["used"] is False and min(lin["fixed"], lin["window"]) >= lin["off"]
    weekly = D.Series("wk", pd.date_range("2001-01-07", periods=400, freq="7D"), values[:400], ["a", "OT"], "OT")
    res, rec = R.choose_cycle(D.prepare(weekly, 12, 6), "auto")
    assert res is None and "no daily or weekly cycle" in rec["reason"]


def test_a_period_the_train_split_cannot_estimate_is_refused(etth1):
    prep = D.prepare(etth1, L, H)
    with pytest.raises(D.DataError, match="every phase"):
        R.choose_cycle(prep, 9000)


def test_cli_scores_the_written_forecasts_and_prints_the_cycle_row(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["forecast", "--data", str(small_csv), "--model", "ffnet_ts_tiny", "--lookback", str(L),
                     "--horizon", str(H), "--epochs", "1", "--cycle", "24", "--cycle-amplitude", "fixed", "--no-progress",
                     "--out", str(out)]) == 0
    captured = capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    assert m["cycle"]["used"] and m["cycle"]["period"] == 24
    assert "removing a 24-row cycle" in captured.err and "linear + 24-row cycle" in captured.out

    # independent: targets from the raw CSV with pandas, the cycle as hour-of-day means of the train rows
    df = pd.read_csv(small_csv, parse_dates=["date"])
    vals = df.drop(columns="date").to_numpy(float)
    n_train, n_test = int(0.7 * len(df)), int(0.2 * len(df))
    mean, std = vals[:n_train].mean(0), vals[:n_train].std(0)
    z = (vals - mean) / std
    first = len(df) - n_test  # the first target row of the test split
    n = n_test - H + 1
    y = np.stack([z[first + i:first + i + H] for i in range(n)])
    fc = np.load(out / "forecasts_H24.npz")["predictions"].astype(np.float64)
    assert fc.shape == y.shape
    assert m["mse"] == pytest.approx(np.mean((fc - y) ** 2), rel=1e-6)

    hour = df["date"].dt.hour.to_numpy()
    table = np.stack([z[:n_train][hour[:n_train] == p].mean(0) for p in range(24)])
    r = z - table[hour]
    rows = range(0, n_train - L - H + 1)
    X = np.concatenate([np.stack([r[s:s + L, c] for s in rows]) for c in range(z.shape[1])])
    Y = np.concatenate([np.stack([r[s + L:s + L + H, c] for s in rows]) for c in range(z.shape[1])])
    lc = m["reference"]["linear_cycle"]
    lam = lc["ridge_alpha"] * len(X)
    A = np.concatenate([X, np.ones((len(X), 1))], 1)
    if lam > 0:
        A = np.concatenate([A, np.concatenate([np.sqrt(lam) * np.eye(L), np.zeros((L, 1))], 1)])
        Y = np.concatenate([Y, np.zeros((L, H))])
    w = np.linalg.lstsq(A, Y, rcond=None)[0]
    xs = np.stack([r[first - L + i:first + i] for i in range(n)])  # (n, L, C) residual histories
    pred = np.einsum("nlc,lh->nhc", xs, w[:-1]) + w[-1][:, None] + table[hour[first + np.arange(n)[:, None]
                                                                                 + np.arange(H)]]
    assert lc["mse"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-5)


def test_cycle_off_is_the_plain_pipeline(small_csv, tmp_path):
    out = tmp_path / "off"
    assert cli.main(["forecast", "--data", str(small_csv), "--model", "ffnet_ts_tiny", "--lookback", str(L),
                     "--horizon", str(H), "--epochs", "1", "--cycle", "off", "--no-progress", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    assert m["cycle"] == {"mode": "off", "used": False, "period": None, "amplitude": None, "reason": "--cycle off"}
    assert "linear_cycle" not in m["reference"]
    assert torch.load(out / f"checkpoint_H{H}.pt", weights_only=False)["data"]["cycle"] is None


@pytest.mark.parametrize("text", ["1", "x", "-3"])
def test_bad_cycle_is_one_line(small_csv, tmp_path, capsys, text):
    assert cli.main(["forecast", "--data", str(small_csv), "--cycle", text, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cycle" in err[0]
    assert not (tmp_path / "o").exists()


def test_predict_and_onnx_add_the_cycle_back(etth1, data_dir, tmp_path, monkeypatch):
    """A checkpoint with a cycle: `predict` (torch), the raw-units wrapper and the ONNX graph agree with a
    by-hand pipeline (scale, subtract the hour's cycle, model, add the target hours' cycle, unscale)."""
    monkeypatch.setenv("FFNET_CACHE_DIR", str(tmp_path / "cache"))
    prep = D.prepare(etth1, 32, 8)
    res = R.choose_cycle(prep, 24, "fixed")[0]
    ckpt = tmp_path / "c.pt"
    model = tiny_checkpoint(res, ckpt)
    csv = tmp_path / "recent.csv"
    pd.read_csv(etth1.source).iloc[1000:1100].to_csv(csv, index=False)  # ends at 2016-08-12 03:00
    df = pd.read_csv(csv, parse_dates=["date"])
    x = (df.drop(columns="date").to_numpy(float)[-32:] - prep.mean) / prep.std
    hours_in = df["date"].dt.hour.to_numpy()[-32:]
    hours_out = (hours_in[-1] + 1 + np.arange(8)) % 24
    with torch.no_grad():
        y = model(torch.from_numpy((x - res.cycle.table[hours_in]).astype(np.float32))[None])[0].double().numpy()
    expect = (y + res.cycle.table[hours_out]) * prep.std + prep.mean

    a, b = tmp_path / "torch.csv", tmp_path / "ort.csv"
    assert cli.main(["predict", "--checkpoint", str(ckpt), "--data", str(csv), "--out", str(a), "--device",
                     "cpu"]) == 0
    onnx_path = export_checkpoint(ckpt, tmp_path / "c.onnx")
    assert cli.main(["predict", "--checkpoint", str(onnx_path), "--data", str(csv), "--out", str(b)]) == 0
    got_t = pd.read_csv(a).drop(columns="date").to_numpy()
    got_o = pd.read_csv(b).drop(columns="date").to_numpy()
    scale = np.abs(expect).max()
    assert np.abs(got_t - expect).max() / scale < 1e-5  # the CSV keeps 6 significant digits
    assert np.abs(got_o - expect).max() / scale < 1e-4
    # the wrapper takes the phase of the first history row as its second input
    wrapper, meta = build_from_checkpoint(torch.load(ckpt, weights_only=False))
    assert meta["cycle"]["period"] == 24
    with torch.no_grad():
        w = wrapper(torch.from_numpy(df.drop(columns="date").to_numpy(np.float32)[-32:])[None],
                    torch.tensor([int(hours_in[0])]))[0].double().numpy()
    assert np.abs(w - expect).max() / scale < 1e-4
