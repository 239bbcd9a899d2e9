"""The gluonts-native benchmark scores the protocol's test months, and its MSE is the Evaluator's."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gluonts")


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("timeseries_gluonts")


def test_windows_tile_the_protocol_test_split_and_naive_matches_numpy(bench, data_dir):
    from ffnet_ts import data as D
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    L = H = 96
    _, test, windows, cols = bench.items("ETTh1", L, H)
    prep = D.prepare(D.load("ETTh1"), L, H)
    first = prep.borders["test"][0] + L
    assert windows == (prep.borders["test"][1] - first) // H == 30  # 2880 test rows, non-overlapping
    labels, inputs = list(test.label), list(test.input)
    assert len(labels) == len(cols) * windows
    data = prep.data.numpy()
    # item j, window w forecasts rows first + w*H ... + H of column j, from everything before it
    for k in (0, windows - 1, len(labels) - 1):
        j, w = divmod(k, windows)
        s = first + w * H
        np.testing.assert_array_equal(labels[k]["target"], data[s:s + H, j])
        assert len(inputs[k]["target"]) == s
    naive = bench.score(SeasonalNaivePredictor(prediction_length=H, season_length=1), test, cols, L)
    ref = np.stack([(data[first + w * H:first + (w + 1) * H, j] - data[first + w * H - 1, j]) ** 2
                    for j in range(len(cols)) for w in range(windows)])
    assert naive["mse"] == pytest.approx(ref.mean(), rel=1e-5)
    per_item = ref.reshape(len(cols), windows, H).mean(axis=(1, 2))
    for j, c in enumerate(cols):  # per item, from the same windows
        got = naive["per_item"][c]
        assert got["mse"] == pytest.approx(per_item[j], rel=1e-5)
        assert got["n_flat"] + got["n_calm"] + got["n_volatile"] == windows
        sd = np.array([data[first + w * H - L:first + w * H, j].std() for w in range(windows)])
        volatile = sd > np.median(sd[sd >= 1e-3])
        assert got["volatile"] == pytest.approx(ref[j * windows:(j + 1) * windows][volatile].mean(), rel=1e-5)
    assert naive["gluonts_MSE"] == pytest.approx(ref.mean(), rel=1e-5)  # gluonts' Evaluator agrees
    assert naive["forecasts"] == len(labels) and np.isfinite(naive["MASE"])


def test_combine_merges_runs_with_the_same_settings_and_refuses_others(bench, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(bench, "save", lambda name, payload, table: saved.update(payload=payload, table=table))
    saved: dict = {}
    args = dict(lookback=96, horizon=96, epochs=30, batches_per_epoch=50, batch_size=32, seeds=[1], threads=1)
    row = dict(dataset="ETTh1", seed=1, mse=0.4, mae=0.4, ND=0.5, MASE=0.9, mean_wQuantileLoss=0.3,
               train_seconds=1.0, params=10, forecasts=210)
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps({"args": args, "rows": [dict(row, model="DLinearEstimator")]}))
    b.write_text(json.dumps({"args": args, "rows": [dict(row, model="FFNetEstimator (StudentT)", mse=0.38)]}))
    bench.main(["--combine", str(a), str(b), "--name", "x"])
    lines = saved["table"].splitlines()
    assert any("| ETTh1 | DLinearEstimator | 0.400 |" in ln and "1.000x" in ln for ln in lines)
    assert any("FFNetEstimator (StudentT) | 0.380 |" in ln and "0.950x" in ln for ln in lines)
    c.write_text(json.dumps({"args": dict(args, epochs=10), "rows": []}))
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--combine", str(a), str(c)])
    c.write_text(json.dumps({"args": dict(args, split="val"), "rows": []}))  # validation rows never mix with test
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--combine", str(a), str(c)])


def test_model_names_and_the_student_t_floor(bench):
    import argparse

    assert bench.model_name("FFNetEstimator (StudentT, df>10)") == "FFNetEstimator (StudentT, df>10)"
    for bad in ("FFNetEstimator (StudentT, df>1)", "FFNetEstimator (StudentT, df>x)", "NBEATS"):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown model"):
            bench.model_name(bad)
    a = argparse.Namespace(batch_size=8, batches_per_epoch=2, epochs=1)
    est = bench.estimator("FFNetEstimator (StudentT, df>10)", 24, 48, a, "/tmp")
    assert est.distr_output.min_df == 10.0
    from ffnet_ts.gluonts import FFNetEstimator

    default = FFNetEstimator(prediction_length=24)  # the benchmark's DEFAULT_FFNET is the estimator's default
    assert repr(bench.estimator(bench.DEFAULT_FFNET, 24, 48, a, "/tmp").distr_output) == repr(default.distr_output)


def test_fan_plot_draws_ordered_bands_on_the_target_item(bench, data_dir, tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    a = SimpleNamespace(lookback=96, horizon=96, epochs=1, batches_per_epoch=2, batch_size=8, seeds=[1])
    train, test, windows, cols = bench.items("ETTh2", 96, 96)
    png = tmp_path / "fan.png"
    drawn = bench.plot_fans("ETTh2", a, train, test, cols, png)
    labels = list(test.label)
    ot = cols.index("OT")
    assert {k for _, k in drawn} == {ot * windows, ot * windows + 15}
    for (model, k), d in drawn.items():
        np.testing.assert_array_equal(d["truth"], labels[k]["target"])
        assert np.all(d["lo"] <= d["med"]) and np.all(d["med"] <= d["hi"]), model
    with Image.open(png) as im:
        assert im.format == "PNG"


def test_by_item_splits_flat_calm_and_volatile_contexts(bench):
    names = ["rain", "temp"]
    context = np.zeros((2 * 4, 8))  # item-major: 4 windows per item
    context[1] = [0, 0, 0, 0, 0, 0, 0, 5.0]  # rain: one spike, two flat windows, one small wiggle
    context[2, :4] = 0.1
    for w in range(4):  # temp: contexts of increasing spread
        context[4 + w] = np.linspace(-1, 1, 8) * (w + 1)
    err = np.arange(8, dtype=float)[:, None] * np.ones((8, 3))  # window k's error is k
    got = bench.by_item(err, context, names)
    assert (got["rain"]["n_flat"], got["rain"]["n_calm"], got["rain"]["n_volatile"]) == (2, 1, 1)
    assert got["rain"]["flat"] == pytest.approx((0 + 9) / 2) and got["rain"]["volatile"] == 1.0
    assert got["rain"]["calm"] == 4.0 and got["rain"]["mse"] == pytest.approx((0 + 1 + 4 + 9) / 4)
    assert got["temp"]["flat"] is None and got["temp"]["volatile"] == pytest.approx((36 + 49) / 2)
