"""Window amplitude of the cycle (``--cycle-amplitude``): the gain against a numpy least-squares slope, the
closed-form row against an independent pandas/numpy fit, the validation choice on a series whose daily
amplitude changes, and the same forecasts from ``predict``, the raw-units wrapper and the ONNX graph."""

from __future__ import annotations

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


def _gain_numpy(resid: np.ndarray, cyc: np.ndarray, shrink: float) -> np.ndarray:
    """Independent: the slope of the series (resid + cyc) on the cycle by np.polyfit, shrunk towards 1, minus 1."""
    slope = np.array([np.polyfit(cyc[:, c], resid[:, c] + cyc[:, c], 1)[0] for c in range(cyc.shape[1])])
    return (slope + shrink) / (1 + shrink) - 1


def test_gain_is_the_shrunk_least_squares_slope():
    rng = np.random.default_rng(0)
    cyc = np.sin(np.linspace(0, 4 * np.pi, L))[:, None] * rng.uniform(0.5, 2, 3)
    resid = rng.standard_normal((L, 3)) + 0.7 * cyc  # amplitude 1.7 times the train split's
    g = D.cycle_gain(torch.from_numpy(resid), torch.from_numpy(cyc), 1.0).numpy()[0]
    np.testing.assert_allclose(g, _gain_numpy(resid, cyc, 1.0), rtol=1e-6)
    np.testing.assert_allclose(D.cycle_gain(torch.from_numpy(resid), torch.from_numpy(cyc), 0.0).numpy()[0],
                               _gain_numpy(resid, cyc, 0.0), rtol=1e-6)
    # a variable whose cycle is flat gets no correction (and no division by zero)
    flat = D.cycle_gain(torch.from_numpy(resid), torch.zeros(L, 3, dtype=torch.float64), 1.0)
    assert torch.isfinite(flat).all() and flat.abs().max() == 0


def test_one_standard_error_rule():
    """Two blocks of two windows each; the standard error of a difference is |block diff 1 - block diff 2| / 2."""
    base = np.array([1.0, 1.0, 1.0, 1.0])
    # 'fixed' is 0.10 lower on average, with block differences -0.05 and -0.15: SE 0.05 -> the gap is real
    errs = {"off": base, "fixed": base - np.array([0.05, 0.05, 0.15, 0.15]), "window": base - 0.11}
    choice, mean, se = R.one_se_choice(errs, 2)
    assert min(mean, key=mean.get) == "window" and se["window"] == 0
    assert se["fixed"] == pytest.approx(0.05) and choice == "fixed"  # 0.01 behind window, within 0.05
    assert se["off"] == pytest.approx(0.0) and mean["off"] - mean["window"] == pytest.approx(0.11)
    # a clear winner is kept
    choice, _, _ = R.one_se_choice({"off": base, "fixed": base - 0.5}, 2)
    assert choice == "fixed"
    # a noisy gain is not: block differences +0.2 and -0.4 (mean -0.1, SE 0.3)
    choice, _, se = R.one_se_choice({"off": base, "fixed": base + np.array([0.2, 0.2, -0.4, -0.4])}, 2)
    assert se["off"] == pytest.approx(0.3) and choice == "off"


