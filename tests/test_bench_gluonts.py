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
    naive = bench.score(SeasonalNaivePredictor(prediction_length=H, season_length=1), test)
    ref = np.stack([(data[first + w * H:first + (w + 1) * H, j] - data[first + w * H - 1, j]) ** 2
                    for j in range(len(cols)) for w in range(windows)])
    assert naive["mse"] == pytest.approx(ref.mean(), rel=1e-5)
    assert naive["gluonts_MSE"] == pytest.approx(ref.mean(), rel=1e-5)  # gluonts' Evaluator agrees
    assert naive["forecasts"] == len(labels) and np.isfinite(naive["MASE"])
