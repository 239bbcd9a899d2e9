"""`ffnet-ts forecast / predict / datasets`: outputs, exit code 2 on bad input, nothing overwritten."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from ffnet_ts import cli

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py



def _forecast(csv, out, *extra):
    return cli.main(["forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", "48",
                     "--horizon", "24", "--epochs", "1", "--batch-size", "128", "--no-progress", "--out", str(out),
                     *extra])


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_forecast_writes_everything_and_refuses_to_overwrite(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _forecast(small_csv, out) == 0
    printed = capsys.readouterr().out
    assert "| horizon |" in printed and "|      24 |" in printed
    names = {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())["horizons"]["24"]
    blended = {"network_H24.pt"} if m["blend"]["w"] < 1 else set()  # --blend auto moved the network aside
    assert names == {"metrics.json", "checkpoint_H24.pt", "resume_H24.pt", "forecasts_H24.npz", "forecast_H24.png",
                     *blended}
    assert m["test_windows"] == int(600 * 0.2) - 24 + 1 and m["params"] > 0 and m["train_seconds"] > 0
    f = np.load(out / "forecasts_H24.npz")
    assert f["predictions"].shape == (m["test_windows"], 24, 7) and list(f["columns"])[-1] == "OT"
    assert (out / "forecast_H24.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = _snapshot(out)
    assert _forecast(small_csv, out) == 2  # existing results: refused, untouched
    assert "already holds results" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert _forecast(small_csv, out, "--force") == 0


def test_resume_via_cli(small_csv, tmp_path):
    out = tmp_path / "r"
    assert _forecast(small_csv, out) == 0
    assert cli.main(["forecast", "--data", str(small_csv), "--model", "ffnet_ts_tiny", "--lookback", "48",
                     "--horizon", "24", "--epochs", "2", "--batch-size", "128", "--no-progress", "--out", str(out),
                     "--resume"]) == 0
    last = torch.load(out / "resume_H24.pt", weights_only=False)
    assert last["epoch"] == 2 and len(last["history"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--data", "NoSuchDataset"], "unknown dataset"),
    (["--data", "missing.csv"], "not found"),
    (["--data", "{bad}"], "non-numeric"),
    (["--data", "{short}"], "too short"),
    (["--data", "{small}", "--device", "warp9"], "unknown device"),
    (["--data", "{small}", "--horizon", "abc"], "--horizon"),
    (["--data", "{small}", "--epochs", "0"], "--epochs"),
    (["--data", "{small}", "--model", "nope"], "unknown --model"),
    (["--data", "{small}", "--resume"], "--resume"),
    (["--data", "{small}", "--time-budget", "0"], "--time-budget"),
    (["--data", "{small}", "--tune", "-2"], "--tune"),
    (["--data", "{small}", "--tune", "--model", "dlinear"], "--tune"),
    (["--data", "{small}", "--tune", "2", "--time-budget", "3"], "budget once"),
    (["--data", "{small}", "--grad-checkpointing", "1"], "--grad-checkpointing"),
    (["--data", "{small}", "--grad-checkpointing", "4", "--model", "dlinear"], "--grad-checkpointing"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(small_csv, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,a,b\n2021-01-01,1,x\n2021-01-02,2,y\n")
    short = tmp_path / "short.csv"
    df = pd.read_csv(small_csv, nrows=100)
    df.to_csv(short, index=False)
    argv = [a.format(bad=bad, short=short, small=small_csv) for a in argv]
    out = tmp_path / "out"
    code = cli.main(["forecast", "--lookback", "48", "--horizon", "24", "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_argparse_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["forecast"])
    assert e.value.code == 2


def test_help_states_the_default_budget(capsys):
    with pytest.raises(SystemExit):
        cli.main(["forecast", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"time-based, {cli.DEFAULT_TIME_BUDGET:g} minutes of training" in text
    assert "about 10 minutes wall for the whole default run on 2 CPU cores" in text
    assert f"patience {cli.DEFAULT_PATIENCE}" in text and f"at most {cli.DEFAULT_MAX_EPOCHS} epochs" in text
    assert "--time-budget" in text and "--tune" in text


def _synthetic_csv(path, rows=400, seed=0):
    """Three noisy sinusoids, daily: small enough that the default budget is never the limit."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    df = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=rows, freq="D")})
    for i, period in enumerate((7, 10, 12)):
        df[f"v{i}"] = np.sin(2 * np.pi * t / period) + 0.3 * rng.standard_normal(rows)
    df.to_csv(path, index=False)
    return path