def _series(amplitude_of_row, n=2400, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    daily = np.sin(2 * np.pi * t / 24)
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = 0.8 * ar[i - 1] + 0.3 * rng.standard_normal()
    a = amplitude_of_row(t)
    values = np.stack([a * daily + ar, 0.5 * a * daily + ar[::-1]], 1)
    return D.Series("syn", pd.date_range("2021-01-01", periods=n, freq="h"), values, ["a", "OT"], "OT")


def test_auto_picks_the_window_amplitude_when_the_daily_amplitude_drifts():
    drifting = _series(lambda t: 2.0 - 1.5 * t / len(t))  # the daily swing shrinks from 2 to 0.5
    res, rec = R.choose_cycle(D.prepare(drifting, L, H), "auto")
    lin = rec["linear_val_mse"]
    assert rec["used"] and rec["amplitude"] == "window" and res.cycle.shrink == D.CYCLE_SHRINK
    assert lin["window"] < lin["fixed"] < lin["off"]
    steady = _series(lambda t: np.ones(len(t)))
    res, rec = R.choose_cycle(D.prepare(steady, L, H), "auto", "fixed")
    assert rec["amplitude"] == "fixed" and res.cycle.shrink is None and set(rec["linear_val_mse"]) == {"off", "fixed"}
    with pytest.raises(D.DataError, match="amplitude"):
        R.choose_cycle(D.prepare(steady, L, H), "auto", "sometimes")


def test_cli_window_row_equals_an_independent_fit(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["forecast", "--data", str(small_csv), "--model", "ffnet_ts_tiny", "--lookback", str(L),
                     "--horizon", str(H), "--epochs", "1", "--cycle", "24", "--cycle-amplitude", "window",
                     "--no-progress", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    assert m["cycle"]["amplitude"] == "window" and "window amplitude" in captured.err
    assert "cycle, window amplitude" in captured.out

    # independent: pandas hour-of-day means of the train rows, np.polyfit slopes per window, np.linalg.lstsq
    df = pd.read_csv(small_csv, parse_dates=["date"])
    vals = df.drop(columns="date").to_numpy(float)
    n_train, n_test = int(0.7 * len(df)), int(0.2 * len(df))
    mean, std = vals[:n_train].mean(0), vals[:n_train].std(0)
    z = (vals - mean) / std
    hour = df["date"].dt.hour.to_numpy()
    table = np.stack([z[:n_train][hour[:n_train] == p].mean(0) for p in range(24)])
    cyc = table[hour]
    r = z - cyc

    def adjusted(s, c):  # [x - g cx | y - g cy] of the window starting at row s, variable c
        g = _gain_numpy(r[s:s + L, c:c + 1], cyc[s:s + L, c:c + 1], D.CYCLE_SHRINK)[0]
        return r[s:s + L + H, c] - g * cyc[s:s + L + H, c]

    rows = range(0, n_train - L - H + 1)
    W = np.stack([adjusted(s, c) for c in range(z.shape[1]) for s in rows])
    lc = m["reference"]["linear_cycle"]
    assert lc["amplitude"] == "window"
    A = np.concatenate([W[:, :L], np.ones((len(W), 1))], 1)
    Y, lam = W[:, L:], lc["ridge_alpha"] * len(W)  # ridge: penalty rows, the intercept not shrunk
    if lam > 0:
        A = np.concatenate([A, np.concatenate([np.sqrt(lam) * np.eye(L), np.zeros((L, 1))], 1)])
        Y = np.concatenate([Y, np.zeros((L, H))])
    w = np.linalg.lstsq(A, Y, rcond=None)[0]
    first = len(df) - n_test
    n = n_test - H + 1
    err = np.stack([np.stack([np.concatenate([adjusted(first - L + i, c)[:L], [1.0]]) @ w
                              - adjusted(first - L + i, c)[L:] for c in range(z.shape[1])], -1) for i in range(n)])
    assert lc["mse"] == pytest.approx(np.mean(err ** 2), rel=1e-5)
    # the network's reported score is the written forecasts' score against the CSV's standardized targets
    y = np.stack([z[first + i:first + i + H] for i in range(n)])
    fc = np.load(out / "forecasts_H24.npz")["predictions"].astype(np.float64)
    assert m["mse"] == pytest.approx(np.mean((fc - y) ** 2), rel=1e-6)


def test_predict_and_onnx_scale_the_cycle_per_window(data_dir, tmp_path, monkeypatch):
    """By hand: scale, subtract the hours' cycle, gain from the history (numpy slope), model on the history
    minus gain x cycle, add (1 + gain) x the target hours' cycle, unscale. `predict` (torch), the ONNX graph
    and the raw-units wrapper must all give it."""
    monkeypatch.setenv("FFNET_CACHE_DIR", str(tmp_path / "cache"))
    etth1 = D.load(str(data_dir / "timeseries" / "ETTh1.csv"))
    prep = D.prepare(etth1, 32, 8)
    res = R.choose_cycle(prep, 24, "window")[0]
    assert res.cycle.shrink == D.CYCLE_SHRINK
    ckpt = tmp_path / "c.pt"
    model = tiny_checkpoint(res, ckpt)
    csv = tmp_path / "recent.csv"
    pd.read_csv(etth1.source).iloc[5000:5100].to_csv(csv, index=False)
    df = pd.read_csv(csv, parse_dates=["date"])
    x = (df.drop(columns="date").to_numpy(float)[-32:] - prep.mean) / prep.std
    hours_in = df["date"].dt.hour.to_numpy()[-32:]
    hours_out = (hours_in[-1] + 1 + np.arange(8)) % 24
    cx, cy = res.cycle.table[hours_in], res.cycle.table[hours_out]
    g = _gain_numpy(x - cx, cx, D.CYCLE_SHRINK)
    assert np.abs(g).max() > 0.05  # the window's amplitude differs enough for the test to mean something
    with torch.no_grad():
        y = model(torch.from_numpy((x - cx - g * cx).astype(np.float32))[None])[0].double().numpy()
    expect = (y + (1 + g) * cy) * prep.std + prep.mean

    a, b = tmp_path / "torch.csv", tmp_path / "ort.csv"
    assert cli.main(["predict", "--checkpoint", str(ckpt), "--data", str(csv), "--out", str(a), "--device",
                     "cpu"]) == 0
    onnx_path = export_checkpoint(ckpt, tmp_path / "c.onnx")
    assert cli.main(["predict", "--checkpoint", str(onnx_path), "--data", str(csv), "--out", str(b)]) == 0
    scale = np.abs(expect).max()
    assert np.abs(pd.read_csv(a).drop(columns="date").to_numpy() - expect).max() / scale < 1e-5
    assert np.abs(pd.read_csv(b).drop(columns="date").to_numpy() - expect).max() / scale < 1e-4
    wrapper, meta = build_from_checkpoint(torch.load(ckpt, weights_only=False))
    assert meta["cycle"]["shrink"] == D.CYCLE_SHRINK and "window amplitude" in meta["normalization"]
    with torch.no_grad():
        w = wrapper(torch.from_numpy(df.drop(columns="date").to_numpy(np.float32)[-32:])[None],
                    torch.tensor([int(hours_in[0])]))[0].double().numpy()
    assert np.abs(w - expect).max() / scale < 1e-4
