"""FFNetEstimator against gluonts' own DLinearEstimator and PatchTSTEstimator, the gluonts way.

What a gluonts user would run to decide between them: every variable of an ETT subset is a univariate item,
standardized with the train split's mean and std (so the MSE is comparable across items); every estimator trains
on the train split (the first 12 months) for the same ``--epochs`` x ``--batches-per-epoch`` sampled batches of
``--batch-size`` windows, with its own defaults otherwise (gluonts' DLinear and PatchTST: lr 1e-3;
FFNetEstimator: lr 1e-4; no validation, no early stopping); FFNetEstimator runs twice: as the point forecaster
(MSE) and with ``distr_output=StudentTOutput()`` (NLL, the distribution gluonts' DLinear and PatchTST use by
default). Forecasts are made for non-overlapping test windows (``distance = horizon``) over the test split (the
last 4 months) with ``gluonts.dataset.split``, and scored by ``gluonts.evaluation.Evaluator`` on the forecasts'
means. gluonts' seasonal naive forecasts (season 1 = repeat the last value, and season 24) are scored on the
same windows. Seeds: ``--seeds`` (each model, each seed, one fresh training).

    FFNET_DATA_DIR=../shared/data nice -n 10 uv run python benchmarks/timeseries_gluonts.py --threads 1
    # one table from the rows of several runs (e.g. a model added later, run alone with --models ... --name ...)
    uv run python benchmarks/timeseries_gluonts.py --combine results/a.json results/b.json --name timeseries_gluonts
    # the picture: median and 10-90 % band of the three probabilistic estimators on two test windows
    FFNET_DATA_DIR=../shared/data uv run python benchmarks/timeseries_gluonts.py --plot ETTh2 --seeds 1

Results: ``results/timeseries_gluonts.{json,md}``. Not the long-horizon protocol (that is every window,
multivariate input, ``timeseries_reference.py``): gluonts trains on sampled windows of univariate items.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import RESULTS, environment, save

warnings.filterwarnings("ignore", module="gluonts")
warnings.filterwarnings("ignore", module="lightning")
warnings.filterwarnings("ignore", category=RuntimeWarning)  # gluonts' Evaluator casts NaN-free arrays noisily


def items(name: str, lookback: int, horizon: int, split_name: str = "test"):
    """(train dataset, test template, windows per item, item ids) of ``name``'s standardized variables;
    ``split_name="val"`` gives the validation months' windows instead (for choosing settings)."""
    from ffnet_ts import data as D
    from gluonts.dataset.common import ListDataset
    from gluonts.dataset.split import split

    prep = D.prepare(D.load(name), lookback, horizon)
    freq = prep.series.freq or pd.infer_freq(prep.series.dates[:10])
    start = pd.Period(prep.series.dates[0], freq=freq)
    values = prep.data.numpy().astype(np.float32)  # (T, C), train-only standardization
    _, test_end = prep.borders[split_name]
    train_end = prep.borders["train"][1]
    test_first = prep.borders[split_name][0] + lookback  # first forecast step of the protocol's split
    ds = ListDataset([{"start": start, "target": values[:test_end, j], "item_id": c}
                      for j, c in enumerate(prep.columns)], freq=freq)
    train = ListDataset([{"start": start, "target": values[:train_end, j], "item_id": c}
                         for j, c in enumerate(prep.columns)], freq=freq)
    windows = (test_end - test_first - horizon) // horizon + 1
    _, template = split(ds, offset=test_first - test_end)
    return train, template.generate_instances(prediction_length=horizon, windows=windows, distance=horizon), \
        windows, list(prep.columns)


