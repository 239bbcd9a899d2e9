"""`--tune`: successive halving on validation only — deterministic for a seed, resumable, blind to test."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from ffnet_ts import cli
from ffnet_ts import data as D
from ffnet_ts import train as T
from ffnet_ts import tune as TU
from ffnet_ts.model import create_model

L, H = 48, 24
# a fixed speed measurement pins the plan (the real one is timed, so it would vary with the machine's load)
CALIBRATION = {"train_window_s": 1e-4, "val_window_s": 2e-5}
SPACE = {"ffn_ratio": (2, 4), "dropout": (0.1, 0.3), "head_dropout": (0.0,), "lr": (1e-3, 3e-3),
         "batch_size": (32, 64)}
BASE = {"ffn_ratio": 4, "dropout": 0.3, "head_dropout": 0.0, "lr": 1e-3, "batch_size": 64}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def prep():
    rng = np.random.default_rng(0)
    t = np.arange(420)
    values = np.stack([np.sin(2 * np.pi * t / p) + 0.3 * rng.standard_normal(len(t)) for p in (7, 12, 24)], 1)
    s = D.Series("syn", pd.date_range("2021-01-01", periods=len(t), freq="h"), values, ["a", "b", "OT"], "OT")
    return D.prepare(s, L, H)


class RowsGuard(dict):
    """``borders`` of a split object that raises if anything asks for the test split."""

    def __getitem__(self, split):
        if split == "test":
            raise AssertionError("the search touched the test split")
        return super().__getitem__(split)


def guarded(prep: D.Prepared) -> D.Prepared:
    """Train + validation only: test rows are cut off (indexing them raises) and ``borders['test']`` raises."""
    end = prep.borders["val"][1]
    return dataclasses.replace(prep, data=prep.data[:end].clone(),
                               borders=RowsGuard(train=prep.borders["train"], val=prep.borders["val"]))


def _build(prep):
    def build(config):
        margs = {"n_vars": prep.n_vars, "lookback": L, "horizon": H, "ffn_ratio": config["ffn_ratio"],
                 "dropout": config["dropout"], "head_dropout": config["head_dropout"]}
        return create_model("ffnet_ts_tiny", **margs), margs
    return build


def _tune(prep, out, seed=3, **kw):
    cfg = T.TrainConfig(patience=3, lr_schedule="type3", device="cpu", progress=False)
    return TU.tune(guarded(prep), _build(prep), BASE, cfg, budget_s=600.0, out_dir=out, model_name="ffnet_ts_tiny",
                   data_meta={"name": "syn"}, space=SPACE, seed=seed, max_epochs=8, calibration=CALIBRATION, **kw)


_FIRST = {}


@pytest.fixture
def first(prep, tmp_path_factory, one_thread):
    """One reference search, shared by the tests (run inside a test, after one_thread has applied)."""
    if "run" not in _FIRST:
        _FIRST["run"] = _tune(prep, tmp_path_factory.mktemp("tune") / "a")
    return _FIRST["run"]


def test_the_guard_really_raises(prep):
    g = guarded(prep)
    with pytest.raises(AssertionError, match="test split"):
        T.evaluate(torch.nn.Identity(), g, "test")
    with pytest.raises(IndexError):  # test rows do not exist in the guarded data
        D.gather_windows(g.data, prep.borders["test"][0], torch.tensor([prep.windows("test") - 1]), L, H)
    view = TU.search_view(prep)  # what the CLI hands the search
    assert len(view.data) == prep.borders["val"][1]
    with pytest.raises(TU.TestSplitAccess):
        view.windows("test")


def test_tiny_budget_search_is_deterministic_and_never_touches_test(prep, first, tmp_path):
    again = _tune(prep, tmp_path / "b")  # same seed, new directory
    assert again.config == first.config and again.candidate == first.candidate
    assert _scores(again.table) == _scores(first.table)  # every validation score of every rung, bit for bit
    assert _equal_state(again.model, first.model)
    # the successive-halving shape: 9 configurations (the base first) -> 3 after 2 epochs -> 1 after 6
    plan = first.state["plan"]
    assert (plan["n_configs"], plan["eta"], plan["rung_epochs"]) == (9, 3, [2, 6])
    assert {k: first.table[0][k] for k in BASE} == BASE and len(first.table) == 9
    assert len({tuple(r[k] for k in BASE) for r in first.table}) == 9
    assert sum("val_mse_1" in r for r in first.table) == 3 and sum("val_mse_final" in r for r in first.table) == 1
    rung0 = sorted(first.table, key=lambda r: (r["val_mse_0"], r["id"]))
    assert {r["id"] for r in rung0[:3]} == {r["id"] for r in first.table if "val_mse_1" in r}  # the best third
    finalists = [r for r in first.table if "val_mse_1" in r]
    chosen = [r for r in first.table if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["val_mse_final"] <= chosen[0]["val_mse_1"]
    assert chosen[0]["val_mse_1"] == min(r["val_mse_1"] for r in finalists)  # the best finalist continues
    # the survivor anneals: a cosine from the chosen lr to 0 over the epochs after the last rung (6), up to
    # the cap (8), since the budget left (minutes) covers far more than that at the measured epoch time
    assert first.state["final"]["lr_schedule"] == "cosine" and first.state["final"]["schedule_offset"] == 6
    assert (first.train_config.lr_schedule, first.train_config.schedule_offset, first.train_config.epochs) == (
        "cosine", 6, 8)
    assert first.train_config.patience > 8  # no early stop inside the annealed stage: it runs to its end
    lrs = [h["lr"] for h in first.fit.history]
    assert len(lrs) == 8 and first.config["lr"] > lrs[6] > lrs[7] and lrs[7] < 0.1 * first.config["lr"]
    # and each rung anneals too, restarting at the candidate's lr: rung 0 = epochs 1-2, rung 1 = epochs 3-6
    assert lrs[0] > lrs[1] < lrs[2] > lrs[3] > lrs[4] > lrs[5] < lrs[6] and lrs[5] < 0.1 * first.config["lr"]
    # another seed draws other candidates
    assert TU.sample_configs(SPACE, BASE, 4, seed=4) != TU.sample_configs(SPACE, BASE, 4, seed=3)
    assert TU.sample_configs(SPACE, BASE, 4, seed=3)[0] == BASE
    assert {k: first.table[1][k] for k in BASE} == {**BASE, "lr": 3e-3}  # the base's other lr


def test_candidates_after_the_base_are_its_other_learning_rates():
    space = {**SPACE, "lr": (1e-4, 3e-4, 1e-3)}
    base = {**BASE, "lr": 1e-4}
    three = TU.sample_configs(space, base, 3, seed=0)
    assert three == [base, {**base, "lr": 1e-3}, {**base, "lr": 3e-4}]  # farthest lr first
    assert TU.sample_configs(space, base, 2, seed=0) == three[:2]
    assert TU.sample_configs(space, {**base, "lr": 3e-4}, 3, seed=0)[1:] == [  # 1e-3 is farther (x3.3 vs x3)
        {**base, "lr": 1e-3}, {**base, "lr": 1e-4}]
    many = TU.sample_configs(space, base, 9, seed=5)
    assert many[:3] == three and len({tuple(sorted(c.items())) for c in many}) == 9
    assert many[3:] != TU.sample_configs(space, base, 9, seed=6)[3:]  # the seed draws the rest
    # a pinned lr leaves only the base and random draws
    pinned = TU.sample_configs({**space, "lr": (1e-4,)}, base, 3, seed=0)
    assert pinned[0] == base and all(c != base for c in pinned[1:])


def test_interrupted_search_resumes_to_the_same_choice(prep, first, tmp_path):
    out = tmp_path / "c"
    seen = []

    def interrupt_after_two(line):
        seen.append(line)
        if sum("rung 0" in s for s in seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tune(prep, out, log=interrupt_after_two)
    state = json.loads((out / TU.STATE_FILE).read_text())
    assert sum(bool(r) for r in state["results"].values()) == 2 and state["winner"] is None

    lines = []
    resumed = _tune(prep, out, resume=True, log=lines.append)
    assert sum("rung 0" in s for s in lines) == 9 - 2  # the two finished candidates are not retrained
    assert resumed.candidate == first.candidate and _scores(resumed.table) == _scores(first.table)
    with pytest.raises(T.ConfigError, match="other search settings"):
        _tune(prep, out, seed=4, resume=True)


def test_survivor_plan_fills_the_budget_left():
    measured = {"0": {"epochs_run": 2, "seconds": 100.0}}  # the winner's rung: 50 s per epoch
    plan = TU._final_plan(measured, remaining=500.0, max_epochs=100, anneal=True)
    assert plan == {"lr_schedule": "cosine", "epochs": 2 + int(TU.ANNEAL_FILL * 10), "schedule_offset": 2,
                    "epoch_s": 50.0}
    assert TU._final_plan(measured, remaining=5.0, max_epochs=100, anneal=True)["epochs"] == 3  # at least one
    assert TU._final_plan(measured, remaining=500.0, max_epochs=4, anneal=True)["epochs"] == 4  # the cap
    capped = TU._final_plan(measured, remaining=500.0, max_epochs=2, anneal=True)  # nothing left to anneal
    assert capped["lr_schedule"] == "base" and capped["epochs"] == 2
    off = TU._final_plan(measured, remaining=500.0, max_epochs=100, anneal=False)
    assert off["lr_schedule"] == "base" and off["epochs"] == 100


def test_cheaper_candidates_get_more_windows_for_the_same_time():
    cal = {"train_window_s": 4e-3, "val_window_s": 1e-3, "train_window_s_by_ffn_ratio": {"12": 4e-3, "2": 1e-3}}
    plan = TU.Plan(3, 3, [1], epoch_windows=1000, val_stride=1, estimated_search_s=0.0)
    assert TU.window_cost(cal, 2) == 1e-3 and TU.window_cost(cal, 12) == 4e-3
    assert TU.window_cost(cal, 7) == pytest.approx(2.5e-3)  # linear in ffn_ratio between the two measured
    windows = {r: TU.candidate_windows(plan, cal, {"ffn_ratio": r}, 100_000) for r in (2, 4, 8, 12)}
    assert windows[12] == 1000 and windows[2] == pytest.approx(4000, abs=1)
    for r, w in windows.items():  # about the same seconds per epoch for each
        assert w * TU.window_cost(cal, r) == pytest.approx(1000 * 4e-3, rel=1e-3)
    assert TU.candidate_windows(plan, cal, {"ffn_ratio": 2}, 2500) == 2500  # a full pass at most
    only_worst = {k: cal[k] for k in ("train_window_s", "val_window_s")}  # old state files: equal windows
    assert TU.candidate_windows(plan, only_worst, {"ffn_ratio": 2}, 100_000) == 1000


def test_search_trains_each_candidate_on_its_own_window_count(prep, tmp_path, monkeypatch):
    cal = {**CALIBRATION, "train_window_s_by_ffn_ratio": {"4": 1e-4, "2": 0.5e-4}}  # ffn_ratio 2: half the cost
    plan = TU.Plan(4, 2, [1, 2], epoch_windows=64, val_stride=1, estimated_search_s=1.0)
    monkeypatch.setattr(TU, "make_plan", lambda *a, **kw: plan)  # 64 windows at ffn_ratio 4: less than a pass
    seen, real_fit = {}, T.fit

    def spy_fit(model, p, cfg, **kw):
        seen.setdefault(kw["meta"]["model"]["args"]["ffn_ratio"], set()).add(cfg.epoch_windows)
        return real_fit(model, p, cfg, **kw)

    monkeypatch.setattr(T, "fit", spy_fit)
    cfg = T.TrainConfig(patience=3, lr_schedule="type3", device="cpu", progress=False)
    res = TU.tune(guarded(prep), _build(prep), BASE, cfg, budget_s=600.0, out_dir=tmp_path, model_name="ffnet_ts_tiny",
                  data_meta={"name": "syn"}, space=SPACE, seed=3, max_epochs=3, calibration=cal)
    assert prep.windows("train") > 128 and set(seen) == {2, 4}  # both ratios were drawn
    assert seen == {4: {64}, 2: {128}}  # the same seconds per epoch: twice the windows at half the cost
    assert all(r["epoch_windows"] == {4: 64, 2: 128}[r["ffn_ratio"]] for r in res.table)


def test_plan_fits_the_budget():
    cal = {"train_window_s": 1e-3, "val_window_s": 3e-4}
    plans = [TU.make_plan(b, train_windows=8449, val_windows=2785, calibration=cal) for b in (60, 300, 600, 3600)]
    for budget, plan in zip((60, 300, 600, 3600), plans):
        assert plan.epoch_windows <= 8449 and -(-2785 // plan.val_stride) <= TU.MAX_VAL_WINDOWS
        if plan.epoch_windows > 4 * 512:  # above the floor the rungs take the search share of the budget
            assert plan.estimated_search_s <= TU.SEARCH_FRACTION * budget * 1.01
    assert [p.n_configs for p in plans] == sorted(p.n_configs for p in plans)
    assert plans[-1].n_configs == 9 and plans[-1].epoch_windows == 8449  # enough time: full epochs


@pytest.mark.parametrize("blend", ["off", "auto"])
def test_cli_tune_scores_test_once_after_the_choice(tmp_path, monkeypatch, capsys, blend):
    rng = np.random.default_rng(1)
    t = np.arange(360)
    df = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=len(t), freq="D"),
                       "a": np.sin(2 * np.pi * t / 7) + 0.2 * rng.standard_normal(len(t)),
                       "OT": np.cos(2 * np.pi * t / 9) + 0.2 * rng.standard_normal(len(t))})
    csv = tmp_path / "mine.csv"
    df.to_csv(csv, index=False)
    events, real_eval, real_tune = [], T.evaluate, TU.tune

    def spy_eval(model, p, split="test", **kw):
        events.append(split)
        return real_eval(model, p, split, **kw)

    def spy_tune(*a, **kw):
        res = real_tune(*a, **kw)
        events.append("chosen")
        return res

    def spy_blend(model, other, p, split, *a, **kw):
        events.append(f"blend {split}")
        return real_blend(model, other, p, split, *a, **kw)

    real_blend = T.blend_mse
    monkeypatch.setattr(T, "evaluate", spy_eval)
    monkeypatch.setattr(T, "blend_mse", spy_blend)
    monkeypatch.setattr(TU, "tune", spy_tune)
    out = tmp_path / "run"
    # blend off also pins the schedule: an explicit --lr-schedule turns the survivor's annealing off
    schedule = ["--lr-schedule", "type3"] if blend == "off" else []
    assert cli.main(["forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", str(L), "--horizon",
                     str(H), "--tune", "0.05", "--epochs", "3", "--blend", blend, "--no-progress", "--out",
                     str(out), *schedule]) == 0
    m = json.loads((out / "metrics.json").read_text())["horizons"][str(H)]
    survivor = m["tune"]["survivor"]
    if blend == "off":
        assert survivor["lr_schedule"] == "base" and m["train_config"]["lr_schedule"] == "type3"
    elif survivor["lr_schedule"] == "cosine":  # "base" only if the rungs already reached the 3-epoch cap
        assert m["train_config"]["lr_schedule"] == "cosine"
        assert m["train_config"]["schedule_offset"] == survivor["schedule_offset"] < 3
    if blend == "off":
        assert events.count("test") == 1 and events[-2:] == ["chosen", "test"]
    else:  # the blend is chosen on validation after the search; then test: the output, and the network alone
        first = events.index("test")
        assert events[first - 2:first] == ["chosen", "blend val"] and "blend test" not in events
        assert events[first:] == ["test"] * (1 + (m["blend"]["w"] < 1))
    tuned = m["tune"]
    assert set(tuned["chosen"]) == set(TU.SEARCH_SPACE) and tuned["table"] and tuned["budget_s"] == 3.0
    assert sum(r["chosen"] for r in tuned["table"]) == 1
    assert m["model_args"]["ffn_ratio"] == tuned["chosen"]["ffn_ratio"]
    assert m["train_config"]["lr"] == tuned["chosen"]["lr"]
    printed = capsys.readouterr().out
    assert "searched on validation only" in printed and "**chosen**" in printed
    ck = T.load_checkpoint(out / "checkpoint_H24.pt")  # the chosen model is what `predict` loads
    assert ck["model"]["args"]["dropout"] == tuned["chosen"]["dropout"]
    assert cli.main(["predict", "--checkpoint", str(out / "checkpoint_H24.pt"), "--data", str(csv)]) == 0


def _equal_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _scores(table):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in table]  # wall seconds vary run to run
