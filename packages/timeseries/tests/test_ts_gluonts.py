"""gluonts adapter: FFNetEstimator trains, works with make_evaluation_predictions + Evaluator, round-trips."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("gluonts")
from ffnet_ts.gluonts import FFNetEstimator  # noqa: E402
from gluonts.dataset.common import ListDataset  # noqa: E402
from gluonts.dataset.pandas import PandasDataset  # noqa: E402
from gluonts.evaluation import Evaluator, make_evaluation_predictions  # noqa: E402
from gluonts.model.predictor import Predictor  # noqa: E402

H, CONTEXT = 12, 48
TINY = dict(dim=8, kernel_size=7, small_kernel=3)


def _series(n=240, k=3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return [np.sin(2 * np.pi * t / 24 + i) * (1 + i) + 5 + 0.1 * rng.standard_normal(n) for i in range(k)]


def _estimator(tmp_path, **kw):
    trainer = {"max_epochs": 2, "default_root_dir": str(tmp_path), "logger": False, "enable_progress_bar": False,
               "enable_model_summary": False, "accelerator": "cpu"}
    trainer.update(kw.pop("trainer_kwargs", {}))
    return FFNetEstimator(prediction_length=H, context_length=CONTEXT, batch_size=16, num_batches_per_epoch=3,
                          trainer_kwargs=trainer, **TINY, **kw)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_train_evaluate_and_round_trip(tmp_path):
    start = pd.Period("2021-01-01 00:00", "h")
    full = _series()
    train = ListDataset([{"start": start, "target": s[:-H]} for s in full], freq="h")
    test = ListDataset([{"start": start, "target": s, "item_id": str(i)} for i, s in enumerate(full)], freq="h")
    torch.manual_seed(0)
    predictor = _estimator(tmp_path, distr_output=None).train(train, validation_data=train)  # point forecasts

    forecast_it, ts_it = make_evaluation_predictions(test, predictor, num_samples=100)
    forecasts, tss = list(forecast_it), list(ts_it)
    assert len(forecasts) == 3 and forecasts[0].samples.shape == (1, H)  # a point forecast: one sample
    assert forecasts[0].start_date == start + len(full[0]) - H
    agg, per_item = Evaluator()(tss, forecasts)
    # gluonts' MSE == ours, computed independently from the raw arrays
    ours = np.mean([np.mean((f.mean - s[-H:]) ** 2) for f, s in zip(forecasts, full)])
    assert agg["MSE"] == pytest.approx(ours, rel=1e-5)
    assert np.isfinite(agg["mean_wQuantileLoss"]) and len(per_item) == 3

    path = tmp_path / "predictor"
    path.mkdir()
    predictor.serialize(path)
    restored = Predictor.deserialize(path)
    again = list(restored.predict(train))
    first = list(predictor.predict(train))
    for a, b in zip(first, again):
        np.testing.assert_allclose(a.samples, b.samples, rtol=1e-6)


def test_float64_pandas_dataset_and_checkpointing_quirk(tmp_path):
    """environment.md §6: float64 frames and enable_checkpointing=False both break plain gluonts estimators."""
    idx = pd.date_range("2021-01-01", periods=240, freq="h")
    df = pd.DataFrame({"target": _series(k=1)[0].astype(np.float64)}, index=idx)
    ds = PandasDataset(df, target="target")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = _estimator(tmp_path, trainer_kwargs={"enable_checkpointing": False, "max_epochs": 1},
                         distr_output=None)
    assert any("enable_checkpointing" in str(w.message) for w in caught)
    predictor = est.train(ds)
    predictor2 = est.train(ds)  # the estimator's trainer kwargs survive a first train()
    fc = next(iter(predictor.predict(ds)))
    assert fc.samples.shape == (1, H) and np.isfinite(fc.samples).all()
    assert next(iter(predictor2.predict(ds))).samples.shape == (1, H)


def test_multivariate_items(tmp_path):
    start = pd.Period("2021-01-01 00:00", "h")
    target = np.stack(_series(k=3))  # (M, T)
    ds = ListDataset([{"start": start, "target": target}], freq="h", one_dim_target=False)
    predictor = _estimator(tmp_path, target_dim=3).train(ds)
    fc = next(iter(predictor.predict(ds)))
    assert fc.samples.shape == (1, H, 3)


def test_distribution_output_quantiles_round_trip_and_explicit_sampler(tmp_path):
    """The default for univariate items (distr_output="auto" = MinDFStudentTOutput(5)): real quantiles, a forecast the
    Evaluator scores, an exact round trip; an explicitly passed gluonts object (here a sampler) validates
    (string annotations used to fail)."""
    from gluonts.torch.model.forecast import DistributionForecast
    from gluonts.transform import ExpectedNumInstanceSampler

    start = pd.Period("2021-01-01 00:00", "h")
    full = _series()
    train = ListDataset([{"start": start, "target": s[:-H]} for s in full], freq="h")
    test = ListDataset([{"start": start, "target": s} for s in full], freq="h")
    torch.manual_seed(0)
    est = _estimator(tmp_path, train_sampler=ExpectedNumInstanceSampler(num_instances=1.0, min_future=H))
    predictor = est.train(train)
    forecasts, tss = (list(it) for it in make_evaluation_predictions(test, predictor))
    fc = forecasts[0]
    assert isinstance(fc, DistributionForecast) and fc.mean.shape == (H,)
    assert type(est.distr_output).__name__ == "MinDFStudentTOutput" and est.distr_output.min_df == 5.0
    assert float(fc.distribution.base_dist.df.min()) > 5.0
    lo, med, hi = fc.quantile(0.1), fc.quantile(0.5), fc.quantile(0.9)
    assert np.all(lo < med) and np.all(med < hi)  # a spread, not a point
    agg, _ = Evaluator()(tss, forecasts)
    assert np.isfinite(agg["mean_wQuantileLoss"]) and np.isfinite(agg["MSE"])

    path = tmp_path / "predictor"
    path.mkdir()
    predictor.serialize(path)
    restored = Predictor.deserialize(path)
    for a, b in zip(predictor.predict(train), restored.predict(train)):
        np.testing.assert_allclose(a.quantile(0.9), b.quantile(0.9), rtol=1e-6)


@pytest.mark.parametrize("min_df", [None, 5.0, 30.0])
def test_distribution_loss_is_the_student_t_nll(min_df):
    """The module's loss against torch.distributions.StudentT on loc + scale * t(df, mu, sigma) by hand, for
    gluonts' StudentTOutput (df > 2) and ours with a floor on df."""
    from ffnet_ts.gluonts import FFNetTSModel, MinDFStudentTOutput
    from gluonts.torch.distributions import StudentTOutput

    torch.manual_seed(0)
    out = StudentTOutput() if min_df is None else MinDFStudentTOutput(min_df)
    m = FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs=TINY, distr_output=out)
    m.eval()  # dropout off: the two forward passes below must agree
    past = torch.randn(4, CONTEXT) * 3 + 10
    future = torch.randn(4, H) * 3 + 10
    observed = torch.ones(4, H)
    observed[0, -2:] = 0  # missing values are not scored
    (df, mu, sigma), loc, scale = m.distribution_args(past)
    assert loc.shape == scale.shape == (4, 1) and df.shape == (4, H)
    assert float(df.min()) > (min_df or 2.0)
    torch.testing.assert_close(loc[:, 0], past.mean(1))
    base = torch.distributions.StudentT(df, mu, sigma)
    nll = -(base.log_prob((future - loc) / scale) - torch.log(scale))  # change of variables
    ref = (nll * observed).sum() / observed.sum()
    got = m.loss(past, torch.ones_like(past), future, observed)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_min_df_student_t_is_gluonts_student_t_shifted_in_df():
    """Same arguments as gluonts' StudentTOutput.domain_map, but df shifted by min_df - 2; min_df < 2 refused."""
    from ffnet_ts.gluonts import MinDFStudentTOutput
    from gluonts.torch.distributions import StudentTOutput

    raw = [torch.randn(5, 7, 1) * 3 for _ in range(3)]
    df0, loc0, scale0 = StudentTOutput.domain_map(*raw)
    df, loc, scale = MinDFStudentTOutput(6.5).domain_map(*raw)
    torch.testing.assert_close(df, df0 + 4.5)
    torch.testing.assert_close(loc, loc0)
    torch.testing.assert_close(scale, scale0)
    assert list(MinDFStudentTOutput().args_dim) == ["df", "loc", "scale"]
    with pytest.raises(ValueError, match="min_df must be >= 2"):
        MinDFStudentTOutput(1.5)


