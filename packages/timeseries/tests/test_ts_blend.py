"""`--blend auto`: the forecaster averaged with the closed-form linear map, w chosen on validation only."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from ffnet_ts import cli
from ffnet_ts import data as D
from ffnet_ts import reference as R
from ffnet_ts import train as T
from ffnet_ts.model import BLEND, BLEND_WEIGHTS, LinearBlend, LinearMap, create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

L, H = 48, 24


@pytest.fixture(scope="module")
def small(small_csv):
    return D.prepare(D.load(str(small_csv)), L, H)


def _cycled(prep, amplitude):
    if amplitude is None:
        return prep
    cyc = D.fit_cycle(prep, 24)
    return D.remove_cycle(prep, replace(cyc, shrink=None if amplitude == "fixed" else D.CYCLE_SHRINK))


def test_linear_map_module_is_the_closed_form_map(small):
    fit = R.fit_linear(small)
    x = np.random.default_rng(0).standard_normal((5, L, 3))
    got = fit.as_module()(torch.from_numpy(x).float()).double().numpy()  # (5, H, 3)
    want = np.stack([fit.predict(x[:, :, c]) for c in range(3)], -1)  # numpy, one variable at a time
    assert np.allclose(got, want, atol=1e-4)
    assert isinstance(fit.as_module(), LinearMap) and fit.as_module().weight.shape == (L + 1, H)


@pytest.mark.parametrize("amplitude", [None, "fixed", "window"])
def test_blend_mse_ends_are_the_two_models_scored_independently(small, amplitude):
    prep = _cycled(small, amplitude)
    torch.manual_seed(0)
    net = create_model("ffnet_ts_tiny", n_vars=prep.n_vars, lookback=L, horizon=H)
    fit = R.fit_linear(prep)
    val = T.blend_mse(net, fit.as_module(), prep, "val", BLEND_WEIGHTS)
    assert set(val) == set(BLEND_WEIGHTS)
    assert val[1.0] == pytest.approx(T.evaluate(net, prep, "val")["mse"], rel=1e-6)
    assert val[0.0] == pytest.approx(fit.val_mse, rel=1e-5)  # float64 numpy scorer of reference.fit_linear
    # a middle weight: the saved LinearBlend module scored by evaluate
    blend = LinearBlend("ffnet_ts_tiny", 1, 0.25, n_vars=prep.n_vars, lookback=L, horizon=H)
    blend.net.load_state_dict(net.state_dict())
    blend.linear.load_state_dict(fit.as_module().state_dict())
    assert val[0.25] == pytest.approx(T.evaluate(blend, prep, "val")["mse"], rel=1e-5)
    # the squared error is convex in w: no blend is worse than both ends
    assert all(v <= max(val[0.0], val[1.0]) + 1e-9 for v in val.values())


def test_blend_checkpoint_round_trips_and_w0_does_not_run_the_network(small):
    fit = R.fit_linear(small)
    args = {"member": "ffnet_ts_tiny", "n": 2, "w": 0.0, "n_vars": small.n_vars, "lookback": L, "horizon": H}
    b = create_model(BLEND, **args)
    b.linear.load_state_dict(fit.as_module().state_dict())
    for p in b.net.parameters():
        p.data.fill_(float("nan"))  # would poison the output if the network ran
    x = torch.randn(3, L, small.n_vars)
    assert torch.equal(b(x), fit.as_module()(x))
    rebuilt = create_model(BLEND, **args)
    rebuilt.load_state_dict(b.state_dict())
    assert torch.equal(rebuilt.linear.weight, b.linear.weight)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        create_model(BLEND, **{**args, "w": 1.5})


def _forecast(csv, out, *extra):
    return cli.main(["forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", str(L), "--horizon",
                     str(H), "--epochs", "1", "--no-progress", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def spoiled_run(small_csv, tmp_path_factory):
    """A run whose network is made much worse than the linear map after training: validation must pick w < 1."""
    out = tmp_path_factory.mktemp("blend") / "run"
    real_fit = T.fit

    def spoil(model, *a, **kw):
        res = real_fit(model, *a, **kw)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 3)
        return res

    mp = pytest.MonkeyPatch()
    mp.setattr(T, "fit", spoil)
    torch.set_num_threads(1)
    try:
        assert _forecast(small_csv, out) == 0
    finally:
        mp.undo()
    return out


def test_cli_blend_writes_what_the_validated_blend_forecasts(spoiled_run, small_csv):
    out = spoiled_run
    m = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    b = m["blend"]
    assert b["mode"] == "auto" and b["w"] < 1.0
    assert b["w"] == min(BLEND_WEIGHTS, key=lambda w: b["val_mse"][f"{w:g}"])  # the lowest validation MSE
    ck = T.load_checkpoint(out / f"checkpoint_H{H}.pt")
    assert ck["model"]["name"] == BLEND and ck["model"]["args"]["w"] == b["w"]
    net_ck = T.load_checkpoint(out / f"network_H{H}.pt")
    assert net_ck["model"]["name"] == "ffnet_ts_tiny"

    # rebuild the written forecasts from the parts: the saved network and the numpy closed-form map
    series = D.load(str(small_csv))
    prep = D.prepare(series, L, H)
    cprep, rec = R.choose_cycle(prep)
    tprep = cprep if cprep is not None else prep
    net = create_model(net_ck["model"]["name"], **net_ck["model"]["args"])
    net.load_state_dict(net_ck["state_dict"])
    f_net = T.evaluate(net, tprep, "test", return_predictions=True)["predictions"].astype(np.float64)
    fit = R.fit_linear(tprep)
    f_lin = np.stack([R._windows(tprep, "test", c)[:, :L] @ fit.weight[:-1] + fit.weight[-1]
                      for c in tprep.out_idx], -1)
    if tprep.cycle is not None and tprep.cycle.shrink is not None:
        pytest.skip("window-amplitude cycle: the numpy residual windows are not the model's inputs")
    want = D.add_cycle(tprep, "test", b["w"] * f_net + (1 - b["w"]) * f_lin)
    written = np.load(out / f"forecasts_H{H}.npz")["predictions"]
    assert np.allclose(written, want, atol=1e-4)
    # the reported numbers are the file's, and the network alone is reported beside them
    y = prep.targets("test")
    assert m["mse"] == pytest.approx(float(np.square(written.astype(np.float64) - y).mean()), rel=1e-6)
    net_written = D.add_cycle(tprep, "test", f_net)
    assert b["network_test"]["mse"] == pytest.approx(float(np.square(net_written - y).mean()), rel=1e-5)
    if b["w"] == 0.0:  # the linear map alone: the reference row of the same space, exactly
        key = "linear_cycle" if cprep is not None else "linear"
        assert m["mse"] == pytest.approx(m["reference"][key]["mse"], rel=1e-5)
        assert m["params"] == m["reference"][key]["params"]  # the network's weights are not used
    else:
        assert m["params"] == b["network_test"]["params"] + (L + 1) * H


def test_cli_blend_predict_and_onnx_agree(spoiled_run, small_csv, tmp_path):
    pytest.importorskip("onnxruntime")
    ck = spoiled_run / f"checkpoint_H{H}.pt"
    a, b = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    assert cli.main(["predict", "--checkpoint", str(ck), "--data", str(small_csv), "--out", str(a)]) == 0
    onnx = tmp_path / "m.onnx"
    assert cli.main(["export", "--checkpoint", str(ck), "--onnx", str(onnx)]) == 0
    assert cli.main(["predict", "--checkpoint", str(onnx), "--data", str(small_csv), "--out", str(b)]) == 0
    import pandas as pd

    ta, tb = pd.read_csv(a), pd.read_csv(b)
    assert list(ta.columns) == list(tb.columns) and len(ta) == H
    assert np.allclose(ta.iloc[:, 1:].to_numpy(), tb.iloc[:, 1:].to_numpy(), rtol=1e-4, atol=1e-4)


def test_cli_blend_resume_reproduces_the_run(small_csv, tmp_path):
    """--resume on a finished blended run rebuilds the same blend (the checkpoint then holds the blend; the
    network it was built from is read from the resume state and network_H<h>.pt)."""
    out = tmp_path / "run"
    assert _forecast(small_csv, out) == 0
    first = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    before = np.load(out / f"forecasts_H{H}.npz")["predictions"]
    assert _forecast(small_csv, out, "--resume") == 0
    again = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    assert again["blend"]["w"] == first["blend"]["w"] and again["mse"] == first["mse"]
    assert np.array_equal(np.load(out / f"forecasts_H{H}.npz")["predictions"], before)
    name = T.load_checkpoint(out / f"checkpoint_H{H}.pt")["model"]["name"]
    assert name == (BLEND if first["blend"]["w"] < 1 else "ffnet_ts_tiny")


def test_cli_blend_off_keeps_the_network(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _forecast(small_csv, out, "--blend", "off") == 0
    m = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    assert "blend" not in m and not (out / f"network_H{H}.pt").exists()
    assert T.load_checkpoint(out / f"checkpoint_H{H}.pt")["model"]["name"] == "ffnet_ts_tiny"


def test_member_line_reports_the_average_not_the_blend():
    members = [{"seed": 1, "best_val_mse": 0.5, "test_mse": 0.6}, {"seed": 2, "best_val_mse": 0.52, "test_mse": 0.62}]
    e = {"members": members, "best_val_mse": 0.49, "mse": 0.55,
         "blend": {"w": 0.75, "network_test": {"mse": 0.58, "mae": 0.5}}}
    (line,) = cli._member_lines([(24, e)])
    assert "val / test MSE 0.4900 / 0.5800" in line  # the average of the members; 0.55 is the blend's
    (line,) = cli._member_lines([(24, {**e, "blend": {"w": 1.0}})])
    assert "0.4900 / 0.5500" in line
