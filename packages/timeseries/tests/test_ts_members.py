"""Ensembles (``ffnet-ts forecast --members``): the saved average equals the members' own forecasts averaged
(torch, ``predict`` and ONNX), member 0 is exactly the single-model run, ``auto`` spends only the budget left,
an interrupted ensemble resumes to the same result, bad input is refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from ffnet_ts import cli
from ffnet_ts import data as D
from ffnet_ts import train as T
from ffnet_ts.model import ENSEMBLE, MeanEnsemble, create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

L, H = 48, 24


def _forecast(csv, out, *extra):
    return cli.main(["forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", str(L), "--horizon",
                     str(H), "--epochs", "2", "--cycle", "off", "--blend", "off", "--no-progress", "--out", str(out),
                     *extra])


@pytest.fixture(scope="module")
def pair(small_csv, tmp_path_factory):
    """A two-member run and the single-model run with the first member's seed."""
    tmp = tmp_path_factory.mktemp("members")
    assert _forecast(small_csv, tmp / "ens", "--members", "2") == 0
    assert _forecast(small_csv, tmp / "one", "--members", "1") == 0
    return tmp / "ens", tmp / "one"


def _load(path):
    ck = T.load_checkpoint(path)
    m = create_model(ck["model"]["name"], **ck["model"]["args"])
    m.load_state_dict(ck["state_dict"])
    return m.eval(), ck


def test_mean_ensemble_is_the_average_of_its_members():
    torch.manual_seed(0)
    ens = MeanEnsemble("ffnet_ts_tiny", 3, n_vars=2, lookback=L, horizon=H).eval()
    x = torch.randn(5, L, 2)
    with torch.no_grad():
        each = np.stack([m(x).numpy() for m in ens.members])
        assert np.allclose(ens(x).numpy(), each.mean(0), atol=1e-6)
        assert not np.allclose(each[0], each[1])  # independently initialized members
    rebuilt = create_model(ENSEMBLE, member="ffnet_ts_tiny", n=3, n_vars=2, lookback=L, horizon=H)
    rebuilt.load_state_dict(ens.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), ens(x))
    with pytest.raises(ValueError, match="registered forecaster"):
        MeanEnsemble(ENSEMBLE, 2)
    with pytest.raises(ValueError, match="at least one"):
        MeanEnsemble("ffnet_ts_tiny", 0, n_vars=2)


def test_written_forecasts_are_the_members_forecasts_averaged(pair, small_csv):
    ens_dir, _ = pair
    series = D.read_csv(small_csv)
    prep = D.prepare(series, L, H)
    members = [_load(ens_dir / f"member{k}_H{H}.pt")[0] for k in range(2)]
    preds = [T.evaluate(m, prep, "test", return_predictions=True)["predictions"] for m in members]
    written = np.load(ens_dir / f"forecasts_H{H}.npz")["predictions"]
    assert np.allclose(written, (preds[0] + preds[1]) / 2, atol=1e-5)
    assert not np.allclose(preds[0], preds[1], atol=1e-3)
    m = json.loads((ens_dir / "metrics.json").read_text())["horizons"][str(H)]
    assert [r["seed"] for r in m["members"]] == [2021, 2022]
    y = prep.targets("test")
    for r, p in zip(m["members"], preds):  # each member's recorded test score is its own forecasts'
        assert r["test_mse"] == pytest.approx(float(np.square(p - y).mean()), rel=1e-5)
    assert m["mse"] == pytest.approx(float(np.square(written.astype(np.float64) - y).mean()), rel=1e-6)
    # the recorded validation MSE is the average's, and averaging cannot exceed the members' mean
    ens, ck = _load(ens_dir / f"checkpoint_H{H}.pt")
    assert ck["model"]["name"] == ENSEMBLE and ck["model"]["args"]["n"] == 2
    assert m["best_val_mse"] == pytest.approx(T.evaluate(ens, prep, "val")["mse"], rel=1e-6)
    assert m["best_val_mse"] <= np.mean([r["best_val_mse"] for r in m["members"]]) + 1e-9
    assert m["params"] == 2 * sum(p.numel() for p in members[0].parameters())


def test_first_member_is_the_single_model_run(pair):
    ens_dir, one_dir = pair
    a, _ = _load(ens_dir / f"member0_H{H}.pt")
    b, ck = _load(one_dir / f"checkpoint_H{H}.pt")
    assert ck["model"]["name"] == "ffnet_ts_tiny"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not list(one_dir.glob("member*"))  # a single model writes no member files


def test_predict_and_onnx_average_the_members(pair, small_csv, tmp_path):
    ens_dir, _ = pair

    def predict(ckpt, *extra):
        dest = tmp_path / f"{ckpt.stem}{'_'.join(extra)}.csv"
        assert cli.main(["predict", "--checkpoint", str(ckpt), "--data", str(small_csv), "--out", str(dest),
                         *extra]) == 0
        return pd.read_csv(dest).drop(columns=["date"]).to_numpy()

    each = [predict(ens_dir / f"member{k}_H{H}.pt") for k in range(2)]
    ens = predict(ens_dir / f"checkpoint_H{H}.pt")
    assert np.allclose(ens, (each[0] + each[1]) / 2, rtol=1e-4, atol=1e-4)
    ort = predict(ens_dir / f"checkpoint_H{H}.pt", "--runtime", "onnxruntime")
    assert np.allclose(ort, ens, rtol=1e-4, atol=1e-4)


