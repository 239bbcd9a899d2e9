"""Weight averaging (``TrainConfig.ema`` / ``--ema``): the average fit keeps equals one recomputed from the raw
weights after every optimizer step, the raw trajectory is unchanged by it, resume is exact, bad input refused."""

from __future__ import annotations

import pytest
import torch
from ffnet_ts import cli
from ffnet_ts import data as D
from ffnet_ts import train as T
from ffnet_ts.model import create_model
from ffnet_ts.testing import staged_csv, truncated_csv
from torch.optim.optimizer import register_optimizer_step_post_hook

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def prep(data_dir, tmp_path_factory):
    """The first 600 rows of the real ETTh1 (70/10/20 split), lookback 48, horizon 24."""
    csv = truncated_csv(staged_csv(data_dir), tmp_path_factory.mktemp("ts") / "etth1_small.csv", 600)
    return D.prepare(D.load(str(csv)), 48, 24)


def _cfg(**kw):
    base = dict(epochs=1, patience=5, batch_size=64, lr=1e-3, lr_schedule="type3", progress=False, seed=7)
    return T.TrainConfig(**{**base, **kw})


def _model(prep, seed=7):
    torch.manual_seed(seed)
    return create_model("ffnet_ts_tiny", n_vars=prep.n_vars, lookback=48, horizon=24, dropout=0.3)


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_the_kept_weights_are_the_moving_average_of_the_raw_steps(prep):
    """Record the raw parameters after every optimizer step (a global step hook, outside ``fit``), average them
    by the documented formula in float64, and compare with the weights ``fit`` leaves in the model."""
    model = _model(prep)
    init = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    snaps = []
    handle = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: snaps.append({n: p.detach().double().clone() for n, p in model.named_parameters()}))
    try:
        res = T.fit(model, prep, _cfg(ema=0.9))
    finally:
        handle.remove()
    assert res.best_epoch == 1 and len(snaps) >= 5
    avg = dict(init)
    for t, snap in enumerate(snaps):
        d = min(0.9, (1 + t) / (10 + t))
        avg = {n: d * avg[n] + (1 - d) * snap[n] for n in avg}
    kept = dict(model.named_parameters())
    for n in avg:
        torch.testing.assert_close(kept[n].double(), avg[n], rtol=1e-5, atol=1e-6)
    # and it is not simply the last raw step
    assert any(not torch.allclose(kept[n].double(), snaps[-1][n], atol=1e-6) for n in avg)
    # validation scored the average: re-scoring the kept weights gives the recorded best
    assert T.evaluate(model, prep, "val")["mse"] == pytest.approx(res.best_val_mse, rel=1e-6)


def test_the_raw_trajectory_does_not_depend_on_averaging(prep, tmp_path):
    plain, averaged = _model(prep), _model(prep)
    T.fit(plain, prep, _cfg(epochs=2), last_path=tmp_path / "plain.pt")
    T.fit(averaged, prep, _cfg(epochs=2, ema=0.95), last_path=tmp_path / "ema.pt")
    a = torch.load(tmp_path / "plain.pt", weights_only=False)
    b = torch.load(tmp_path / "ema.pt", weights_only=False)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert "ema_state_dict" in b and "ema_state_dict" not in a
    assert b["train"]["ema"] == 0.95


def test_resume_with_averaging_continues_exactly(prep, tmp_path):
    meta = {"model": {"name": "ffnet_ts_tiny"}, "data": {"n": 1}}
    straight = _model(prep)
    r0 = T.fit(straight, prep, _cfg(epochs=3, ema=0.95), meta=meta, last_path=tmp_path / "a.pt")
    T.fit(_model(prep), prep, _cfg(epochs=1, ema=0.95), meta=meta, last_path=tmp_path / "b.pt")
    resumed = _model(prep, seed=99)
    r1 = T.fit(resumed, prep, _cfg(epochs=3, ema=0.95), meta=meta, last_path=tmp_path / "b.pt", resume=True)
    assert [h["val_mse"] for h in r1.history] == [h["val_mse"] for h in r0.history]
    s0, s1 = _state(straight), _state(resumed)
    assert all(torch.equal(s0[k], s1[k]) for k in s0)


def test_bad_decay_and_mismatched_resume_are_refused(prep, tmp_path):
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(T.ConfigError, match="ema decay"):
            T.fit(_model(prep), prep, _cfg(ema=bad))
    meta = {"model": {"name": "ffnet_ts_tiny"}, "data": {"n": 1}}
    T.fit(_model(prep), prep, _cfg(), meta=meta, last_path=tmp_path / "plain.pt")
    with pytest.raises(T.ConfigError, match="without weight averaging"):
        T.fit(_model(prep), prep, _cfg(epochs=2, ema=0.9), meta=meta, last_path=tmp_path / "plain.pt", resume=True)


@pytest.mark.parametrize("text", ["1", "0", "-0.5", "2"])
def test_cli_bad_ema_is_one_line_before_any_work(small_csv, tmp_path, capsys, text):
    assert cli.main(["forecast", "--data", str(small_csv), "--ema", text, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --ema") and not (tmp_path / "o").exists()


def test_tune_passes_the_averaging_on_to_every_candidate(small_csv, tmp_path, monkeypatch):
    from ffnet_ts import tune as TU

    seen = {}

    class Stop(Exception):
        pass

    def fake_tune(view, build, base, base_cfg, **kw):
        seen["cfg"] = base_cfg
        raise Stop

    monkeypatch.setattr(TU, "tune", fake_tune)
    with pytest.raises(Stop):
        cli.main(["forecast", "--data", str(small_csv), "--lookback", "48", "--horizon", "24", "--tune", "0.1",
                  "--ema", "0.95", "--no-progress",
                  "--out", str(tmp_path / "o")])
    assert seen["cfg"].ema == 0.95

