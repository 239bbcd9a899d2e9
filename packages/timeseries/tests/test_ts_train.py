"""Training loop: LR schedules, seeded determinism, exact resume, early stopping with best reload, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from ffnet_ts import data as D
from ffnet_ts import train as T
from ffnet_ts.model import create_model
from ffnet_ts.testing import staged_csv, truncated_csv


@pytest.fixture(scope="module")
def prep(data_dir, tmp_path_factory):
    """The first 600 rows of the real ETTh1 (70/10/20 split), lookback 48, horizon 24."""
    csv = truncated_csv(staged_csv(data_dir), tmp_path_factory.mktemp("ts") / "etth1_small.csv", 600)
    return D.prepare(D.load(str(csv)), 48, 24)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _cfg(**kw):
    base = dict(epochs=2, patience=5, batch_size=64, lr=1e-3, lr_schedule="type3", progress=False, seed=7)
    base.update(kw)
    return T.TrainConfig(**base)


def _model(prep, seed=7):
    torch.manual_seed(seed)
    return create_model("ffnet_ts_tiny", n_vars=prep.n_vars, lookback=48, horizon=24, dropout=0.3)


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_official_schedule_reproduces_the_epoch1_quirk():
    cfg = T.TrainConfig(lr=1e-4, lr_schedule="official", epochs=10)
    lrs = [T.lr_at(cfg, e, 0, 10) for e in range(7)]
    assert lrs == pytest.approx([4e-6, 1e-4, 1e-4, 1e-4, 9e-5, 8.1e-5, 7.29e-5])
    cfg3 = T.TrainConfig(lr=1e-4, lr_schedule="type3", epochs=10)
    assert T.lr_at(cfg3, 0, 0, 10) == pytest.approx(1e-4) and T.lr_at(cfg3, 4, 0, 10) == pytest.approx(9e-5)
    one = T.TrainConfig(lr=1e-3, lr_schedule="onecycle", epochs=10)
    curve = [T.lr_at(one, e, s, 10) for e in range(10) for s in range(10)]
    assert curve[0] == pytest.approx(4e-5) and max(curve) == pytest.approx(1e-3, rel=1e-3)
    assert curve.index(max(curve)) == 29 and curve[-1] < 1e-6
    with pytest.raises(T.ConfigError):
        T.lr_at(T.TrainConfig(lr_schedule="nope"), 0, 0, 1)


def test_schedule_offset_starts_the_cosine_late():
    # the tuner's survivor: 3 epochs already trained, a cosine from lr to 0 over epochs 4-7 (4 x 10 steps)
    cos = T.TrainConfig(lr=1e-3, lr_schedule="cosine", epochs=7, schedule_offset=3)
    curve = [T.lr_at(cos, e, s, 10) for e in range(3, 7) for s in range(10)]
    full = T.TrainConfig(lr=1e-3, lr_schedule="cosine", epochs=4)  # the same curve without the offset
    assert curve == [T.lr_at(full, e, s, 10) for e in range(4) for s in range(10)]
    assert curve[0] == pytest.approx(1e-3) and curve[20] == pytest.approx(5e-4) and curve[-1] < 2e-6
    assert all(a > b for a, b in zip(curve, curve[1:]))
    # an offset at or past the cap cannot divide by zero: the last epoch is the whole schedule
    late = T.TrainConfig(lr=1e-3, lr_schedule="cosine", epochs=2, schedule_offset=5)
    assert T.lr_at(late, 1, 0, 10) == pytest.approx(1e-3)


def test_training_learns_and_is_seeded_deterministic(prep):
    before = T.evaluate(_model(prep), prep, "val")["mse"]
    m1 = _model(prep)
    r1 = T.fit(m1, prep, _cfg())
    m2 = _model(prep)
    r2 = T.fit(m2, prep, _cfg())
    m1_one = {k: v for k, v in _state(m1).items()}
    assert r1.stop_reason == "epoch_cap" and not r1.stopped_early
    assert _equal(_state(m1), _state(m2)) and r1.history == [
        {**h, "seconds": r1.history[i]["seconds"]} for i, h in enumerate(r2.history)]
    assert r1.best_val_mse < before
    m3 = _model(prep)
    T.fit(m3, prep, _cfg(seed=8, epochs=1))
    assert not _equal(m1_one, _state(m3))


def test_resume_continues_exactly(prep, tmp_path):
    straight = _model(prep)
    r_straight = T.fit(straight, prep, _cfg(epochs=2), best_path=tmp_path / "a_best.pt", last_path=tmp_path / "a_last.pt")
    meta = {"model": {"name": "ffnet_ts_tiny"}, "data": {"n": 1}}
    part = _model(prep)
    T.fit(part, prep, _cfg(epochs=1), meta=meta, best_path=tmp_path / "best.pt", last_path=tmp_path / "last.pt")
    resumed = _model(prep, seed=123)  # different init: everything must come from the resume file
    r = T.fit(resumed, prep, _cfg(epochs=2), meta=meta, best_path=tmp_path / "best.pt",
              last_path=tmp_path / "last.pt", resume=True)
    assert [h["val_mse"] for h in r.history] == [h["val_mse"] for h in r_straight.history]
    assert _equal(_state(resumed), _state(straight))
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert last["epoch"] == 2 and last["train"]["epochs"] == 2
    with pytest.raises(T.ConfigError, match="differs"):
        T.fit(_model(prep), prep, _cfg(epochs=3), meta={**meta, "data": {"n": 2}}, last_path=tmp_path / "last.pt",
              resume=True)


def test_early_stopping_reloads_the_best_epoch(prep, tmp_path, monkeypatch):
    vals = iter([0.5, 0.4, 0.45, 0.6, 0.7, 0.1])
    real = T.evaluate

    def fake_eval(model, p, split="test", **kw):
        res = real(model, p, split, **kw)
        return {**res, "mse": next(vals)} if split == "val" else res

    monkeypatch.setattr(T, "evaluate", fake_eval)
    m = _model(prep)
    r = T.fit(m, prep, _cfg(epochs=6, patience=2, batch_size=256), meta={"model": {"name": "x"}}, best_path=tmp_path / "best.pt",
              last_path=tmp_path / "last.pt")
    assert r.stopped_early and r.epochs_run == 4 and r.best_epoch == 2 and r.best_val_mse == 0.4
    assert r.stop_reason == "early_stopping"
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 2 and best["model"] == {"name": "x"} and best["train"]["patience"] == 2
    assert _equal(_state(m), best["state_dict"])  # the model ends holding epoch 2's weights
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert not _equal(last["state_dict"], best["state_dict"])


class FakeClock:
    """Stands in for ``time`` in the training module: every reading advances ``tick`` seconds."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_time_budget_starts_no_epoch_that_would_overrun(prep, tmp_path, monkeypatch):
    # three clock readings per one-step epoch (start, validation start, end): every epoch "lasts" 1 s
    monkeypatch.setattr(T, "time", FakeClock(0.5))
    cfg = _cfg(epochs=50, patience=50, batch_size=256, time_budget=3.5)
    r = T.fit(_model(prep), prep, cfg, last_path=tmp_path / "last.pt")
    # after 3 epochs 3 s are spent and a 4th (another 1 s) would end at 4 > 3.5
    assert r.stop_reason == "time_budget" and r.epochs_run == 3 and not r.stopped_early
    assert r.train_seconds == pytest.approx(3.0)

    # --resume continues the same budget: nothing left, so no new epoch ...
    again = T.fit(_model(prep), prep, cfg, last_path=tmp_path / "last.pt", resume=True)
    assert again.stop_reason == "time_budget" and again.epochs_run == 3
    # ... unless the budget is raised; an epoch cap still applies under a time budget
    more = T.fit(_model(prep), prep, _cfg(epochs=4, patience=50, batch_size=256, time_budget=10.0),
                 last_path=tmp_path / "last.pt", resume=True)
    assert more.stop_reason == "epoch_cap" and more.epochs_run == 4
    with pytest.raises(T.ConfigError, match="positive"):
        T.fit(_model(prep), prep, _cfg(time_budget=0.0))