def test_distribution_output_refuses_multivariate_items():
    from gluonts.torch.distributions import StudentTOutput

    with pytest.raises(ValueError, match="univariate"):
        FFNetEstimator(prediction_length=H, target_dim=3, distr_output=StudentTOutput())
    with pytest.raises(ValueError, match="'auto', None or a DistributionOutput"):
        FFNetEstimator(prediction_length=H, distr_output="student-t")


def test_predict_leaves_the_callers_autograd_mode_alone(tmp_path):
    """gluonts' predict() yields from inside torch.no_grad(): a partly consumed generator used to switch
    autograd off for the caller (it broke 59 later tests of this suite once)."""
    from ffnet_ts.gluonts import FFNetPredictor

    start = pd.Period("2021-01-01 00:00", "h")
    ds = ListDataset([{"start": start, "target": s} for s in _series(k=20)], freq="h")  # 2 batches of 16
    predictor = _estimator(tmp_path, trainer_kwargs={"max_epochs": 1}).train(ds)
    assert isinstance(predictor, FFNetPredictor)
    it = predictor.predict(ds)
    first = next(it)
    assert torch.is_grad_enabled()  # while the generator is suspended
    assert np.isfinite(first.mean).all()
    with torch.no_grad():  # a caller's own mode is kept too
        next(it)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    rest = list(it)  # the second batch is computed inside a later next(): still without autograd
    assert len(rest) == 18 and torch.is_grad_enabled()
    assert all(np.isfinite(f.mean).all() and np.isfinite(f.quantile(0.9)).all() for f in rest)
    it2 = predictor.predict(ds)
    next(it2)
    it2.close()
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("distr", [None, "studentt"])
def test_missing_past_values_do_not_leak_into_the_normalization(distr):
    """gluonts fills missing values with a dummy and marks them unobserved: whatever the dummy, the forecast is
    the same; with every value observed, the point path equals FFNet-TS with its own RevIN."""
    from ffnet_ts.gluonts import FFNetTSModel
    from ffnet_ts.model import FFNetTS
    from gluonts.torch.distributions import StudentTOutput

    torch.manual_seed(0)
    m = FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs=TINY,
                     distr_output=StudentTOutput() if distr else None).eval()
    past = torch.randn(3, CONTEXT) * 2 + 7
    observed = torch.ones_like(past)
    observed[:, 5:9] = 0
    observed[1, -3:] = 0
    outs = []
    for dummy in (0.0, 1e3):
        filled = torch.where(observed > 0, past, torch.full_like(past, dummy))
        with torch.no_grad():
            outs.append(m(filled, observed))
    if distr:
        for a, b in zip(outs[0][0], outs[1][0]):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(outs[0][1], outs[1][1])
        # the scale comes from the observed values only
        obs = past[0][observed[0] > 0]
        torch.testing.assert_close(outs[0][2][0, 0], torch.sqrt(obs.var(unbiased=False) + 1e-5))
    else:
        torch.testing.assert_close(outs[0], outs[1])
        ref = FFNetTS(n_vars=1, lookback=CONTEXT, horizon=H, **TINY).eval()  # RevIN inside the network
        ref.load_state_dict(m.net.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(m.point_forecast(past), ref(past.unsqueeze(-1))[..., 0])


@pytest.mark.parametrize("distr", [None, "studentt"])
def test_level_features_start_as_the_plain_network_and_break_revins_invariance(distr):
    """RevIN makes the plain network affine-equivariant: f(a*x + b) = a*f(x) + b, so it cannot see the window's
    level. The level features start at zero (an untrained model equals the plain one, weight for weight); once
    they are non-zero the forecast of a shifted window is no longer the shifted forecast. Fast path == stock ops."""
    from ffnet_ts import fastconv
    from ffnet_ts.gluonts import FFNetTSModel, MinDFStudentTOutput

    torch.manual_seed(0)
    out = MinDFStudentTOutput(5.0) if distr else None
    plain = FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs=TINY, distr_output=out).eval()
    lvl = FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs={**TINY, "level_features": True},
                       distr_output=out).eval()
    missing = lvl.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["level_embed.bias", "level_embed.weight"]
    past = torch.randn(3, CONTEXT) * 2 + 7

    def forecast(m, x):  # the point forecast, or the Student-t's location loc + scale * mu
        with torch.no_grad():
            if distr is None:
                return m.point_forecast(x)
            (_, mu, _), loc, scale = m.distribution_args(x)
            return loc + scale * mu

    torch.testing.assert_close(forecast(lvl, past), forecast(plain, past))
    a, b = 3.0, -20.0
    torch.testing.assert_close(forecast(plain, a * past + b), a * forecast(plain, past) + b, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        lvl.level_embed.weight.normal_(0, 0.5)
        lvl.level_embed.bias.normal_(0, 0.5)
    moved = forecast(lvl, a * past + b) - (a * forecast(lvl, past) + b)
    assert float(moved.abs().max()) > 1e-2
    with fastconv.stock_ops():
        ref = forecast(lvl, past)
    torch.testing.assert_close(forecast(lvl, past), ref, rtol=1e-5, atol=1e-5)


def test_level_features_learn_at_their_own_rate_are_opt_in_and_auto_follows_the_head():
    from ffnet_ts.gluonts import FFNetTSModel
    from ffnet_ts.gluonts.lightning_module import FFNetLightningModule

    est = FFNetEstimator(prediction_length=H, context_length=CONTEXT, **TINY, lr=1e-4, level_features="auto")
    module = est.create_lightning_module()
    assert module.model.level_embed is not None
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in module.model.parameters())  # every parameter, once
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in module.model.level_embed.parameters()}
    for off in (FFNetEstimator(prediction_length=H, context_length=CONTEXT, **TINY),  # the default: off
                FFNetEstimator(prediction_length=H, context_length=CONTEXT, **TINY, distr_output=None,
                               level_features="auto")):
        module = off.create_lightning_module()
        assert module.model.level_embed is None and len(module.configure_optimizers().param_groups) == 1
    point = FFNetEstimator(prediction_length=H, context_length=CONTEXT, **TINY, distr_output=None, level_features=True)
    assert point.create_lightning_module().model.level_embed is not None
    with pytest.raises(ValueError, match="level_features must be 'auto', True or False"):
        FFNetEstimator(prediction_length=H, level_features="sometimes")
    assert len(FFNetLightningModule({"prediction_length": H, "context_length": CONTEXT,
                                     "model_kwargs": {**TINY, "level_features": True}},
                                    lr=1e-4).configure_optimizers().param_groups[1]["params"]) == 2
    with pytest.raises(ValueError, match=r"level_features needs revin=True \(scaling=.std.\)"):
        FFNetTSModel(prediction_length=H, context_length=CONTEXT,
                     model_kwargs={**TINY, "revin": False, "level_features": True})