def estimator(model: str, horizon: int, lookback: int, a, root: str):
    trainer = dict(max_epochs=a.epochs, accelerator="cpu", enable_progress_bar=False, logger=False,
                   enable_model_summary=False, default_root_dir=root)
    common = dict(prediction_length=horizon, context_length=lookback, batch_size=a.batch_size,
                  num_batches_per_epoch=a.batches_per_epoch, trainer_kwargs=trainer)
    if model == "FFNetEstimator":  # the point forecaster (MSE)
        from ffnet_ts.gluonts import FFNetEstimator
        return FFNetEstimator(distr_output=None, **common)
    if model == "FFNetEstimator (StudentT)":  # gluonts' plain Student-t (df > 2), the default until session 27
        from ffnet_ts.gluonts import FFNetEstimator
        from gluonts.torch.distributions import StudentTOutput
        return FFNetEstimator(distr_output=StudentTOutput(), **common)
    if model in (LEVEL_POINT_FFNET, LEVEL_FFNET, NO_LEVEL_FFNET):  # the level-feature pairs of session 29
        from ffnet_ts.gluonts import FFNetEstimator, MinDFStudentTOutput
        return FFNetEstimator(distr_output=None if model == LEVEL_POINT_FFNET else MinDFStudentTOutput(5.0),
                              level_features=model != NO_LEVEL_FFNET, **common)
    if model in (MEAN_SCALED_FFNET, MEAN_SCALED_POINT_FFNET):  # gluonts' MeanScaler instead of RevIN (session 30)
        from ffnet_ts.gluonts import FFNetEstimator, MinDFStudentTOutput
        return FFNetEstimator(distr_output=None if model == MEAN_SCALED_POINT_FFNET else MinDFStudentTOutput(5.0),
                              scaling="mean", **common)
    if _min_df(model) is not None:  # e.g. "... df>5)": MinDFStudentTOutput(5)
        from ffnet_ts.gluonts import FFNetEstimator, MinDFStudentTOutput
        return FFNetEstimator(distr_output=MinDFStudentTOutput(_min_df(model)), **common)
    if model == "DLinearEstimator":
        from gluonts.torch.model.d_linear import DLinearEstimator
        return DLinearEstimator(**common)
    if model == "PatchTSTEstimator":
        from gluonts.torch.model.patch_tst import PatchTSTEstimator
        return PatchTSTEstimator(patch_len=16, stride=8, **common)
    raise ValueError(model)


def by_item(err: np.ndarray, context: np.ndarray, names: list[str]) -> dict:
    """Per item (windows are item-major): MSE over its windows, and MSE over three kinds of context window:
    flat (context std < 1e-3, e.g. no rain at all), and the rest split at the item's median context std into
    calm and volatile. Keys: item -> {"mse", "flat", "calm", "volatile", "n_flat", "n_calm", "n_volatile"}."""
    n = len(names)
    err2 = (err ** 2).reshape(n, -1, err.shape[-1]).mean(axis=2)  # (items, windows)
    sd = context.std(axis=1).reshape(n, -1)
    out = {}
    for j, name in enumerate(names):
        flat = sd[j] < 1e-3
        cut = np.median(sd[j][~flat]) if (~flat).any() else 0.0
        kinds = {"flat": flat, "calm": ~flat & (sd[j] <= cut), "volatile": ~flat & (sd[j] > cut)}
        out[name] = {"mse": float(err2[j].mean()),
                     **{k: (float(err2[j][m].mean()) if m.any() else None) for k, m in kinds.items()},
                     **{f"n_{k}": int(m.sum()) for k, m in kinds.items()}}
    return out


def score(predictor, test, names: list[str] | None = None, lookback: int | None = None) -> dict:
    """Scores of ``predictor`` on ``test``; with the item ``names`` (and ``lookback``) also ``per_item``
    (see ``by_item``)."""
    from gluonts.evaluation import Evaluator

    forecasts = list(predictor.predict(test.input))
    # the whole history up to the window's end: the Evaluator scores the forecast's span of it and takes MASE's
    # seasonal error from the part before it
    truths = [pd.Series(np.concatenate([inp["target"], lab["target"]]),
                        index=pd.period_range(inp["start"], periods=len(inp["target"]) + len(lab["target"]),
                                              freq=inp["start"].freq))
              for inp, lab in zip(test.input, test.label)]
    agg, _ = Evaluator(quantiles=(0.1, 0.5, 0.9), num_workers=0)(truths, forecasts)
    # scored on the means (FFNet-TS is a point forecaster)
    err = np.stack([f.mean - np.asarray(lab["target"]) for f, lab in zip(forecasts, test.label)])  # (windows*items, H)
    extra = {}
    if names is not None:
        context = np.stack([np.asarray(inp["target"])[-(lookback or err.shape[1]):] for inp in test.input])
        extra["per_item"] = by_item(err, context, names)
    return {"mse": float((err ** 2).mean()), "mae": float(np.abs(err).mean()), "gluonts_MSE": agg["MSE"],
            "ND": agg["ND"], "NRMSE": agg["NRMSE"], "MASE": agg["MASE"], "mean_wQuantileLoss":
            agg["mean_wQuantileLoss"], "coverage_80": agg["Coverage[0.9]"] - agg["Coverage[0.1]"],
            "forecasts": len(forecasts), **extra}