def test_default_budget_trains_until_early_stopping(tmp_path, capsys):
    csv = _synthetic_csv(tmp_path / "syn.csv")
    out = tmp_path / "run"
    # no --epochs / --time-budget: the default (time-based) budget; the tiny variant keeps the test fast
    assert cli.main(["forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", "48", "--horizon",
                     "24", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["budget"] == {"epoch_cap": cli.DEFAULT_MAX_EPOCHS, "time_budget_s": cli.DEFAULT_TIME_BUDGET * 60,
                                 "tuned": False}
    m = metrics["horizons"]["24"]
    assert m["stop_reason"] == "early_stopping" and m["stopped_early"]
    assert m["epochs_run"] == m["best_epoch"] + cli.DEFAULT_PATIENCE < cli.DEFAULT_MAX_EPOCHS
    assert m["train_config"]["time_budget"] == cli.DEFAULT_TIME_BUDGET * 60
    assert m["train_config"]["loss"] == "mse"  # the reference's loss stays the default
    assert "early stopping" in capsys.readouterr().out


def test_loss_option_reaches_training_and_metrics(tmp_path):
    csv = _synthetic_csv(tmp_path / "syn.csv", rows=200)
    out = tmp_path / "run"
    assert cli.main(["forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", "24", "--horizon",
                     "12", "--epochs", "1", "--loss", "mae", "--no-progress", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())["horizons"]["12"]
    assert m["train_config"]["loss"] == "mae"
    with pytest.raises(SystemExit) as e:
        cli.main(["forecast", "--data", str(csv), "--loss", "l3", "--out", str(tmp_path / "bad")])
    assert e.value.code == 2 and not (tmp_path / "bad").exists()


def test_grad_checkpointing_option_reaches_training(tmp_path, monkeypatch):
    from ffnet_ts import model as M

    csv = _synthetic_csv(tmp_path / "syn.csv", rows=200)
    sliced = []
    real = M.FFNetTSBlock._sliced_channel_mixer
    monkeypatch.setattr(M.FFNetTSBlock, "_sliced_channel_mixer", lambda self, x: sliced.append(1) or real(self, x))
    out = tmp_path / "run"
    assert cli.main(["forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", "24", "--horizon",
                     "12", "--epochs", "1", "--grad-checkpointing", "4", "--blend", "off", "--no-progress",
                     "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())["horizons"]["12"]
    assert m["train_config"]["grad_checkpointing"] == 4 and sliced and np.isfinite(m["mse"])


def test_precision_option_reaches_training_and_refuses_emulated_bf16(tmp_path, monkeypatch, capsys):
    from ffnet_ts import accel

    csv = _synthetic_csv(tmp_path / "syn.csv", rows=200)
    argv = ["forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", "24", "--horizon", "12",
            "--epochs", "1", "--precision", "bf16", "--no-progress"]
    monkeypatch.setattr(accel, "cpu_bf16_native", lambda: False)
    assert cli.main([*argv, "--out", str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "native bf16" in err[0] and not (tmp_path / "bad").exists()
    monkeypatch.setattr(accel, "cpu_bf16_native", lambda: True)
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())["horizons"]["12"]
    assert m["train_config"]["precision"] == "bf16"


@pytest.mark.parametrize("argv, budget", [
    ([], (cli.DEFAULT_MAX_EPOCHS, cli.DEFAULT_TIME_BUDGET * 60)),
    (["--epochs", "100"], (100, None)),  # a fixed recipe runs in full
    (["--time-budget", "2"], (cli.DEFAULT_MAX_EPOCHS, 120.0)),
    (["--time-budget", "2", "--epochs", "5"], (5, 120.0)),  # --epochs caps the time budget
    (["--tune"], (cli.DEFAULT_MAX_EPOCHS, cli.DEFAULT_TIME_BUDGET * 60)),
    (["--tune", "3"], (cli.DEFAULT_MAX_EPOCHS, 180.0)),
    (["--tune", "--epochs", "20"], (20, cli.DEFAULT_TIME_BUDGET * 60)),
])
def test_budget_resolution(argv, budget):
    args = cli.build_parser().parse_args(["forecast", "--data", "x", *argv])
    assert cli._budget(args) == budget


@pytest.mark.parametrize("members, expected", [
    ("1", [20.0, 25.0, 40.0]),  # 60/3, then (60-10)/2, then (60-20)/1
    # --members auto: H12 20 s, one member (10 s left < 1.1 x 10); H24 (60-10)/2 = 25 s, a second member with
    # the 15 s left; H36 60-30 = 30 s, a second member with 20 s
    ("auto", [20.0, 25.0, 15.0, 30.0, 20.0]),
])
def test_time_budget_is_shared_by_the_horizons(small_csv, tmp_path, monkeypatch, members, expected):
    from ffnet_ts import train as T

    budgets, real = [], T.fit

    def spy(model, prep, cfg, **kw):
        budgets.append(cfg.time_budget)
        res = real(model, prep, cfg, **kw)
        res.train_seconds = 10.0  # pretend every model trained for 10 s
        return res

    monkeypatch.setattr(T, "fit", spy)
    assert cli.main(["forecast", "--data", str(small_csv), "--model", "ffnet_ts_tiny", "--lookback", "48",
                     "--horizon", "12,24,36", "--time-budget", "1", "--epochs", "1", "--members", members,
                     "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert budgets == pytest.approx(expected)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())["horizons"]
    assert [len(m[h].get("members", [None])) for h in ("12", "24", "36")] == ([1, 1, 1] if members == "1" else
                                                                               [1, 2, 2])
    assert m["24"]["train_seconds"] == pytest.approx(10.0 if members == "1" else 20.0)


def test_predict_forecasts_past_the_last_timestamp(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _forecast(small_csv, out) == 0
    dest = tmp_path / "future.csv"
    args = ["predict", "--checkpoint", str(out / "checkpoint_H24.pt"), "--data", str(small_csv), "--out", str(dest)]
    assert cli.main(args) == 0
    fc = pd.read_csv(dest, parse_dates=["date"])
    hist = pd.read_csv(small_csv, parse_dates=["date"])
    assert len(fc) == 24 and list(fc.columns) == list(hist.columns)
    assert fc["date"].iloc[0] == hist["date"].iloc[-1] + pd.Timedelta("1h")
    assert (fc["date"].diff().dropna() == pd.Timedelta("1h")).all()
    # in original units: the forecast level is near the recent level of each series
    assert np.all(np.abs(fc["OT"].to_numpy() - hist["OT"].iloc[-48:].mean()) < 10 * hist["OT"].std())
    before = dest.read_bytes()
    assert cli.main(args) == 2 and dest.read_bytes() == before  # no overwrite without --force
    assert cli.main([*args, "--force"]) == 0
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(small_csv)]) == 2
    wrong = tmp_path / "wrong.csv"
    pd.read_csv(small_csv).drop(columns=["HUFL"]).to_csv(wrong, index=False)
    assert cli.main(["predict", "--checkpoint", str(out / "checkpoint_H24.pt"), "--data", str(wrong)]) == 2
    assert "HUFL" in capsys.readouterr().err


def test_predict_to_stdout(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _forecast(small_csv, out) == 0
    capsys.readouterr()
    assert cli.main(["predict", "--checkpoint", str(out / "checkpoint_H24.pt"), "--data", str(small_csv)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("date,") and len(lines) == 25


def test_datasets_lists_the_registry(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("FFNET_DATA_DIR", str(data_dir))
    assert cli.main(["datasets"]) == 0
    text = capsys.readouterr().out
    assert "ETTh1" in text and "Traffic" in text and "not verified" in text


def test_default_threads_use_only_idle_cores(monkeypatch):
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert cli._default_threads(2) == 2
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (7.5, 0.0, 0.0))
    assert cli._default_threads(2) == 1