def test_a_member_needs_its_best_epoch_and_one_more():
    hist = [{"seconds": s} for s in (10.0, 20.0, 30.0, 40.0)]
    assert cli._member_need(T.FitResult(0.5, 2, 4, 41.0, True, hist)) == pytest.approx(20.0 + 41.0 / 4)
    assert cli._member_need(T.FitResult(0.5, 4, 4, 41.0, False, hist)) == pytest.approx(41.0)  # at most its time
    assert cli._member_need(T.FitResult(0.5, 1, 1, 7.0, False, [])) == 7.0


def test_auto_leaves_out_a_member_that_does_not_help_on_validation(small_csv, tmp_path, monkeypatch):
    real, calls = T.fit, []

    def spoil_second(model, prep, cfg, **kw):
        calls.append(cfg.seed)
        res = real(model, prep, cfg, **kw)
        if cfg.seed == 2022:  # a member far off: averaging it in raises the validation MSE
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 3)
        return res

    monkeypatch.setattr(T, "fit", spoil_second)
    argv = ["--time-budget", "2", "--epochs", "2", "--cycle", "off", "--blend", "off", "--no-progress"]
    base = ["forecast", "--data", str(small_csv), "--model", "ffnet_ts_tiny", "--lookback", str(L), "--horizon",
            str(H), *argv]
    assert cli.main([*base, "--out", str(tmp_path / "auto")]) == 0
    assert calls == [2021, 2022]  # the second member was trained, then no third one started
    m = json.loads((tmp_path / "auto" / "metrics.json").read_text())["horizons"][str(H)]
    assert [r.get("dropped", False) for r in m["members"]] == [False, True]
    assert m["members"][1]["average_val_mse"] > m["best_val_mse"] == m["members"][0]["best_val_mse"]
    ck = T.load_checkpoint(tmp_path / "auto" / f"checkpoint_H{H}.pt")
    assert ck["model"]["name"] == "ffnet_ts_tiny"  # the single first member, as without --members
    monkeypatch.setattr(T, "fit", real)
    assert cli.main([*base, "--members", "1", "--out", str(tmp_path / "one")]) == 0
    a, b = (np.load(tmp_path / d / f"forecasts_H{H}.npz")["predictions"] for d in ("auto", "one"))
    assert np.array_equal(a, b)
    # resuming does not train the left-out member again, nor a new one
    calls.clear()
    monkeypatch.setattr(T, "fit", spoil_second)
    assert cli.main([*base, "--resume", "--out", str(tmp_path / "auto")]) == 0
    assert calls == []  # both members are listed as finished
    assert np.array_equal(np.load(tmp_path / "auto" / f"forecasts_H{H}.npz")["predictions"], b)


@pytest.mark.parametrize("seconds, left, requested, world, more", [
    ([100.0], 200.0, None, 1, True),
    ([100.0], 105.0, None, 1, False),  # the budget left must cover the slowest member and a margin
    ([100.0, 150.0], 160.0, None, 1, False),
    ([100.0], None, None, 1, False),  # no time budget (--epochs alone): a single model
    ([100.0], 1e6, None, 2, False),  # torchrun: ranks could disagree on time
    ([1.0] * cli.MAX_MEMBERS, 1e6, None, 1, False),
    ([100.0], 0.0, 3, 1, True),  # an explicit count is trained whatever the budget says
    ([100.0] * 3, 1e6, 3, 1, False),
])
def test_another_member_rule(seconds, left, requested, world, more):
    assert cli._another_member(seconds, left, requested, world) is more


def test_an_interrupted_ensemble_resumes_to_the_same_result(pair, small_csv, tmp_path, monkeypatch):
    ens_dir, _ = pair
    calls, real = [], T.fit

    def interrupt_second_member(model, prep, cfg, **kw):
        calls.append(cfg.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, prep, cfg, **kw)

    monkeypatch.setattr(T, "fit", interrupt_second_member)
    out = tmp_path / "r"
    assert _forecast(small_csv, out, "--members", "2") != 0  # "error: interrupted"
    assert json.loads((out / f"members_H{H}.json").read_text())["members"][0]["seed"] == 2021
    calls.clear()
    monkeypatch.setattr(T, "fit", lambda *a, **kw: (calls.append(a[2].seed), real(*a, **kw))[1])
    assert _forecast(small_csv, out, "--members", "2", "--resume") == 0
    assert calls == [2022]  # the finished first member is not trained again
    a = np.load(out / f"forecasts_H{H}.npz")["predictions"]
    assert np.array_equal(a, np.load(ens_dir / f"forecasts_H{H}.npz")["predictions"])


@pytest.mark.parametrize("extra, text", [
    (["--members", "0"], "--members"),
    (["--members", "two"], "--members"),
    (["--members", "3", "--tune", "0.1"], "--tune"),
])
def test_bad_members_are_one_line_before_any_work(small_csv, tmp_path, capsys, extra, text):
    out = tmp_path / "o"
    assert cli.main(["forecast", "--data", str(small_csv), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and text in err[0]
    assert not out.exists()