def run_model(model: str, name: str, seed: int, a, train, test, cols: list[str] | None = None) -> dict:
    import lightning.pytorch as pl

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # after its import: a checkpoint line per epoch
    pl.seed_everything(seed, workers=True, verbose=False)
    with tempfile.TemporaryDirectory() as root:
        est = estimator(model, a.horizon, a.lookback, a, root)
        t = time.perf_counter()
        predictor = est.train(train)
        train_s = time.perf_counter() - t
    params = sum(p.numel() for p in predictor.prediction_net.parameters())
    return {"dataset": name, "model": model, "seed": seed, "train_seconds": round(train_s, 1), "params": params,
            **score(predictor, test, cols, a.lookback)}


def run_naive(season: int, name: str, a, test, cols: list[str] | None = None) -> dict:
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    pred = SeasonalNaivePredictor(prediction_length=a.horizon, season_length=season)
    return {"dataset": name, "model": f"seasonal naive ({season})", "seed": None, "train_seconds": 0.0,
            "params": 0, **score(pred, test, cols, a.lookback)}


def plot_fans(name: str, a, train, test, cols: list[str], path: Path, windows=(0, 15)) -> dict:
    """PNG: for the target item (OT, else the last) and two test windows, the truth and each probabilistic
    estimator's median with its 10-90 % band (one training per model, seed ``a.seeds[0]``). Returns the plotted
    arrays per (model, window) so a test can check them."""

    import lightning.pytorch as pl
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ffnet.fileio import save_figure

    item = cols.index("OT") if "OT" in cols else len(cols) - 1
    n_windows = len(list(test.label)) // len(cols)
    picks = [item * n_windows + w for w in windows if w < n_windows]
    inputs, labels = list(test.input), list(test.label)
    models = [DEFAULT_FFNET, "DLinearEstimator", "PatchTSTEstimator"]
    drawn = {}
    fig, axes = plt.subplots(len(picks), len(models), figsize=(4.2 * len(models), 2.8 * len(picks)), squeeze=False,
                             sharey="row")
    for j, model in enumerate(models):
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        pl.seed_everything(a.seeds[0], workers=True, verbose=False)
        with tempfile.TemporaryDirectory() as root:
            predictor = estimator(model, a.horizon, a.lookback, a, root).train(train)
        forecasts = list(predictor.predict([inputs[k] for k in picks]))
        for i, (k, f) in enumerate(zip(picks, forecasts)):
            ax = axes[i, j]
            hist, truth = np.asarray(inputs[k]["target"])[-a.lookback:], np.asarray(labels[k]["target"])
            t_hist, t_fut = np.arange(-a.lookback, 0), np.arange(a.horizon)
            lo, med, hi = f.quantile(0.1), f.quantile(0.5), f.quantile(0.9)
            drawn[(model, k)] = dict(truth=truth, lo=lo, med=med, hi=hi)
            ax.plot(t_hist, hist, color="0.4", lw=1)
            ax.plot(t_fut, truth, color="C0", lw=1.2, label="truth")
            ax.fill_between(t_fut, lo, hi, color="C3", alpha=0.25, lw=0, label="10-90 %")
            ax.plot(t_fut, med, color="C3", lw=1.2, label="median")
            cover = float(np.mean((truth >= lo) & (truth <= hi)))
            ax.set_title(f"{model}, window {k - item * n_windows}: {100 * cover:.0f} % in band", fontsize=8)
            ax.axvline(0, color="0.8", lw=0.8)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{name} {cols[item]} (standardized), H={a.horizon}: median and 10-90 % band, seed {a.seeds[0]}",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return drawn


DEFAULT_FFNET = "FFNetEstimator (StudentT, df>5)"  # distr_output="auto" for univariate items
NO_LEVEL_FFNET = "FFNetEstimator (StudentT, df>5, no level features)"  # = the default (level features are opt-in)
LEVEL_FFNET = "FFNetEstimator (StudentT, df>5, level features)"
LEVEL_POINT_FFNET = "FFNetEstimator (level features)"  # the point forecaster with level_features=True
MEAN_SCALED_FFNET = "FFNetEstimator (StudentT, df>5, mean scaling)"  # scaling="mean" (session 30)
MEAN_SCALED_POINT_FFNET = "FFNetEstimator (mean scaling)"
MODELS = ["FFNetEstimator", LEVEL_POINT_FFNET, DEFAULT_FFNET, LEVEL_FFNET, NO_LEVEL_FFNET, "FFNetEstimator (StudentT)",
          MEAN_SCALED_FFNET, MEAN_SCALED_POINT_FFNET, "DLinearEstimator", "PatchTSTEstimator"]