def test_time_budget_cuts_an_epoch_longer_than_the_budget(prep, monkeypatch):
    monkeypatch.setattr(T, "time", FakeClock(1.0))  # every step "takes" 1 s
    m = _model(prep)
    modes = []
    m.register_forward_hook(lambda mod, i, o: modes.append(mod.training))
    r = T.fit(m, prep, _cfg(epochs=5, patience=5, batch_size=32, time_budget=5.5))
    assert prep.windows("train") // 32 == 10  # a full epoch would be 10 steps
    # the check before step k reads k s: the 7th step would start past 5.5 s, so 6 steps run, then validation
    assert r.stop_reason == "time_budget" and r.epochs_run == 1 and r.history[0]["steps"] == 6
    assert modes.count(True) == 6 and r.best_val_mse == r.history[0]["val_mse"]


def test_epoch_windows_caps_the_steps_per_epoch(prep):
    steps = []
    m = _model(prep)
    m.register_forward_hook(lambda mod, i, o: steps.append(mod.training))
    r = T.fit(m, prep, _cfg(epochs=2, batch_size=32, epoch_windows=100))
    assert steps.count(True) == 2 * (100 // 32) and r.stop_reason == "epoch_cap"
    full = T.evaluate(m, prep, "val")
    sub = T.evaluate(m, prep, "val", stride=5)
    n = prep.windows("val")
    assert full["windows"] == n and sub["windows"] == len(range(0, n, 5))
    preds = T.evaluate(m, prep, "val", return_predictions=True)["predictions"]
    assert T.evaluate(m, prep, "val", stride=5, return_predictions=True)["predictions"] == pytest.approx(preds[::5])


def test_checkpoint_rebuilds_the_model(prep, tmp_path):
    m = _model(prep)
    meta = {"model": {"name": "ffnet_ts_tiny", "args": dict(n_vars=prep.n_vars, lookback=48, horizon=24, dropout=0.3)}}
    T.fit(m, prep, _cfg(epochs=1), meta=meta, best_path=tmp_path / "c.pt")
    ck = T.load_checkpoint(tmp_path / "c.pt")
    rebuilt = create_model(ck["model"]["name"], **ck["model"]["args"])
    rebuilt.load_state_dict(ck["state_dict"])
    a = T.evaluate(m, prep, "test", return_predictions=True)["predictions"]
    b = T.evaluate(rebuilt, prep, "test", return_predictions=True)["predictions"]
    assert (a == b).all()


def test_bad_checkpoints_and_devices(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(T.ConfigError, match="not a readable"):
        T.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(T.ConfigError, match="not an ffnet-ts"):
        T.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(T.ConfigError):
        T.resolve_device("warp-drive")
    if not torch.cuda.is_available():
        with pytest.raises(T.ConfigError, match="CUDA"):
            T.resolve_device("cuda")
    assert T.resolve_device("cpu").type == "cpu"


@pytest.mark.gpu
def test_amp_training_step_on_cuda(prep):
    m = _model(prep)
    r = T.fit(m, prep, _cfg(epochs=1, device="cuda", amp=True))
    assert r.best_val_mse < float("inf")


def test_training_loss_is_the_configured_criterion(prep, monkeypatch):
    a, b = torch.tensor([0.0, 0.5, 3.0]), torch.tensor([0.2, -0.5, 0.0])
    d = (a - b).abs()
    assert T.training_loss("mse")(a, b).item() == pytest.approx((d ** 2).mean().item())
    assert T.training_loss("mae")(a, b).item() == pytest.approx(d.mean().item())
    huber = torch.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()
    assert T.training_loss("huber")(a, b).item() == pytest.approx(huber.item())
    with pytest.raises(T.ConfigError, match="unknown loss"):
        T.fit(_model(prep), prep, _cfg(loss="l3"))
    # one step per epoch: the logged train loss is the L1 distance between the training forward pass and the
    # targets of that step, captured independently of the loop
    seen = {}
    real_gather = T.gather_windows

    def gather(*a, **k):
        x, y = real_gather(*a, **k)
        if m.training:  # the validation pass gathers too
            seen["y"] = y.clone()
        return x, y

    m = _model(prep)
    monkeypatch.setattr(T, "gather_windows", gather)
    m.register_forward_hook(lambda mod, i, o: seen.__setitem__("out", o.detach().clone()) if mod.training else None)
    r = T.fit(m, prep, _cfg(epochs=1, batch_size=64, epoch_windows=64, loss="mae"))
    assert r.history[0]["train_loss"] == pytest.approx((seen["out"] - seen["y"]).abs().mean().item(), rel=1e-5)
    assert r.history[0]["train_loss"] != pytest.approx(((seen["out"] - seen["y"]) ** 2).mean().item(), rel=1e-3)


def test_cpu_bf16_precision_trains_under_autocast_and_evaluates_in_fp32(prep, monkeypatch):
    from ffnet_ts import accel

    with pytest.raises(T.ConfigError, match="unknown precision"):
        T.fit(_model(prep), prep, _cfg(precision="fp16"))
    monkeypatch.setattr(accel, "cpu_bf16_native", lambda: False)
    with pytest.raises(T.ConfigError, match="native bf16"):
        T.fit(_model(prep), prep, _cfg(precision="bf16"))
    # the path itself runs on any CPU (emulated bf16 is only slow); the dtypes show where autocast is on
    monkeypatch.setattr(accel, "cpu_bf16_native", lambda: True)
    m = _model(prep)
    dtypes = {"train": set(), "eval": set()}
    m.head.register_forward_hook(lambda mod, i, o: dtypes["train" if mod.training else "eval"].add(o.dtype))
    r = T.fit(m, prep, _cfg(epochs=1, batch_size=64, epoch_windows=64, precision="bf16"))
    assert dtypes["train"] == {torch.bfloat16} and dtypes["eval"] == {torch.float32}
    assert math.isfinite(r.best_val_mse) and all(p.dtype == torch.float32 for p in m.parameters())


def test_grad_checkpointing_config_slices_the_model_or_refuses(prep):
    m = _model(prep)
    res = T.fit(m, prep, _cfg(epochs=1, grad_checkpointing=4))
    assert all(b.ffn_chunks == 4 for b in m.blocks) and math.isfinite(res.best_val_mse)
    with pytest.raises(T.ConfigError, match="divide dim"):  # ffnet_ts_tiny has dim 8
        T.fit(_model(prep), prep, _cfg(epochs=1, grad_checkpointing=3))
    torch.manual_seed(0)
    dl = create_model("dlinear", n_vars=prep.n_vars, lookback=48, horizon=24)
    with pytest.raises(T.ConfigError, match="FFNet-TS"):
        T.fit(dl, prep, _cfg(epochs=1, grad_checkpointing=4))
