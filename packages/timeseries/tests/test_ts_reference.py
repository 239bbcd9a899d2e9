"""Reference rows (naive, closed-form linear): recomputed here from the raw CSV, independently of the package.

The independent versions standardize with pandas, cut windows with explicit Python loops and solve the ridge
problem with ``np.linalg.lstsq`` on an augmented design matrix (not the normal equations the package uses).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from ffnet_ts import cli
from ffnet_ts import data as D
from ffnet_ts import reference as R

L, H = 48, 24


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py



def _independent_windows(csv):
    """Standardized (x, y) windows per split, (windows, vars, L) and (windows, vars, H), from the raw CSV."""
    values = pd.read_csv(csv).drop(columns=["date"]).to_numpy(float)
    t = len(values)
    n_train, n_test = int(0.7 * t), int(0.2 * t)
    n_val = t - n_train - n_test
    mean, std = values[:n_train].mean(0), values[:n_train].std(0)
    z = (values - mean) / std
    bounds = {"train": (0, n_train), "val": (n_train - L, n_train + n_val), "test": (n_train + n_val - L, t)}
    out = {}
    for split, (a, b) in bounds.items():
        xs, ys = [], []
        for s in range(a, b - L - H + 1):
            xs.append(z[s:s + L].T)
            ys.append(z[s + L:s + L + H].T)
        out[split] = (np.array(xs), np.array(ys))
    return out


def _ridge(x, y, alpha):
    """lstsq on [X 1; sqrt(lam) I 0] -- the textbook ridge, intercept unpenalized."""
    X = np.concatenate([x.reshape(-1, L), np.ones((x.shape[0] * x.shape[1], 1))], 1)
    Y = y.reshape(-1, H)
    lam = alpha * X.shape[0]
    if lam > 0:
        aug = np.concatenate([np.sqrt(lam) * np.eye(L), np.zeros((L, 1))], 1)
        X, Y = np.concatenate([X, aug]), np.concatenate([Y, np.zeros((L, H))])
    return np.linalg.lstsq(X, Y, rcond=None)[0]


def _predict(w, x):
    return x @ w[:-1] + w[-1]


def test_reference_functions_match_an_independent_computation(small_csv):
    wins = _independent_windows(small_csv)
    prep = D.prepare(D.load(str(small_csv)), L, H)
    x, y = wins["test"]
    assert prep.windows("test") == len(x) == int(600 * 0.2) - H + 1

    naive = R.naive_metrics(prep)
    err = y - x[:, :, -1:]
    assert naive["windows"] == len(x)
    assert naive["mse"] == pytest.approx(np.mean(err ** 2), rel=1e-6)
    assert naive["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-6)

    lin = R.fit_linear(prep)
    val_mse = {a: np.mean((_predict(_ridge(*wins["train"], a), wins["val"][0]) - wins["val"][1]) ** 2)
               for a in R.RIDGE_ALPHAS}
    assert [s["val_mse"] for s in lin.selection] == pytest.approx([val_mse[a] for a in R.RIDGE_ALPHAS], rel=1e-5)
    assert lin.alpha == min(val_mse, key=val_mse.get)  # chosen on validation, never on test
    w = _ridge(*wins["train"], lin.alpha)
    np.testing.assert_allclose(lin.weight, w, rtol=1e-4, atol=1e-6)


def test_cli_writes_reference_rows_and_skill(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["forecast", "--data", str(small_csv), "--model", "ffnet_ts_tiny", "--lookback", str(L),
                     "--horizon", str(H), "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    ref = m["reference"]

    wins = _independent_windows(small_csv)
    x, y = wins["test"]
    n = int(600 * 0.2) - H + 1  # the protocol's window count
    assert m["test_windows"] == ref["naive"]["windows"] == ref["linear"]["windows"] == len(x) == n
    naive_mse = np.mean((y - x[:, :, -1:]) ** 2)
    assert ref["naive"]["mse"] == pytest.approx(naive_mse, rel=1e-6)
    assert ref["naive"]["mae"] == pytest.approx(np.mean(np.abs(y - x[:, :, -1:])), rel=1e-6)
    pred = _predict(_ridge(*wins["train"], ref["linear"]["ridge_alpha"]), x)
    assert ref["linear"]["mse"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-5)
    assert ref["linear"]["mae"] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-5)

    # skill is computed from the file we emit: the model's forecasts against the same windows
    fc = np.load(out / "forecasts_H24.npz")["predictions"].astype(np.float64)  # (windows, H, vars)
    model_mse = np.mean((fc - y.transpose(0, 2, 1)) ** 2)
    assert m["mse"] == pytest.approx(model_mse, rel=1e-5)
    assert m["skill_vs_naive"] == pytest.approx(1 - model_mse / naive_mse, rel=1e-5)
    assert ref["linear"]["skill_vs_naive"] == pytest.approx(1 - ref["linear"]["mse"] / naive_mse, rel=1e-5)
    assert "naive (repeat last value)" in printed and "linear (closed form" in printed
    assert f"{ref['naive']['mse']:.4f}" in printed and f"{ref['linear']['mse']:.4f}" in printed
    # the validation note appears exactly when a reference row is ahead of the model on validation
    lin_val = min(r["val_mse"] for k, r in ref.items() if k in ("linear", "linear_cycle"))
    note = [line for line in printed.splitlines() if line.startswith(f"note: H={H}:")]
    if "blend" in m:  # --blend auto has chosen on validation already: a note says so unless it kept the model
        assert len(note) == (m["blend"]["w"] != 1) and all("--blend auto chose" in n for n in note)
    else:
        assert len(note) == (1 if lin_val < m["best_val_mse"] else 0)


def test_validation_note_names_the_better_reference_row():
    def entry(model_val, lin_val, cyc_val=None, stride=1):
        ref = {"naive": {"mse": 1.0}, "linear": {"val_mse": lin_val}}
        if cyc_val is not None:
            ref["linear_cycle"] = {"val_mse": cyc_val}
        return {"best_val_mse": model_val, "reference": ref, "train_config": {"val_stride": stride}}

    notes = cli._validation_notes("ffnet_ts", [(96, entry(0.6827, 0.6601, 0.6508)), (192, entry(0.5, 0.6, 0.7)),
                                               (336, entry(0.9, 0.8, None, stride=3))])
    assert len(notes) == 1  # H=192: the model is ahead; H=336: validation on every 3rd window only
    assert notes[0].startswith("note: H=96: the closed-form linear + cycle map") and "(0.6508)" in notes[0]
    assert "(0.6827)" in notes[0]


def test_linear_beats_naive_on_a_smooth_series():
    t = np.arange(800)
    values = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 50)], 1)
    s = D.Series("toy", pd.date_range("2020", periods=800, freq="h"), values, ["a", "OT"], "OT")
    prep = D.prepare(s, L, H)
    ref = R.reference_metrics(prep)
    assert ref["linear"]["mse"] < 1e-6 < ref["naive"]["mse"]  # a sum of sinusoids is linearly predictable
    assert ref["linear"]["skill_vs_naive"] == pytest.approx(1.0, abs=1e-5)
    ms = D.prepare(s, L, H, "MS")  # scored on the target only, shared map fitted on every variable
    assert R.naive_metrics(ms)["mse"] == pytest.approx(
        np.mean((np.lib.stride_tricks.sliding_window_view(ms.data[ms.borders["test"][0]:, -1].double().numpy(),
                                                          L + H)[:, L:] -
                 np.lib.stride_tricks.sliding_window_view(ms.data[ms.borders["test"][0]:, -1].double().numpy(),
                                                          L + H)[:, L - 1:L]) ** 2), rel=1e-9)


def test_the_linear_fit_is_kept_per_prepared_series_and_not_shared_with_its_residual(small_csv):
    prep = D.prepare(D.load(str(small_csv)), 48, 24)
    first = R.fit_linear(prep)
    assert R.fit_linear(prep) is first and prep.linear_fit is first
    other_alphas = R.fit_linear(prep, alphas=(0.0,))  # not the default alphas: fitted afresh, cache untouched
    assert other_alphas is not first and prep.linear_fit is first
    resid = D.remove_cycle(prep, D.fit_cycle(prep, 24))
    assert resid.linear_fit is None
    fitted = R.fit_linear(resid)
    assert fitted is not first and not np.allclose(fitted.weight, first.weight)
    fresh = D.prepare(D.load(str(small_csv)), 48, 24)
    np.testing.assert_array_equal(R.fit_linear(fresh).weight, first.weight)  # the cache changes no result