def _min_df(name: str) -> float | None:
    """The floor N of "FFNetEstimator (StudentT, df>N)"; None for any other name."""
    prefix = "FFNetEstimator (StudentT, df>"
    if name.startswith(prefix) and name.endswith(")"):
        try:
            return float(name[len(prefix):-1])
        except ValueError:
            return None
    return None


def model_name(name: str) -> str:
    """argparse type: one of MODELS, or the Student-t head with another floor, e.g. "FFNetEstimator (StudentT, df>10)"."""
    if name in MODELS or (_min_df(name) or 0.0) >= 2:
        return name
    raise argparse.ArgumentTypeError(f"unknown model {name!r}; choose from {MODELS} "
                                     "(or 'FFNetEstimator (StudentT, df>N)' with N >= 2)")


def table(rows: list[dict], a) -> str:
    split = getattr(a, "split", "test")
    lines = [f"gluonts-native comparison: univariate standardized items, lookback {a.lookback}, horizon {a.horizon}, "
             f"{a.epochs} epochs x {a.batches_per_epoch} batches of {a.batch_size}, gluonts defaults otherwise; "
             f"non-overlapping {split} windows; mean +- std over seeds {a.seeds}; {a.threads} thread(s).", "",
             "| data | model | MSE | MAE | ND | MASE | mean wQL | 80 % interval coverage | MSE vs DLinear | train s | "
             "params |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ds in a.datasets:
        groups: dict[str, list[dict]] = {}
        for r in rows:
            if r["dataset"] == ds:
                groups.setdefault(r["model"], []).append(r)
        ref = statistics.mean(r["mse"] for r in groups.get("DLinearEstimator", [])) if "DLinearEstimator" in groups \
            else None

        def ms(rs, k, fmt="{:.3f}"):
            v = [r[k] for r in rs]
            return fmt.format(statistics.mean(v)) + (f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else "")
        for m, rs in groups.items():
            mse = statistics.mean(r["mse"] for r in rs)
            lines.append(f"| {ds} | {m} | {ms(rs, 'mse')} | {ms(rs, 'mae')} | {ms(rs, 'ND')} | {ms(rs, 'MASE')} | "
                         f"{ms(rs, 'mean_wQuantileLoss')} | "
                         f"{ms(rs, 'coverage_80', '{:.2f}') if all('coverage_80' in r for r in rs) else '–'} | "
                         f"{f'{mse / ref:.3f}x' if ref else '–'} | "
                         f"{statistics.mean(r['train_seconds'] for r in rs):.0f} | {rs[0]['params']:,} |")
    lines.append("")
    counts = {ds: next((r["forecasts"] for r in rows if r["dataset"] == ds), 0) for ds in a.datasets}
    per_ds = (f"{next(iter(counts.values()), 0)} forecasts per model and dataset" if len(set(counts.values())) <= 1
              else "Forecasts per model: " + ", ".join(f"{ds} {n}" for ds, n in counts.items()))
    lines.append(f"{per_ds} (items x windows). "
                 "MSE / MAE: over every forecast step, standardized units; ND, MASE, mean wQL: gluonts' Evaluator; "
                 "80 % interval coverage: the share of true values between the 0.1 and 0.9 quantiles "
                 "(Coverage[0.9] - Coverage[0.1]; 0.80 when calibrated) "
                 "(FFNetEstimator: `distr_output=None`, a point forecaster, so its quantiles all equal its mean and its "
                 "wQL is its ND; FFNetEstimator (StudentT, df>5): `MinDFStudentTOutput(5)`, the estimator's "
                 "default for univariate items since session 27; FFNetEstimator (StudentT): gluonts' "
                 "`StudentTOutput()` (df > 2), the default before). Level features (session 29, opt-in): only in the rows "
                 "named 'level features'; the 'no level features' row is the default, run again.")
    if any("per_item" in r for r in rows):
        lines += ["", *item_table(rows, a)]
    return "\n".join(lines) + "\n"


def item_table(rows: list[dict], a) -> list[str]:
    """Per item and model (mean over seeds): MSE over all windows, and over the volatile half (context std above
    the item's median; flat windows, context std < 1e-3, are neither calm nor volatile)."""
    lines = ["Per item: MSE over all windows / over the volatile windows (context std above the item's median). "
             "Counts: flat / calm / volatile windows; flat = context std < 1e-3 (e.g. no rain at all)."]
    for ds in a.datasets:
        rs = [r for r in rows if r["dataset"] == ds and "per_item" in r]
        if not rs:
            continue
        models = list(dict.fromkeys(r["model"] for r in rs))
        lines += ["", f"**{ds}**", "", "| item | windows | " + " | ".join(models) + " |",
                  "|---|---|" + "---:|" * len(models)]
        items_ = list(rs[0]["per_item"])
        for it in items_:
            first = rs[0]["per_item"][it]
            cells = []
            for m in models:
                got = [r["per_item"][it] for r in rs if r["model"] == m]
                vol = [g["volatile"] for g in got if g["volatile"] is not None]
                cells.append(f"{statistics.mean(g['mse'] for g in got):.3f} / "
                             + (f"{statistics.mean(vol):.3f}" if vol else "–"))
            lines.append(f"| {it} | {first['n_flat']} / {first['n_calm']} / {first['n_volatile']} | "
                         + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["ETTh1", "ETTh2"])
    ap.add_argument("--models", nargs="+", default=MODELS, type=model_name, metavar="MODEL",
                    help=f"default: {MODELS}; also 'FFNetEstimator (StudentT, df>N)' for another floor N")
    ap.add_argument("--split", choices=["test", "val"], default="test",
                    help="val: score on the validation months instead (for choosing settings; never test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--lookback", type=int, default=96)
    ap.add_argument("--horizon", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batches-per-epoch", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="timeseries_gluonts")
    ap.add_argument("--plot", default=None, metavar="DATASET",
                    help="no table: train the three probabilistic estimators once on DATASET and draw their "
                         "median and 10-90 %% band for two test windows of its target (results/<name>.png)")
    ap.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                    help="no training: one table from the rows of these result files (same settings required; "
                         "seeds may differ, e.g. seeds added by a later run)")
    a = ap.parse_args(argv)
    if a.combine:
        payloads = [json.loads(Path(f).read_text()) for f in a.combine]
        keys = ("lookback", "horizon", "epochs", "batches_per_epoch", "batch_size")
        for p, f in zip(payloads[1:], a.combine[1:]):
            if any(p["args"][k] != payloads[0]["args"][k] for k in keys) or \
                    p["args"].get("split", "test") != payloads[0]["args"].get("split", "test"):
                raise SystemExit(f"--combine: {f} was run with other settings than {a.combine[0]} ({keys}, split)")
        rows = [r for p in payloads for r in p["rows"]]
        seen = {}
        for r in rows:  # a model run in several files keeps its first file's rows
            seen.setdefault((r["dataset"], r["model"], r["seed"]), r)
        rows = list(seen.values())
        for k in keys:
            setattr(a, k, payloads[0]["args"][k])
        a.seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})  # e.g. more seeds run later
        a.datasets = list(dict.fromkeys(r["dataset"] for r in rows))
        a.threads = payloads[0]["args"]["threads"]
        a.split = payloads[0]["args"].get("split", "test")
        save(a.name, {"env": environment(), "args": vars(a), "combined_from": a.combine, "rows": rows}, table(rows, a))
        return
    torch.set_num_threads(a.threads)
    if a.plot:
        train, test, _, cols = items(a.plot, a.lookback, a.horizon)
        out = RESULTS / f"{a.name}.png"
        plot_fans(a.plot, a, train, test, cols, out)
        print(out)
        return
    rows = []
    for name in a.datasets:
        train, test, windows, cols = items(name, a.lookback, a.horizon, a.split)
        print(f"{name}: {len(cols)} items x {windows} {a.split} windows", flush=True)
        for season in (1, 24):
            rows.append(run_naive(season, name, a, test, cols))
            print(json.dumps({k: rows[-1][k] for k in ("dataset", "model", "mse", "mae")}), flush=True)
        for model in a.models:
            for seed in a.seeds:
                rows.append(run_model(model, name, seed, a, train, test, cols))
                print(json.dumps({k: rows[-1][k] for k in ("dataset", "model", "seed", "mse", "mae", "train_seconds")}),
                      flush=True)
    save(a.name, {"env": environment(), "args": vars(a), "rows": rows}, table(rows, a))


if __name__ == "__main__":
    main()
