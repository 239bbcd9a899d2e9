"""``ffnet-ts``: train/evaluate on the standard long-horizon protocol, and forecast past the end of a CSV.

    ffnet-ts forecast --data ETTh1 [--horizon 96|192|336|720|all] [--lookback 96] [--epochs N] [--out DIR]
    ffnet-ts predict --checkpoint runs/ffnet-ts/ETTh1/checkpoint_H96.pt --data new.csv [--out forecast.csv]
    ffnet-ts datasets

Bad input (missing file, unknown dataset, malformed CSV, too-short series, unusable option) prints one
``error: ...`` line and exits with code 2 before anything is written; existing results are never overwritten
without ``--force``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
from pathlib import Path

DEFAULT_TIME_BUDGET = 9.0  # minutes of training + validation; the rest of the ~10 min default run is I/O and test
DEFAULT_MAX_EPOCHS = 100  # the reference recipe's cap: with a time budget it is only a ceiling
DEFAULT_PATIENCE = 3
DEFAULT_LR = 1e-4
DEFAULT_BATCH = 128
DEFAULT_SCHEDULE = "type3"
OUTPUT_PATTERNS = ("metrics.json", "checkpoint_H*.pt", "resume_H*.pt", "forecasts_H*.npz", "forecast_H*.png",
                   "tune_H*", "member*_H*.pt", "resume_member*_H*.pt", "members_H*.json", "network_H*.pt")


class UsageError(ValueError):
    pass


def _default_threads(torch_default: int) -> int:
    """Idle cores (cpu count - 1-minute load average), at least 1, at most torch's default.

    NOTE: on a busy machine, OpenMP threads that wait for each other at every op are far slower than one
    thread (measured here: ~40x for small models at load 8 on 2 cores), so only idle cores are used.
    """
    try:
        idle = (os.cpu_count() or 1) - os.getloadavg()[0]
    except OSError:
        return torch_default
    return max(1, min(torch_default, int(idle + 0.5)))


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------------------------
# forecast
# ---------------------------------------------------------------------------------------------------------


def _parse_horizons(text: str, default: tuple[int, ...]) -> list[int]:
    if text == "all":
        return list(default)
    try:
        hs = [int(h) for h in text.split(",")]
    except ValueError:
        raise UsageError(f"--horizon must be 'all' or positive integers like 96 or 96,192 (got {text!r})") from None
    if any(h < 1 for h in hs):
        raise UsageError(f"--horizon must be positive (got {text!r})")
    return hs


def _existing_outputs(out: Path) -> list[Path]:
    return sorted(p for pat in OUTPUT_PATTERNS for p in out.glob(pat)) if out.is_dir() else []


def _data_meta(prep) -> dict:
    s = prep.series
    return {"name": s.name, "source": s.source, "columns": prep.columns, "target": s.target,
            "features": prep.features, "lookback": prep.lookback, "horizon": prep.horizon, "split": s.split,
            "freq": s.freq, "mean": [float(v) for v in prep.mean], "std": [float(v) for v in prep.std],
            "scored_columns": [prep.columns[i] for i in prep.out_idx],
            "irregular_ok": bool(s.info is not None and s.info.irregular_ok),
            "cycle": prep.cycle.to_json() if prep.cycle is not None else None}


def _int_or_zero(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _parse_cycle(text: str) -> str | int:
    if text in ("auto", "off"):
        return text
    n = _int_or_zero(text)
    if n < 2:
        raise UsageError(f"--cycle must be auto, off or a period of at least 2 rows (got {text!r})")
    return n


def _model_args(args, name: str, prep, defaults: dict) -> dict:
    kw = {"n_vars": prep.n_vars, "lookback": prep.lookback, "horizon": prep.horizon}
    if name.startswith("ffnet_ts"):
        kw.update(ffn_ratio=defaults["ffn_ratio"], dropout=defaults["dropout"], head_dropout=defaults["head_dropout"])
        if args.dropout is not None:
            kw["dropout"] = args.dropout
    return kw


def _budget(args) -> tuple[int, float | None]:
    """(epoch cap, training seconds for all horizons together or None).

    No flag: the time budget (DEFAULT_TIME_BUDGET) with DEFAULT_MAX_EPOCHS as a ceiling. ``--epochs N`` alone
    keeps the epoch-count semantics of fixed recipes (no time limit), so ``--epochs 100 --patience 20 ...``
    still runs the reference recipe in full. ``--time-budget`` (or ``--tune MINUTES``) sets the time, and
    ``--epochs`` then caps it.
    """
    tune_minutes = args.tune if args.tune is not None and args.tune > 0 else None
    if tune_minutes is not None and args.time_budget is not None:
        raise UsageError("give the budget once: --tune MINUTES or --time-budget MINUTES")
    minutes = args.time_budget if args.time_budget is not None else tune_minutes
    if minutes is None and (args.epochs is None or args.tune is not None):
        minutes = DEFAULT_TIME_BUDGET
    cap = args.epochs or DEFAULT_MAX_EPOCHS
    return cap, None if minutes is None else minutes * 60.0


def cmd_forecast(args) -> int:
    import numpy as np
    import torch
    from ffnet.fileio import atomic_write_bytes

    from . import data as D
    from . import reference as R
    from . import train as T
    from . import tune as TU
    from .model import dataset_defaults, list_models

    if args.model not in list_models():
        raise UsageError(f"unknown --model {args.model!r}; choose from {', '.join(list_models())}")
    for name, v in (("--epochs", args.epochs), ("--patience", args.patience), ("--lookback", args.lookback),
                    ("--threads", args.threads), ("--batch-size", args.batch_size)):
        if v is not None and v < 1:
            raise UsageError(f"{name} must be positive (got {v})")
    for name, v in (("--time-budget", args.time_budget), ("--tune", args.tune)):
        if v is not None and v <= 0 and not (name == "--tune" and v == TUNE_DEFAULT):
            raise UsageError(f"{name} must be a positive number of minutes (got {v:g})")
    if args.ema is not None and not 0.0 < args.ema < 1.0:
        raise UsageError(f"--ema must be a per-step decay in (0, 1), e.g. 0.99 (got {args.ema:g})")
    if args.grad_checkpointing and (args.grad_checkpointing < 2 or not args.model.startswith("ffnet_ts")):
        raise UsageError("--grad-checkpointing takes a slice count >= 2 for the FFNet-TS models "
                         f"(got {args.grad_checkpointing} with --model {args.model})")
    tuning = args.tune is not None
    if tuning and not args.model.startswith("ffnet_ts"):
        raise UsageError(f"--tune searches FFNet-TS settings; it does not apply to --model {args.model}")
    members_requested = _parse_members(args.members)
    if tuning and (members_requested or 1) > 1:
        raise UsageError("--tune trains one model with the chosen settings; leave --members at auto or 1")
    cap, budget_s = _budget(args)
    cycle_mode = _parse_cycle(args.cycle)
    torch.set_num_threads(args.threads or _default_threads(torch.get_num_threads()))
    info, device = T.setup_distributed(args.device)  # validates --device before anything is read or written
    if tuning and info.world > 1:
        raise UsageError("--tune runs in one process; launch it without torchrun")
    T.check_precision(args.precision, device)
    if device.type == "cpu":
        from .accel import keep_freed_memory

        keep_freed_memory()  # same results; activations stop page-faulting in on every step (see accel)

    series = D.load(args.data, target=args.target, irregular_ok=args.allow_irregular)
    reg = series.info
    horizons = _parse_horizons(args.horizon, reg.horizons if reg else (96, 192, 336, 720))
    lookback = args.lookback or (reg.lookback if reg else 96)
    preps = {h: D.prepare(series, lookback, h, args.features) for h in horizons}  # all checks before any write
    # the cycle decision reads train and validation only (up to 3 closed-form fits per horizon, seconds)
    cycles = {h: R.choose_cycle(p, cycle_mode, args.cycle_amplitude) for h, p in preps.items()}
    out = Path(args.out or Path("runs") / "ffnet-ts" / series.name)
    existing = _existing_outputs(out)
    if existing and not (args.force or args.resume):
        raise UsageError(f"{out} already holds results ({existing[0].name}, ...); pass --force to overwrite, "
                         f"--resume to continue, or --out DIR")
    if args.resume:
        missing = [h for h in horizons if not ((out / f"resume_H{h}.pt").is_file()
                                              or (out / f"tune_H{h}" / TU.STATE_FILE).is_file())]
        if len(missing) == len(horizons):
            raise UsageError(f"--resume: no resume_H*.pt or tune_H*/{TU.STATE_FILE} for horizon(s) "
                             f"{','.join(map(str, missing))} in {out}")
    if not reg and not tuning and info.master:
        d = dataset_defaults(None, horizons[0])
        print(f"note: {series.name} has no per-dataset defaults; using generic ones (ffn_ratio {d['ffn_ratio']}, "
              f"dropout {d['dropout']}, head_dropout {d['head_dropout']}); --tune [MINUTES] searches them on "
              f"validation", file=sys.stderr)

    metrics_path = out / "metrics.json"
    metrics = {"data": series.name, "source": series.source, "features": args.features, "target": series.target,
               "lookback": lookback, "model": args.model, "device": str(device), "world_size": info.world,
               "command": "ffnet-ts " + " ".join(sys.argv[1:]),
               "budget": {"epoch_cap": cap, "time_budget_s": budget_s, "tuned": tuning}, "horizons": {}}
    if args.resume and metrics_path.is_file():
        metrics["horizons"] = json.loads(metrics_path.read_text()).get("horizons", {})
    rows, searches = [], []
    spent = 0.0
    for i, h in enumerate(horizons):
        prep = preps[h]  # the standardized series: reference rows and every reported metric
        cprep, cycle_rec = cycles[h]
        tprep = cprep if cprep is not None else prep  # what the model sees: the series, or it minus the cycle
        if info.master:
            print(f"H={h}: " + (f"removing a {cycle_rec['period']}-row cycle, {cycle_rec['amplitude']} amplitude"
                                if cycle_rec["used"] else
                                "no cycle removed") + f" ({cycle_rec['reason']})", file=sys.stderr)
        # what is left of the budget, shared equally by the horizons still to run (an early stop passes its
        # unused time on to the longer horizons)
        share = None if budget_s is None else max(budget_s - spent, 1.0) / (len(horizons) - i)
        torch.manual_seed(args.seed)
        search, members = None, []
        if tuning:
            search = _tune_horizon(args, tprep, out, h, share, cap, device)
            model, margs, res, cfg = search.model, search.model_args, search.fit, search.train_config
            atomic_write_bytes(out / f"checkpoint_H{h}.pt",
                               (out / f"tune_H{h}" / f"cand{search.candidate:02d}_best.pt").read_bytes())
            spent += search.state["elapsed_s"]
        else:
            d = dataset_defaults(series.name if reg else None, h)
            margs = _model_args(args, args.model, tprep, d)
            model, cfg, res, members = _train_members(args, members_requested, tprep, out, h, share, cap, device,
                                                      info, margs, f"{series.name} H={h}")
            spent += res.train_seconds
        network, blend = model, None
        if args.blend == "auto":  # validation only
            model, blend = _blend_linear(args, model, tprep, cfg, device, out, h, info)
        # the test split is scored here, once, after training (and any search) has finished
        test, forecasts = _score_test(model, prep, tprep, cfg.eval_batch_size, device)
        used = _kept(members)
        if len(used) > 1:  # each member's own test score, for the record (nothing is chosen)
            for rec, m in zip(used, network.members):
                t, _ = _score_test(m, prep, tprep, cfg.eval_batch_size, device)
                rec["test_mse"], rec["test_mae"] = t["mse"], t["mae"]
        ref = R.reference_metrics(prep, "test", cycle_prep=cprep) if info.master else None
        # the parameters the written forecasts use: a w = 0 blend does not run the network
        net_params = sum(p.numel() for p in network.parameters())
        blended = blend is not None and blend["w"] < 1.0
        params = ((net_params if not blended or blend["w"] > 0.0 else 0) + (tprep.lookback + 1) * h * blended
                  + (cprep.cycle.table.size if cprep is not None else 0))
        entry = {
            "mse": test["mse"], "mae": test["mae"], "test_windows": test["windows"], "cycle": cycle_rec,
            "val_windows": prep.windows("val"), "train_windows": prep.windows("train"),
            "train_seconds": round(res.train_seconds, 2), "params": params, "best_epoch": res.best_epoch,
            "epochs_run": res.epochs_run, "stopped_early": res.stopped_early, "stop_reason": res.stop_reason,
            "best_val_mse": res.best_val_mse,
            "train_config": {k: getattr(cfg, k) for k in ("epochs", "patience", "batch_size", "lr", "lr_schedule",
                                                          "loss", "precision", "ema", "seed", "time_budget",
                                                          "schedule_offset", "epoch_windows", "val_stride",
                                                          "grad_checkpointing")},
            "model_args": margs,
        }
        if len(members) > 1:
            entry["members"] = members
        if blend is not None:
            if model is not network:  # the forecaster alone on the same windows, for the record (nothing is chosen)
                t, _ = _score_test(network, prep, tprep, cfg.eval_batch_size, device)
                blend["network_test"] = {"mse": t["mse"], "mae": t["mae"], "params": net_params + (
                    cprep.cycle.table.size if cprep is not None else 0)}
            entry["blend"] = blend
        if ref is not None:
            entry["skill_vs_naive"] = R.skill(test["mse"], ref["naive"]["mse"])
            entry["reference"] = ref
            if "network_test" in (blend or {}):
                blend["network_test"]["skill_vs_naive"] = R.skill(blend["network_test"]["mse"], ref["naive"]["mse"])
        if search is not None:
            st = search.state
            entry["tune"] = {"chosen": search.config, "candidate": search.candidate, "budget_s": share,
                             "elapsed_s": round(st["elapsed_s"], 1), "budget_exhausted": st["budget_exhausted"],
                             "plan": st["plan"], "survivor": st.get("final"), "calibration": st["calibration"],
                             "table": search.table}
            searches.append((h, search))
        metrics["horizons"][str(h)] = entry
        rows.append((h, entry))
        if info.master:
            first = prep.borders["test"][0] + prep.lookback
            target_dates = series.dates[first:first + test["windows"]].asi8
            buf = io.BytesIO()  # standardized predictions (what the metrics score) + how to undo the scaling
            np.savez_compressed(buf, predictions=forecasts, target_start_ns=target_dates,
                                columns=np.array([prep.columns[i] for i in prep.out_idx]),
                                mean=prep.mean[prep.out_idx], std=prep.std[prep.out_idx])
            atomic_write_bytes(out / f"forecasts_H{h}.npz", buf.getvalue())
            from .plot import plot_windows

            plot_windows(out / f"forecast_H{h}.png", prep, forecasts,
                         title=f"{args.model} on {series.name}, L={lookback}, H={h}: test MSE {test['mse']:.3f}")
            atomic_write_bytes(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
    if info.master:
        for h, s in searches:
            print(f"\n{args.model} settings searched on validation only for H={h} ({len(s.table)} configurations, "
                  f"{s.state['elapsed_s']:.0f}s): chose #{s.candidate}")
            print(_search_table(s.table))
        budget_text = (f"time budget {budget_s / 60:g} min, " if budget_s is not None else "") + f"epoch cap {cap}"
        print(f"\n{args.model} on {series.name} (features {args.features}, lookback {lookback}, {budget_text}; "
              f"standardized test metrics, every window scored; reference rows on the same windows)")
        print(_forecast_table(args.model, rows))
        for line in _member_lines(rows) + _validation_notes(args.model, rows):
            print(line)
        print(f"\nwrote {metrics_path} and checkpoints, forecasts, plots in {out}/")
    T.teardown_distributed(info)
    return 0


def _score_test(model, prep, tprep, batch_size: int, device):
    """(evaluate's test record with MSE / MAE of the written forecasts, the forecasts): the model forecasts
    ``tprep`` (the series, or it minus the cycle); what forecasts_H<h>.npz holds (the cycle added back,
    float32) is scored against the standardized series ``prep``."""
    import numpy as np

    from . import data as D
    from . import train as T

    t = T.evaluate(model, tprep, "test", batch_size=batch_size, device=device, return_predictions=True)
    fc = D.add_cycle(tprep, "test", t["predictions"])
    err = fc.astype(np.float64) - prep.targets("test")
    t["mse"], t["mae"] = float(np.square(err).mean()), float(np.abs(err).mean())
    return t, fc


def _blend_linear(args, model, prep, cfg, device, out: Path, h: int, info):
    """``--blend auto``: average the trained forecaster with the closed-form linear map fitted on ``prep``'s train
    windows (the table's reference row for the space the forecaster sees), w from ``model.BLEND_WEIGHTS`` with
    the lowest **validation** MSE (on a tie, the larger w).

    Returns ``(forecaster, record)``. With w < 1 the forecaster is a :class:`~ffnet_ts.model.LinearBlend`,
    saved as ``checkpoint_H<h>.pt`` (so ``predict`` and ``export`` use it), and the forecaster alone moves to
    ``network_H<h>.pt``; with w = 1 nothing changes."""
    from . import reference as R
    from . import train as T
    from .model import BLEND, BLEND_WEIGHTS, LinearBlend, MeanEnsemble

    fit = R.fit_linear(prep)
    lin = fit.as_module().to(device)
    val = T.blend_mse(model, lin, prep, "val", BLEND_WEIGHTS, batch_size=cfg.eval_batch_size, device=device)
    w = min(BLEND_WEIGHTS, key=lambda k: val[k])  # BLEND_WEIGHTS starts at 1: ties keep more of the forecaster
    rec = {"mode": "auto", "w": w, "val_mse": {f"{k:g}": v for k, v in val.items()},
           "linear_ridge_alpha": fit.alpha, "weights_tried": list(BLEND_WEIGHTS)}
    if info.master:
        print(f"H={h}: --blend auto: validation MSE {val[1.0]:.4f} for {args.model} alone, {val[0.0]:.4f} for the "
              f"closed-form linear map" + (f", {val[w]:.4f} at w = {w:g}" if 0.0 < w < 1.0 else "") + "; "
              + ("keeping the forecaster alone" if w == 1.0 else
                 "using the linear map alone (w = 0)" if w == 0.0 else f"using the blend w = {w:g}"), file=sys.stderr)
    if w == 1.0:
        return model, rec
    member, n = (model.member, len(model.members)) if isinstance(model, MeanEnsemble) else (args.model, 1)
    path = out / f"checkpoint_H{h}.pt"
    ckpt = T.load_checkpoint(path)
    if ckpt["model"]["name"] == BLEND:  # --resume of a run blended before: its forecaster's own record
        ckpt = T.load_checkpoint(out / f"network_H{h}.pt")
    margs = {k: v for k, v in ckpt["model"]["args"].items() if k not in ("member", "n")}
    blended = LinearBlend(member=member, n=n, w=w, **margs)
    blended.net.load_state_dict(model.state_dict())
    blended.linear.load_state_dict(lin.state_dict())
    blended.to(device)
    if info.master:
        T.save_atomic({**ckpt, "state_dict": model.state_dict()}, out / f"network_H{h}.pt")
        T.save_atomic({**{k: v for k, v in ckpt.items() if k != "val_mae"},
                       "model": {"name": BLEND, "args": {"member": member, "n": n, "w": w, **margs}},
                       "state_dict": blended.state_dict(), "val_mse": val[w], "blend": rec}, path)
    return blended, rec


TUNE_DEFAULT = -1.0  # `--tune` without minutes: use --time-budget or the default budget
MAX_MEMBERS = 5  # `--members auto`: at most this many
MEMBER_MARGIN = 1.1  # `--members auto` starts another member when the budget left covers the neediest one x this


def _parse_members(text: str) -> int | None:
    """``--members``: ``auto`` -> None, else a positive count."""
    if text == "auto":
        return None
    n = _int_or_zero(text)
    if n < 1:
        raise UsageError(f"--members must be 'auto' or a positive count (got {text!r})")
    return n


def _member_need(res) -> float:
    """Seconds a member like ``res`` (a FitResult) needs: to its best epoch plus one more epoch, at most what
    it took. A member cut by the budget after its best epoch keeps the same weights as one that was not."""
    if not res.history:
        return res.train_seconds
    best = res.history[res.best_epoch - 1]["seconds"]
    return min(res.train_seconds, best + res.train_seconds / len(res.history))


def _another_member(needs: list[float], left: float | None, requested: int | None, world: int) -> bool:
    """Whether to train one more ensemble member after ``len(needs)`` members that needed ``needs`` seconds each
    (:func:`_member_need`).

    ``requested``: exactly that many. ``auto`` (None): while the training budget ``left`` for this horizon
    covers the neediest member so far (x MEMBER_MARGIN), up to MAX_MEMBERS; never without a time budget
    (``--epochs N`` alone keeps a fixed recipe a single model) or under torchrun (the ranks' clocks differ)."""
    if requested is not None:
        return len(needs) < requested
    if left is None or world > 1 or len(needs) >= MAX_MEMBERS:
        return False
    return left >= MEMBER_MARGIN * max(needs)


def _train_members(args, requested: int | None, prep, out: Path, h: int, share: float | None, cap: int, device, info,
                   margs: dict, desc: str):
    """Train ``--members`` forecasters (seeds ``--seed``, ``--seed`` + 1, ...) one after another on ``prep``.

    Returns ``(model, cfg, summary FitResult, member records)``. One member is exactly the single-model run
    (same seed, files ``checkpoint_H<h>.pt`` / ``resume_H<h>.pt``). With more, each member's best weights
    are also kept in ``member<k>_H<h>.pt``, finished members are listed in ``members_H<h>.json`` (what
    ``--resume`` skips), and ``checkpoint_H<h>.pt`` finally holds the :class:`~ffnet_ts.model.MeanEnsemble`.
    Under ``auto`` a new member joins the average only if it lowers the average's validation MSE (a member
    cut short by the budget may not); otherwise it is recorded as ``dropped`` and no further member starts.
    """
    import shutil

    import torch
    from ffnet.fileio import atomic_write_bytes

    from . import train as T
    from .model import ENSEMBLE, create_model

    state_path = out / f"members_H{h}.json"
    state = (json.loads(state_path.read_text()) if args.resume and state_path.is_file() else
             {"members": [], "dropped": []})
    done, dropped = state["members"], state.get("dropped", [])
    models = []
    for rec in done:
        m = create_model(args.model, **margs)
        m.load_state_dict(T.load_checkpoint(out / rec["checkpoint"])["state_dict"])
        models.append(m.to(device))
    meta = {"model": {"name": args.model, "args": margs}, "data": _data_meta(prep)}

    def config(seed: int, budget: float | None) -> T.TrainConfig:
        return T.TrainConfig(
            epochs=cap, patience=args.patience, batch_size=args.batch_size or DEFAULT_BATCH,
            lr=args.lr or DEFAULT_LR, lr_schedule=args.lr_schedule or DEFAULT_SCHEDULE, seed=seed, device=str(device),
            loss=args.loss, precision=args.precision, ema=args.ema, amp=not args.no_amp,
            progress=not args.no_progress, time_budget=budget, grad_checkpointing=args.grad_checkpointing)

    def average(ms):
        ens = create_model(ENSEMBLE, member=args.model, n=len(ms), **margs)
        for slot, m in zip(ens.members, ms):
            slot.load_state_dict(m.state_dict())
        return ens.to(device)

    def save_state():
        if info.master:
            atomic_write_bytes(state_path, (json.dumps({"members": done, "dropped": dropped}, indent=2)
                                            + "\n").encode())

    spent = sum(r["train_seconds"] for r in done + dropped)
    val = None  # the current average's validation record (members >= 2)
    if len(models) > 1:
        val = T.evaluate(average(models), prep, "val", batch_size=config(args.seed, None).eval_batch_size,
                         device=device)
    first = None
    while not done or (not dropped and _another_member(
            [r.get("need_seconds", r["train_seconds"]) for r in done], None if share is None else share - spent, requested, info.world)):
        k = len(done)
        left = None if share is None else max(share - spent, 1.0)
        budget = left if left is None or requested is None else left / (requested - k)
        seed = args.seed + k
        if k == 1 and done[0]["checkpoint"] != f"member0_H{h}.pt":
            # the first member becomes one of several: keep its weights under its member name, and list it
            done[0]["checkpoint"] = f"member0_H{h}.pt"
            if info.master:  # (a blend saved by an earlier --blend auto moved the forecaster to network_H<h>.pt)
                first_ckpt = out / f"network_H{h}.pt"
                if not (args.resume and first_ckpt.is_file()):
                    first_ckpt = out / f"checkpoint_H{h}.pt"
                shutil.copyfile(first_ckpt, out / f"member0_H{h}.pt")
            save_state()
        if k >= 1 and info.master:
            print(f"H={h}: training ensemble member {k + 1} (seed {seed})"
                  + ("" if left is None else f", {left / 60:.1f} min of the budget left") + "; "
                  + ("--members " + str(requested) if requested else
                     "--members auto: the neediest member so far reached its best epoch and one more in "
                     f"{max(r.get('need_seconds', r['train_seconds']) for r in done) / 60:.1f} min"), file=sys.stderr)
        cfg = config(seed, budget)
        torch.manual_seed(seed)
        model = create_model(args.model, **margs)
        best, last = ((out / f"checkpoint_H{h}.pt", out / f"resume_H{h}.pt") if k == 0 else
                      (out / f"member{k}_H{h}.pt", out / f"resume_member{k}_H{h}.pt"))
        res = T.fit(model, prep, cfg, meta=meta, best_path=best, last_path=last,
                    resume=args.resume and last.is_file(), desc=desc if k == 0 else f"{desc} member {k + 1}")
        if k == 0:
            first = res
        spent += res.train_seconds
        rec = {"member": k, "seed": seed, "checkpoint": best.name, "best_val_mse": res.best_val_mse,
               "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "stop_reason": res.stop_reason,
               "train_seconds": round(res.train_seconds, 2), "need_seconds": round(_member_need(res), 2)}
        if k >= 1:
            prev = done[0]["best_val_mse"] if val is None else val["mse"]
            trial = T.evaluate(average(models + [model]), prep, "val", batch_size=cfg.eval_batch_size,
                               device=device)
            if requested is None and not trial["mse"] < prev:
                rec["average_val_mse"], rec["dropped"] = trial["mse"], True
                dropped.append(rec)
                if info.master:
                    print(f"H={h}: member {k + 1} left out: the average's validation MSE would be "
                          f"{trial['mse']:.4f}, not below {prev:.4f} without it", file=sys.stderr)
                save_state()
                continue
            val = trial
        done.append(rec)
        models.append(model)
        if k >= 1:
            save_state()
    cfg = config(args.seed, share)
    head = first or T.FitResult(done[0]["best_val_mse"], done[0]["best_epoch"], done[0]["epochs_run"],
                                done[0]["train_seconds"], done[0]["stop_reason"] == "early_stopping", [],
                                done[0]["stop_reason"])
    head = dataclasses.replace(head, train_seconds=round(sum(r["train_seconds"] for r in done + dropped), 2))
    if len(models) == 1:
        return models[0], cfg, head, done + dropped
    ens = average(models)
    if info.master:
        T.save_atomic({"format": T.CHECKPOINT_FORMAT, "model": {"name": ENSEMBLE, "args": {
            "member": args.model, "n": len(models), **margs}}, "data": meta["data"], "state_dict": ens.state_dict(),
            "val_mse": val["mse"], "val_mae": val["mae"], "members": done}, out / f"checkpoint_H{h}.pt")
    return ens, cfg, dataclasses.replace(head, best_val_mse=val["mse"], history=[]), done + dropped


def _tune_horizon(args, prep, out: Path, h: int, share: float, cap: int, device):
    import shutil

    from . import train as T
    from . import tune as TU
    from .model import create_model, dataset_defaults

    d = dataset_defaults(None, h)  # never the registry's recipe: tuning treats every dataset as new
    base = {"ffn_ratio": d["ffn_ratio"], "dropout": d["dropout"], "head_dropout": d["head_dropout"],
            "lr": DEFAULT_LR, "batch_size": DEFAULT_BATCH}
    space = dict(TU.SEARCH_SPACE)
    for key, value in (("dropout", args.dropout), ("lr", args.lr), ("batch_size", args.batch_size)):
        if value is not None:  # an explicit flag pins that setting
            space[key], base[key] = (value,), value
    tdir = out / f"tune_H{h}"
    resume = bool(args.resume and (tdir / TU.STATE_FILE).is_file())
    if not resume and tdir.exists():
        shutil.rmtree(tdir)  # only reached with --force (checked before anything is written)

    def build(config):
        margs = {"n_vars": prep.n_vars, "lookback": prep.lookback, "horizon": prep.horizon,
                 "ffn_ratio": config["ffn_ratio"], "dropout": config["dropout"],
                 "head_dropout": config["head_dropout"]}
        return create_model(args.model, **margs), margs

    base_cfg = T.TrainConfig(epochs=cap, patience=args.patience, lr_schedule=args.lr_schedule or DEFAULT_SCHEDULE,
                             seed=args.seed,
                             device=str(device), loss=args.loss, precision=args.precision, ema=args.ema,
                             amp=not args.no_amp, progress=False, grad_checkpointing=args.grad_checkpointing)
    return TU.tune(TU.search_view(prep), build, base, base_cfg, budget_s=share, out_dir=tdir,
                   model_name=args.model, data_meta=_data_meta(prep), space=space, seed=args.seed,
                   max_epochs=cap, resume=resume, anneal=args.lr_schedule is None)


def _forecast_table(model: str, rows: list) -> str:
    lines = ["| horizon | model | MSE | MAE | skill vs naive | test windows | train s | params | epochs (best) | "
             "stopped by |",
             "|--------:|:------|-------:|-------:|------:|------:|------:|------:|------:|:------|"]
    for h, e in rows:
        n = len(_kept(e.get("members", [])))
        name = f"{model} (mean of {n})" if n > 1 else model
        net = (e.get("blend") or {}).get("network_test")
        label = name
        if net is not None:
            w = e["blend"]["w"]
            label = (f"linear map (w = 0: validation preferred it to {name})" if w == 0 else
                     f"{name} + linear map, w = {w:g} (chosen on validation)")
        lines.append(f"| {h:7d} | {label} | {e['mse']:.4f} | {e['mae']:.4f} | {e.get('skill_vs_naive', float('nan')):+.3f} "
                     f"| {e['test_windows']} | {e['train_seconds']:.1f} | {e['params']} | "
                     f"{e['epochs_run']} ({e['best_epoch']}) | {e['stop_reason'].replace('_', ' ')} |")
        if net is not None:
            lines.append(f"| {h:7d} | {name} alone | {net['mse']:.4f} | {net['mae']:.4f} | "
                         f"{net.get('skill_vs_naive', float('nan')):+.3f} | {e['test_windows']} | - | "
                         f"{net.get('params', '-')} | - | - |")
        ref = e.get("reference")
        if ref:
            n, li = ref["naive"], ref["linear"]
            lines.append(f"| {h:7d} | naive (repeat last value) | {n['mse']:.4f} | {n['mae']:.4f} | +0.000 | "
                         f"{n['windows']} | - | 0 | - | - |")
            lines.append(f"| {h:7d} | linear (closed form, ridge alpha {li['ridge_alpha']:g}) | {li['mse']:.4f} | "
                         f"{li['mae']:.4f} | {li['skill_vs_naive']:+.3f} | {li['windows']} | - | {li['params']} | "
                         f"- | - |")
            lc = ref.get("linear_cycle")
            if lc:
                amp = "" if lc.get("amplitude", "fixed") == "fixed" else ", window amplitude"
                lines.append(f"| {h:7d} | linear + {lc['period']}-row cycle{amp} (closed form, ridge alpha "
                             f"{lc['ridge_alpha']:g}) | {lc['mse']:.4f} | {lc['mae']:.4f} | "
                             f"{lc['skill_vs_naive']:+.3f} | {lc['windows']} | - | {lc['params']} | - | - |")
    return "\n".join(lines)


def _kept(members: list[dict]) -> list[dict]:
    """The member records that are in the average (not left out by ``--members auto``'s validation check)."""
    return [m for m in members if not m.get("dropped")]


def _member_lines(rows: list) -> list[str]:
    """Per horizon with an ensemble: each member's validation and test MSE next to the average's."""
    lines = []
    for h, e in rows:
        ms = _kept(e.get("members", []))
        if len(ms) > 1:
            each = ", ".join(f"seed {m['seed']} {m['best_val_mse']:.4f} / {m['test_mse']:.4f}" for m in ms)
            test = (e.get("blend") or {}).get("network_test", {}).get("mse", e["mse"])  # the average's, not a blend's
            lines.append(f"H={h}: mean of {len(ms)} members, val / test MSE {e['best_val_mse']:.4f} / {test:.4f}; "
                         f"members: {each}; epochs (best) and train s in the table are the first member's and "
                         f"all members' together")
        for m in e.get("members", []):
            if not m.get("dropped"):
                continue
            lines.append(f"H={h}: member seed {m['seed']} (val MSE {m['best_val_mse']:.4f}, {m['epochs_run']} epochs, "
                         f"{m['stop_reason'].replace('_', ' ')}) was left out: with it the average's validation MSE "
                         f"would have been {m['average_val_mse']:.4f}")
    return lines


def _validation_notes(model: str, rows: list) -> list[str]:
    """One line per horizon where a closed-form reference row has a lower validation MSE than the model (the
    split to choose by; the table's test rows are for reporting). Skipped when the model's validation scored
    only every k-th window (``--tune``), since the numbers are then not on the same windows."""
    notes = []
    for h, e in rows:
        ref = e.get("reference") or {}
        b = e.get("blend")
        if b is not None:  # --blend auto already chose between the two (and their blends) on validation
            v = b["val_mse"]
            w = f"{b['w']:g}"
            if w != "1":
                notes.append(f"note: H={h}: --blend auto chose w = {w} on validation (MSE {v['1']:.4f} for {model} "
                             f"alone, {v['0']:.4f} for the linear map" + (f", {v[w]:.4f} blended" if w != "0" else "")
                             + "); --blend off keeps the model alone")
            continue
        if e["train_config"].get("val_stride", 1) != 1 or not ref:
            continue
        names = {"linear": "linear", "linear_cycle": "linear + cycle"}
        better = [(r["val_mse"], names[k]) for k, r in ref.items() if k in names and r["val_mse"] < e["best_val_mse"]]
        if better:
            val, name = min(better)
            notes.append(f"note: H={h}: the closed-form {name} map has a lower validation MSE ({val:.4f}) than "
                         f"{model} ({e['best_val_mse']:.4f}); by validation it is the better forecaster for this data")
    return notes


def _search_table(table: list[dict]) -> str:
    rungs = sorted({k[len("val_mse_"):] for r in table for k in r if k.startswith("val_mse_")},
                   key=lambda k: (k == "final", k))
    head = "| # | ffn_ratio | dropout | head_dropout | lr | batch | " + " | ".join(
        f"val MSE {'rung ' + k if k != 'final' else 'final'}" for k in rungs) + " | windows / epoch | epochs | train s | |"
    lines = [head, "|" + "---:|" * (6 + len(rungs) + 3) + "---|"]
    for r in table:
        vals = " | ".join(f"{r[f'val_mse_{k}']:.4f}" if f"val_mse_{k}" in r else "-" for k in rungs)
        lines.append(f"| {r['id']} | {r['ffn_ratio']} | {r['dropout']:g} | {r['head_dropout']:g} | {r['lr']:g} | "
                     f"{r['batch_size']} | {vals} | {r.get('epoch_windows', '-')} | {r['epochs']} | {r['seconds']:.1f} | "
                     f"{'**chosen**' if r['chosen'] else ''} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------------------


def cmd_predict(args) -> int:
    import numpy as np
    import pandas as pd
    import torch
    from ffnet.fileio import atomic_write_bytes

    from . import data as D
    from . import train as T
    from .model import create_model

    if args.out and Path(args.out).exists() and not args.force:
        raise UsageError(f"{args.out} exists; pass --force to overwrite")
    device = T.resolve_device(args.device)
    run_onnx = None
    if args.runtime == "onnxruntime" or str(args.checkpoint).endswith(".onnx"):
        from .export import onnx_predictor

        ckpt, run_onnx = onnx_predictor(args.checkpoint)  # scaler and RevIN are inside the graph
    else:
        ckpt = T.load_checkpoint(args.checkpoint)
    meta = ckpt["data"]
    series = D.read_csv(args.data, target=meta["target"], irregular_ok=args.allow_irregular or meta["irregular_ok"])
    missing = [c for c in meta["columns"] if c not in series.columns]
    if missing:
        raise UsageError(f"{args.data}: column(s) the model was trained on are missing: {', '.join(missing[:5])}")
    L, H = meta["lookback"], meta["horizon"]
    if len(series) < L:
        raise D.DataError(f"{args.data}: {len(series)} rows, but the model needs the last {L} (its lookback)")
    idx = [series.columns.index(c) for c in meta["columns"]]
    mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])
    step = pd.Timedelta(int(np.median(np.diff(series.dates.asi8[-L:]))) if len(series) > 1 else 0)
    if step <= pd.Timedelta(0):
        raise D.DataError(f"{args.data}: cannot infer the time step from its last {L} timestamps")
    dates = pd.date_range(series.dates[-1] + step, periods=H, freq=step)
    cycle = D.Cycle.from_json(meta["cycle"]) if meta.get("cycle") else None
    if cycle is not None and step.value != cycle.step_ns:
        raise D.DataError(f"{args.data}: time step {step} differs from the training data's "
                          f"{pd.Timedelta(cycle.step_ns)}, which the model's cycle is defined on")
    if run_onnx is not None:
        phase = None if cycle is None else int(cycle.phases(series.dates.asi8[len(series) - L]))
        y = run_onnx(series.values[-L:, idx], phase)  # (H, C), raw units in and out
    else:
        x = (series.values[-L:, idx] - mean) / std
        cx = cy = None
        if cycle is not None:  # the model forecasts the series minus its train-split cycle
            cx, cy = cycle.at(series.dates.asi8[-L:]), cycle.at(dates.asi8)
            x = x - cx
        model = create_model(ckpt["model"]["name"], **ckpt["model"]["args"])
        model.load_state_dict(ckpt["state_dict"])
        model.to(device).eval()

        def tensor(a):
            return torch.from_numpy(a.astype(np.float32))[None].to(device)

        # a window-amplitude cycle also feeds the model the cycle at the window's rows (train.cycle_forward)
        window = (tensor(cx), tensor(cy), cycle.shrink) if cycle is not None and cycle.shrink is not None else ()
        with torch.no_grad():
            y = T.cycle_forward(model, tensor(x), *window)[0].float().cpu().numpy()  # (H, C)
        if cycle is not None:
            y = y + cy
        y = y * std + mean
    scored = meta.get("scored_columns", meta["columns"])
    frame = pd.DataFrame({c: y[:, meta["columns"].index(c)] for c in scored})
    frame.insert(0, "date", dates)
    text = frame.to_csv(index=False, float_format="%.6g")
    if args.out:
        atomic_write_bytes(Path(args.out), text.encode())
        print(f"wrote {H} forecast steps ({dates[0]} .. {dates[-1]}) to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_export(args) -> int:
    from .export import export_cli

    return export_cli(args)


# ---------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------


def cmd_datasets(args) -> int:
    from . import data as D

    print("| name | file | split | freq | horizons | sha256 | local copy |")
    print("|---|---|---|---|---|---|---|")
    for info in D.REGISTRY.values():
        try:
            local = str(D.fetch(info, download=False))
        except D.DataError:
            local = "-"
        sha = info.sha256[:12] + "..." if info.sha256 else "not verified"
        print(f"| {info.name} | {info.filename} | {info.split} | {info.freq} | "
              f"{','.join(map(str, info.horizons))} | {sha} | {local} |")
    return 0


# ---------------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .options import LOSSES, LR_SCHEDULES, PRECISIONS  # not .train: --help must not wait for torch

    p = argparse.ArgumentParser(prog="ffnet-ts", description="FFNet-TS long-horizon forecasting (standard protocol).")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser(
        "forecast", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="train, evaluate on the standard protocol, write metrics/checkpoints/forecasts/plots",
        description="Train FFNet-TS (or a baseline) with early stopping on validation MSE and score every test "
                    "window of the standard protocol; the table also shows two reference forecasts on the same "
                    "windows (naive: repeat the last value; a closed-form linear map fitted on train). Default "
                    f"budget: time-based, {DEFAULT_TIME_BUDGET:g} minutes of training (about 10 minutes wall "
                    "for the whole default run on 2 CPU cores), shared by the horizons, with early stopping "
                    f"(patience {DEFAULT_PATIENCE}) and at most {DEFAULT_MAX_EPOCHS} epochs: small datasets "
                    "train until validation stops improving, large ones stop in time. --time-budget changes "
                    "the minutes; --epochs N alone trains up to N epochs without a time limit (fixed recipes), "
                    "and caps the time budget when both are given. Batch "
                    f"{DEFAULT_BATCH}, lr {DEFAULT_LR:g} ({DEFAULT_SCHEDULE} schedule). The reference recipe "
                    "(100 epochs, patience 20, batch 512, lr 1e-4, 'official' schedule) is one flag set away: "
                    "--epochs 100 --patience 20 --batch-size 512 --lr 1e-4 --lr-schedule official. "
                    "--tune [MINUTES] searches ffn_ratio, dropout, head_dropout, lr and batch size on the "
                    "validation split (successive halving, seeded, resumable) before the test split is scored "
                    "once; it is opt-in, also for CSVs without registry defaults (see the README).")
    f.add_argument("--data", required=True, help="registry name (ETTh1, ETTh2, ETTm1, ETTm2, Weather, ECL, Traffic, "
                   "Exchange, ILI) or a CSV path with a date column and numeric columns")
    f.add_argument("--horizon", default="96", help="96, 192, 336, 720 (comma-separated) or 'all'")
    f.add_argument("--lookback", type=int, default=None, help="input window (default: 96; ILI 36)")
    f.add_argument("--features", default="M", choices=["M", "S", "MS"],
                   help="M: all->all; S: target->target; MS: all->target")
    f.add_argument("--target", default=None, help="target column (default OT, else the last column)")
    f.add_argument("--model", default="ffnet_ts",
                   help="ffnet_ts | ffnet_ts_lb (ours: on a closed-form linear base) | dlinear | patchtst | "
                        "itransformer | ffnet_ts_tiny")
    f.add_argument("--epochs", type=int, default=None,
                   help=f"maximum epochs (default: {DEFAULT_MAX_EPOCHS} under the time budget; given alone: no "
                        "time limit)")
    f.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help=f"training minutes for all horizons together (default {DEFAULT_TIME_BUDGET:g} unless "
                        "--epochs is given); no new epoch starts once the next one would overrun it")
    f.add_argument("--tune", type=float, nargs="?", const=TUNE_DEFAULT, default=None, metavar="MINUTES",
                   help="search FFNet-TS settings on validation within MINUTES (default: the time budget) "
                        "and train the chosen one; --dropout/--lr/--batch-size pin a setting")
    f.add_argument("--patience", type=int, default=DEFAULT_PATIENCE, help="early-stopping patience (epochs)")
    f.add_argument("--batch-size", type=int, default=None, help=f"global batch size (default {DEFAULT_BATCH})")
    f.add_argument("--lr", type=float, default=None, help=f"base learning rate (default {DEFAULT_LR:g})")
    f.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES,
                   help=f"default {DEFAULT_SCHEDULE}; with --tune and no --lr-schedule every rung of the search and "
                        "the survivor anneal the lr with a cosine to 0 (the survivor's by the end of the budget). "
                        "'official' reproduces the "
                        "reference's executed schedule incl. its epoch-1 lr/25 quirk")
    f.add_argument("--loss", default="mse", choices=LOSSES,
                   help="training loss (default mse, the reference's); validation, early stopping and the "
                        "reported metrics are MSE / MAE whatever is chosen")
    f.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights (per-step decay, e.g. 0.99)")
    f.add_argument("--members", default="auto", metavar="auto|N",
                   help="train N models (seeds --seed, --seed + 1, ...) and average their forecasts (ours). auto "
                        "(default): after the first, another member while the horizon's time budget left covers "
                        f"the slowest one so far, up to {MAX_MEMBERS}; a single model when --epochs is given alone, "
                        "with --tune, or under torchrun")
    f.add_argument("--dropout", type=float, default=None, help="channel-mixer dropout (default: per dataset)")
    f.add_argument("--blend", default="auto", choices=["auto", "off"],
                   help="auto (default): after training, average the model with the closed-form linear reference "
                        "map, the model's weight w in {1, 0.75, 0.5, 0.25, 0} chosen on validation (w = 1 keeps the "
                        "model alone; the table shows the model alone too); off: the model alone")
    f.add_argument("--cycle", default="auto", metavar="auto|off|N",
                   help="remove a per-variable cycle fitted on the train split before the model, add it back after "
                        "(ours). auto (default): the daily cycle of the time step (hourly 24, 15 min 96, daily 7), "
                        "kept when the closed-form linear map's validation MSE prefers it (one-standard-error rule); "
                        "off: the paper's pipeline; N: a period of N rows")
    f.add_argument("--cycle-amplitude", default="auto", choices=["auto", "fixed", "window"],
                   help="fixed: the train split's cycle as it is; window: scaled per window by its own amplitude "
                        "(shrunk halfway to the train split's); auto (default): decided with the cycle, by the "
                        "one-standard-error rule on the closed-form linear map's validation MSE")
    f.add_argument("--seed", type=int, default=2021)
    f.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    f.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the idle cores, i.e. cpu count minus load average, >= 1)")
    f.add_argument("--no-amp", action="store_true", help="disable autocast on CUDA")
    f.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="CPU training steps: fp32 (default) or bf16 autocast (needs AMX-BF16 / AVX512-BF16; "
                        "evaluation stays fp32; see the README for its measured speed and accuracy)")
    f.add_argument("--grad-checkpointing", type=int, default=0, metavar="CHUNKS",
                   help="FFNet-TS: compute the channel mixer's hidden layer in CHUNKS slices (dividing the model's "
                        "dim, e.g. 8) recomputed in the backward pass: about half the training memory for ~1.3x "
                        "the step time (0: off, the default)")
    f.add_argument("--out", default=None, help="output directory (default runs/ffnet-ts/<data>)")
    f.add_argument("--force", action="store_true", help="overwrite results already in --out")
    f.add_argument("--resume", action="store_true",
                   help="continue from resume_H*.pt (or a --tune search's tune_H*/tune_state.json) in --out")
    f.add_argument("--allow-irregular", action="store_true", help="accept gaps/duplicates in the timestamps")
    f.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines are still printed)")
    f.set_defaults(func=cmd_forecast)

    pr = sub.add_parser("predict", help="forecast past the last timestamp of a CSV with a trained checkpoint")
    pr.add_argument("--checkpoint", required=True, help="checkpoint_H*.pt written by `ffnet-ts forecast`")
    pr.add_argument("--data", required=True, help="CSV with the columns the model was trained on")
    pr.add_argument("--out", default=None, help="output CSV (default: stdout)")
    pr.add_argument("--force", action="store_true", help="overwrite --out")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--allow-irregular", action="store_true")
    pr.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                    help="onnxruntime: run the fused ONNX graph (exported once and cached; an .onnx --checkpoint "
                         "from `ffnet-ts export --onnx` implies it)")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="export a forecast checkpoint to ONNX (fused; raw units in and out)")
    ex.add_argument("--checkpoint", required=True, help="checkpoint_H*.pt written by `ffnet-ts forecast`")
    ex.add_argument("--onnx", required=True, metavar="OUT.onnx",
                    help="output: history (batch, lookback, variables) -> forecast (batch, horizon, outputs)")
    ex.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 17 (default 20: native Gelu)")
    ex.add_argument("--force", action="store_true", help="overwrite OUT.onnx")
    ex.set_defaults(func=cmd_export)

    ds = sub.add_parser("datasets", help="list the dataset registry and local copies")
    ds.set_defaults(func=cmd_datasets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ffnet.export import ExportError

    from .data import DataError
    from .train import ConfigError

    try:
        return args.func(args)
    except (DataError, ConfigError, UsageError, ExportError) as e:
        return _error(str(e))
    except KeyboardInterrupt:
        return _error("interrupted")


if __name__ == "__main__":
    sys.exit(main())
