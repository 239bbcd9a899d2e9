"""The --speed benchmark's reference-grid rows build the architectures the reference grid trains."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ett(load_benchmark):
    return load_benchmark("timeseries_ett")


def test_reference_rows_use_the_reference_grid_recipes(ett, load_benchmark):
    ref = load_benchmark("timeseries_reference")
    for row, model in (("patchtst_tslib", "patchtst"), ("itransformer", "itransformer")):
        arch, kwargs = ett._speed_recipe(row)
        assert arch == model
        assert kwargs == ref.recipe(model, "ETTh1", 96)[0]
    arch, kwargs = ett._speed_recipe("patchtst_tslib")
    assert kwargs["dim"] == 512  # TSLib's script, not the d_model-16 PatchTST/42 row
    assert ett._speed_recipe("patchtst")[1]["dim"] == 16


def test_unknown_speed_row_is_one_clear_error(ett):
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        ett._speed_recipe("nope")