@pytest.mark.parametrize("distr", [None, "studentt"])
def test_mean_scaling_is_gluonts_mean_scaler_scale_equivariant_and_sees_the_level(distr):
    """scaling="mean": the network sees the window divided by gluonts' MeanScaler scale (mean |x|, not centred),
    and the forecast is multiplied back. So f(a*x) = a*f(x), but unlike RevIN ("std") a shift of the window is
    not a shift of the forecast: the level stays visible. scaling=None / revin=False feed the raw window."""
    from ffnet_ts.gluonts import FFNetTSModel, MinDFStudentTOutput
    from gluonts.torch.scaler import MeanScaler

    torch.manual_seed(0)
    out = MinDFStudentTOutput(5.0) if distr else None
    std = FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs=TINY, distr_output=out).eval()
    mean = FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs={**TINY, "scaling": "mean"},
                        distr_output=out).eval()
    mean.load_state_dict(std.state_dict())  # the same network: only the scaling differs
    past = torch.randn(3, CONTEXT) * 2 + 7
    observed = torch.ones_like(past)
    observed[0, :5] = 0.0  # missing values: left out of the scale

    def forecast(m, x, obs=None):
        with torch.no_grad():
            if distr is None:
                return m.point_forecast(x, obs)
            (_, mu, _), loc, scale = m.distribution_args(x, obs)
            return loc + scale * mu

    scaled, _, scale = MeanScaler(dim=1, keepdim=True)(past.unsqueeze(-1), observed.unsqueeze(-1))
    with torch.no_grad():  # the reference: gluonts' scaler around the bare network
        raw = mean.net(scaled)[..., 0]
        if distr is not None:
            raw = raw.view(3, H, -1)
            mu = mean.distr_output.domain_map(*torch.split(raw, mean.arg_sizes, dim=-1))[1]
            raw = mu
    torch.testing.assert_close(forecast(mean, past, observed), raw * scale[:, :, 0])
    a, b = 3.0, -20.0
    torch.testing.assert_close(forecast(mean, a * past), a * forecast(mean, past), rtol=1e-4, atol=1e-4)
    shifted = forecast(mean, past + b) - (forecast(mean, past) + b)
    assert float(shifted.abs().max()) > 1e-2  # not shift-equivariant: the level is part of the input
    torch.testing.assert_close(forecast(std, a * past + b), a * forecast(std, past) + b, rtol=1e-4, atol=1e-4)
    none = FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs={**TINY, "scaling": None},
                        distr_output=out).eval()
    old = FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs={**TINY, "revin": False},
                       distr_output=out).eval()
    assert none.scaling is None and old.scaling is None


def test_scaling_option_is_checked_and_turns_auto_level_features_off():
    from ffnet_ts.gluonts import FFNetTSModel

    est = FFNetEstimator(prediction_length=H, context_length=CONTEXT, **TINY, scaling="mean", level_features="auto")
    model = est.create_lightning_module().model
    assert model.scaling == "mean" and model.level_embed is None
    assert FFNetEstimator(prediction_length=H, **TINY).create_lightning_module().model.scaling == "std"  # default
    with pytest.raises(ValueError, match="scaling must be 'std', 'mean' or None"):
        FFNetEstimator(prediction_length=H, scaling="minmax")
    with pytest.raises(ValueError, match="level_features need scaling='std'"):
        FFNetEstimator(prediction_length=H, scaling="mean", level_features=True)
    with pytest.raises(ValueError, match="scaling must be one of"):
        FFNetTSModel(prediction_length=H, context_length=CONTEXT, model_kwargs={**TINY, "scaling": "max"})
