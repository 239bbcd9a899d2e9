"""The reference recipes, reproduced: FFNet-TS vs iTransformer vs PatchTST vs DLinear at lookback 96.

ETTh1, ETTh2, ETTm1, ETTm2 and Weather x horizons 96/192/336/720, every test window, under one data code
(ffnet_ts.data splitter/scaler, ffnet_ts.train loop, MSE/MAE in the standardized space). Each model trains with
its own *published* lookback-96 recipe (see RECIPES and the sources below); nothing is selected on test, and
nothing is tuned at all: the recipes are taken as written.

    # 1. plan: measure every cell's training step (short runs) and write the wall-time estimates
    nice -n 10 uv run python benchmarks/timeseries_reference.py --plan --threads 1
    #    later: re-time only the cells still missing, on this machine, and what their resume states still need
    uv run python benchmarks/timeseries_reference.py --plan --remaining --precision bf16 --threads 1
    # 2. the grid, in the background: resumable cell by cell (a cell whose JSON exists is skipped; an
    #    interrupted cell continues from its last finished epoch), each cell a fresh subprocess
    #    (resume states in benchmarks/state/timeseries_reference/, committed so that a cell resumes on a new
    #    machine; $FFNET_REF_STATE_DIR moves them)
    mkdir -p benchmarks/state/timeseries_reference
    OMP_NUM_THREADS=1 nohup nice -n 5 uv run python benchmarks/timeseries_reference.py --run --threads 1 \
        >> benchmarks/state/timeseries_reference/run.log 2>&1 &
    # 3. one cell by hand / the markdown table from the finished cells
    uv run python benchmarks/timeseries_reference.py --cell ETTh1 96 itransformer --threads 1
    uv run python benchmarks/timeseries_reference.py --table

Outputs: results/timeseries_reference/<dataset>_<horizon>_<model>.json (one per finished cell),
results/timeseries_reference_estimates.json, results/timeseries_reference_remaining.json,
results/timeseries_reference.md and its picture results/timeseries_reference.png. Needs the CSVs
(``$FFNET_DATA_DIR``). Timings are wall-clock seconds on whatever machine runs it, never asserted.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from ffnet_ts import data as D
from ffnet_ts import train as T
from ffnet_ts.model import create_model, dataset_defaults

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CELLS_DIR = RESULTS / "timeseries_reference"
ESTIMATES = RESULTS / "timeseries_reference_estimates.json"
REMAINING = RESULTS / "timeseries_reference_remaining.json"
TABLE = RESULTS / "timeseries_reference.md"
# resume states, locks and logs: in the repo (benchmarks/state/, git-ignored but for the FFNet-TS and DLinear
# states), so that a cell's last finished epoch can be committed and resumed on the next machine, which starts
# with no ~/.cache. $FFNET_REF_STATE_DIR moves them.
STATE_DIR = Path(os.environ.get("FFNET_REF_STATE_DIR") or HERE / "state" / "timeseries_reference")

DATASETS = ["ETTh1", "ETTh2", "ETTm1", "ETTm2", "Weather"]
HORIZONS = [96, 192, 336, 720]
MODELS = ["dlinear", "itransformer", "patchtst", "ffnet_ts"]
LOOKBACK, SEED = 96, 2021

# ---------------------------------------------------------------------------------------------------------
# Recipes (as published; sources in SOURCES)
# ---------------------------------------------------------------------------------------------------------

# thuml/iTransformer scripts/multivariate_forecasting/{ETT/iTransformer_<ds>.sh, Weather/iTransformer.sh}:
# (e_layers, d_model = d_ff) per horizon; everything else is run.py's defaults.
ITRANSFORMER_SCRIPTS = {
    "ETTh1": {96: (2, 256), 192: (2, 256), 336: (2, 512), 720: (2, 512)},
    "ETTh2": dict.fromkeys(HORIZONS, (2, 128)),
    "ETTm1": dict.fromkeys(HORIZONS, (2, 128)),
    "ETTm2": dict.fromkeys(HORIZONS, (2, 128)),
    "Weather": dict.fromkeys(HORIZONS, (3, 512)),
}
# thuml/Time-Series-Library scripts/long_term_forecast/{ETT_script/PatchTST_<ds>.sh, Weather_script/PatchTST.sh}:
# (e_layers, n_heads, batch_size) per horizon; d_model 512, d_ff 2048, dropout 0.1 are run.py's defaults.
PATCHTST_SCRIPTS = {
    "ETTh1": {96: (1, 2, 32), 192: (1, 8, 32), 336: (1, 8, 32), 720: (1, 16, 32)},
    "ETTh2": dict.fromkeys(HORIZONS, (3, 4, 32)),
    "ETTm1": {96: (1, 2, 32), 192: (3, 2, 128), 336: (1, 4, 128), 720: (3, 4, 128)},
    "ETTm2": {96: (3, 16, 32), 192: (3, 2, 128), 336: (1, 4, 32), 720: (3, 4, 128)},
    "Weather": {96: (2, 4, 32), 192: (2, 16, 32), 336: (2, 4, 128), 720: (2, 4, 128)},
}
# run.py defaults shared by the thuml scripts (Time-Series-Library and iTransformer agree on these):
# Adam, lr 1e-4, batch 32, 10 epochs, early-stopping patience 3, lradj type1 (lr halved every epoch), dropout 0.1.
THUML_TRAIN = dict(lr=1e-4, batch_size=32, epochs=10, patience=3, lr_schedule="type1")

SOURCES = {
    "ffnet_ts": "spec §2.4 (the official FFNet scripts/*.sh): per-dataset ffn_ratio / dropout / head_dropout / batch / "
                "lr / patience from ffnet_ts.model.DATASET_DEFAULTS, 100 epochs max, lradj type3 as executed "
                "(`official`: epoch 1 at lr/25), Adam, seed 2021",
    "itransformer": "thuml/iTransformer scripts/multivariate_forecasting/ETT/iTransformer_<ds>.sh and "
                    "Weather/iTransformer.sh (e_layers, d_model = d_ff) + run.py defaults (n_heads 8, dropout 0.1, "
                    "batch 32, lr 1e-4, 10 epochs, patience 3, lradj type1, use_norm 1)",
    "patchtst": "thuml/Time-Series-Library scripts/long_term_forecast/ETT_script/PatchTST_<ds>.sh and "
                "Weather_script/PatchTST.sh (e_layers, n_heads, batch_size; Weather train_epochs 3) + run.py "
                "defaults (d_model 512, d_ff 2048, dropout 0.1 = head dropout, lr 1e-4, 10 epochs, patience 3, "
                "type1); model: TSLib's models/PatchTST.py structure (style='tslib'), patch 16 / stride 8",
    "dlinear": "thuml/Time-Series-Library scripts/long_term_forecast/ETT_script/DLinear_<ds>.sh (no overrides) + "
               "run.py defaults (moving_avg 25, shared weights, batch 32, lr 1e-4, 10 epochs, patience 3, type1); "
               "TSLib's 1/L weight init. TSLib has no DLinear Weather script: the same defaults are used there",
}


def recipe(model: str, ds: str, h: int) -> tuple[dict, dict]:
    """(model kwargs, training kwargs incl. epochs / patience) of ``model``'s published recipe on ``ds`` at ``h``."""
    if model == "ffnet_ts":
        d = dataset_defaults(ds, h)
        return ({k: d[k] for k in ("ffn_ratio", "dropout", "head_dropout")},
                dict(lr=d["lr"], batch_size=d["batch_size"], epochs=100, patience=d["patience"],
                     lr_schedule="official"))
    if model == "itransformer":
        depth, dim = ITRANSFORMER_SCRIPTS[ds][h]
        return dict(dim=dim, depth=depth, num_heads=8, ffn_dim=dim, dropout=0.1), dict(THUML_TRAIN)
    if model == "patchtst":
        depth, heads, batch = PATCHTST_SCRIPTS[ds][h]
        args = dict(dim=512, depth=depth, num_heads=heads, ffn_dim=2048, dropout=0.1, head_dropout=0.1,
                    style="tslib")
        return args, {**THUML_TRAIN, "batch_size": batch, "epochs": 3 if ds == "Weather" else 10}
    if model == "dlinear":
        return dict(kernel_size=25, average_init=True), dict(THUML_TRAIN)
    raise ValueError(f"no recipe for {model!r}")


# Published numbers to print beside ours (MSE, MAE). Per-horizon iTransformer: anchors §1.2 (iTransformer paper's
# table). Averages: FFNet paper Table 5 (spec §2.6; FFNet has no per-horizon or per-ETT-subset numbers).
PAPER_ITRANSFORMER = {
    ("ETTh1", 96): (0.386, 0.405), ("ETTh1", 192): (0.441, 0.436), ("ETTh1", 336): (0.487, 0.458),
    ("ETTh1", 720): (0.503, 0.491), ("ETTh2", 96): (0.297, 0.349), ("ETTh2", 192): (0.380, 0.400),
    ("ETTh2", 336): (0.428, 0.432), ("ETTh2", 720): (0.427, 0.445), ("ETTm1", 96): (0.334, 0.368),
    ("ETTm1", 192): (0.377, 0.391), ("ETTm1", 336): (0.426, 0.420), ("ETTm1", 720): (0.491, 0.459),
    ("ETTm2", 96): (0.180, 0.264), ("ETTm2", 192): (0.250, 0.309), ("ETTm2", 336): (0.311, 0.348),
    ("ETTm2", 720): (0.412, 0.407), ("Weather", 96): (0.174, 0.214), ("Weather", 192): (0.221, 0.254),
    ("Weather", 336): (0.278, 0.296), ("Weather", 720): (0.358, 0.349),
}
PAPER_AVG = {  # dataset -> {model: (MSE, MAE)}
    "ETTh1": {"itransformer": (0.454, 0.447)}, "ETTh2": {"itransformer": (0.383, 0.407)},
    "ETTm1": {"itransformer": (0.407, 0.410)}, "ETTm2": {"itransformer": (0.288, 0.332)},
    "ETT": {"ffnet_ts": (0.376, 0.390), "itransformer": (0.383, 0.399), "patchtst": (0.381, 0.397),
            "dlinear": (0.442, 0.444)},
    "Weather": {"ffnet_ts": (0.244, 0.274), "itransformer": (0.258, 0.278), "patchtst": (0.259, 0.281),
                "dlinear": (0.265, 0.317)},
}


# ---------------------------------------------------------------------------------------------------------
# One cell
# ---------------------------------------------------------------------------------------------------------


def cell_name(ds: str, h: int, model: str) -> str:
    return f"{ds}_{h}_{model}"


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _slice(prep: D.Prepared, windows: int) -> D.Prepared:
    """Smoke tests only: keep the first ``windows`` windows of every split."""
    span = prep.lookback + prep.horizon - 1 + windows
    prep.borders = {k: (b0, min(b1, b0 + span)) for k, (b0, b1) in prep.borders.items()}
    return prep


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - provenance only
        return ""


def run_cell(ds: str, h: int, model: str, *, out_dir: Path, epochs: int | None = None,
             max_windows: int | None = None, threads: int | None = None, precision: str = "fp32",
             grad_checkpointing: int = 0) -> dict:
    """Train and test one cell with its published recipe; write <out_dir>/<cell>.json. Resumes from the
    per-epoch state file of an interrupted run of the same cell at the same precision and checkpointing.

    ``grad_checkpointing=k`` (FFNet-TS only; ``TrainConfig.grad_checkpointing``): the channel
    mixer's hidden layer in k recomputed slices: about half the memory for ~1.3x the step time, so two
    FFNet-TS cells fit this machine at once. Same recipe and model; recorded in ``train_args``.

    ``precision="bf16"``: CPU bf16 autocast for the training steps (``TrainConfig.precision``; refused on CPUs
    without native bf16); validation and test stay fp32. Recorded in the JSON's ``train_args``."""
    from ffnet_ts.accel import keep_freed_memory

    t_wall = time.perf_counter()
    load_start = os.getloadavg()[0]
    # same results, and a batch-512 step about twice as fast: activations stop being mmapped and faulted in
    # afresh on every step (ffnet_ts.accel.keep_freed_memory; benchmarks/results/timeseries_malloc.md)
    malloc_kept = keep_freed_memory()
    model_args, train_args = recipe(model, ds, h)
    if epochs is not None:
        train_args["epochs"] = epochs
    prep = D.prepare(D.load(ds), LOOKBACK, h)
    if max_windows:
        prep = _slice(prep, max_windows)
    torch.manual_seed(SEED)
    net = create_model(model, n_vars=prep.n_vars, lookback=LOOKBACK, horizon=h, **model_args)
    if precision != "fp32":
        train_args["precision"] = precision
    if model != "ffnet_ts":
        grad_checkpointing = 0
    if grad_checkpointing:
        train_args["grad_checkpointing"] = grad_checkpointing
    cfg = T.TrainConfig(seed=SEED, progress=False, device="cpu", **train_args)
    T.check_precision(precision, torch.device("cpu"))
    name = cell_name(ds, h, model)
    # a resume state never crosses precisions: an fp32 cell resumed in bf16 would be neither
    state = STATE_DIR / f"{name}{_state_tag(precision, grad_checkpointing)}{'.smoke' if epochs or max_windows else ''}.pt"
    state.parent.mkdir(parents=True, exist_ok=True)
    lock = STATE_DIR / f"{name}.lock"
    if not _acquire_lock(lock):
        raise CellBusy(f"{name}: another live process ({lock.read_text().strip()}) is running this cell")
    meta = {"model": {"name": model, **model_args}, "data": {"name": ds, "lookback": LOOKBACK, "horizon": h,
                                                              "max_windows": max_windows}}
    resume = state.is_file()
    try:
        res = T.fit(net, prep, cfg, meta=meta, last_path=state, resume=resume, desc=name,
                    log=lambda s: print(s, flush=True))
    except (RuntimeError, T.ConfigError, KeyError) as e:
        if not resume:
            raise
        # the state was written by older code (e.g. changed parameter names): start this cell afresh
        print(f"{name}: cannot resume from {state} ({type(e).__name__}: {e}); starting afresh", flush=True)
        state.unlink(missing_ok=True)
        resume = False
        torch.manual_seed(SEED)
        net = create_model(model, n_vars=prep.n_vars, lookback=LOOKBACK, horizon=h, **model_args)
        res = T.fit(net, prep, cfg, meta=meta, last_path=state, resume=False, desc=name,
                    log=lambda s: print(s, flush=True))
    t_test = time.perf_counter()
    test = T.evaluate(net, prep, "test", batch_size=512)
    out = {
        "dataset": ds, "horizon": h, "model": model, "lookback": LOOKBACK, "mse": test["mse"], "mae": test["mae"],
        "test_windows": test["windows"], "params": sum(p.numel() for p in net.parameters()),
        "train_seconds": round(res.train_seconds, 1), "test_seconds": round(time.perf_counter() - t_test, 1),
        "wall_seconds": round(time.perf_counter() - t_wall, 1), "epochs_run": res.epochs_run,
        "best_epoch": res.best_epoch, "stopped_early": res.stopped_early,
        "stop_reason": getattr(res, "stop_reason", None), "val_mse": res.best_val_mse, "resumed": resume,
        "model_args": model_args, "train_args": train_args, "seed": SEED, "recipe_source": SOURCES[model],
        "history": res.history,
        "env": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"), "malloc_kept": malloc_kept,
                "loadavg_start": round(load_start, 2), "loadavg_end": round(os.getloadavg()[0], 2),
                "git": _git_commit(), "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "command": " ".join(sys.argv)},
    }
    if resume:  # the wall time of earlier (interrupted) processes is in train_seconds, not in wall_seconds
        out["note"] = "resumed from an interrupted run; train_seconds covers every epoch, wall_seconds this process"
    _write_json(out_dir / f"{name}.json", out)
    state.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
    print(json.dumps({k: out[k] for k in ("dataset", "horizon", "model", "mse", "mae", "params", "train_seconds",
                                          "epochs_run", "best_epoch")}), flush=True)
    return out


# ---------------------------------------------------------------------------------------------------------
# Planning: measured step times -> wall-time estimates
# ---------------------------------------------------------------------------------------------------------


def measure(ds: str, h: int, model: str, prep: D.Prepared, steps: int = 1, precision: str = "fp32") -> dict:
    """Median seconds of a training step (forward + backward + Adam at the recipe's batch; the forward under
    ``precision``'s autocast, as ``T.fit`` runs it) and of one 512-window evaluation batch (fp32), then the
    cell's estimated seconds at the recipe's maximum epochs."""
    from ffnet_ts.accel import keep_freed_memory

    keep_freed_memory()  # as run_cell does, so the estimate times the allocator the cells run with
    model_args, train_args = recipe(model, ds, h)
    torch.manual_seed(SEED)
    net = create_model(model, n_vars=prep.n_vars, lookback=LOOKBACK, horizon=h, **model_args).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    bs = train_args["batch_size"]
    # NOTE: batch 2048 (FFNet-TS on ETTm) needs ~13 GB for one step; time a 512 batch and scale linearly instead
    # of risking the memory of a machine shared with other jobs.
    timed_bs = min(bs, 512)
    start = prep.borders["train"][0]
    times = []
    for i in range(steps + 1):
        n = timed_bs if i else min(timed_bs, 8)  # a small warm-up step: the machine is shared, CPU is scarce
        idx = torch.randint(0, prep.windows("train"), (n,), generator=torch.Generator().manual_seed(i))
        x, y = D.gather_windows(prep.data, start, idx, LOOKBACK, h)
        t0 = time.perf_counter()
        with T._autocast(torch.device("cpu"), False, precision):
            pred = net(x)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step is warm-up
            times.append(time.perf_counter() - t0)
    net.eval()
    x, _ = D.gather_windows(prep.data, start, torch.arange(128), LOOKBACK, h)
    with torch.no_grad():
        t0 = time.perf_counter()
        net(x)
        t_eval = (time.perf_counter() - t0) * 4  # a 512-window evaluation batch, timed at 128 and scaled
    step = sorted(times)[len(times) // 2] * bs / timed_bs
    steps_per_epoch = max(prep.windows("train") // bs, 1)
    epoch = steps_per_epoch * step + math.ceil(prep.windows("val") / 512) * t_eval
    test = math.ceil(prep.windows("test") / 512) * t_eval
    return {"dataset": ds, "horizon": h, "model": model, "batch_size": bs, "step_seconds": round(step, 4),
            "eval_batch_seconds": round(t_eval, 4), "steps_per_epoch": steps_per_epoch,
            "epoch_seconds": round(epoch, 1), "max_epochs": train_args["epochs"],
            "cell_seconds_max": round(train_args["epochs"] * epoch + test, 0),
            "params": sum(p.numel() for p in net.parameters()), "precision": precision}


def plan(datasets, horizons, models, out: Path) -> list[dict]:
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    have = {(r["dataset"], r["horizon"], r["model"]) for r in rows}
    for ds in datasets:
        series = D.load(ds)
        for h in horizons:
            prep = D.prepare(series, LOOKBACK, h)
            for m in models:
                if (ds, h, m) in have:
                    continue
                r = measure(ds, h, m, prep)
                rows.append(r)
                print(json.dumps(r), flush=True)
                _write_json(out, {"note": "measured on a shared 2-core machine (other agents running); 1 thread",
                                  "loadavg": os.getloadavg()[0], "threads": torch.get_num_threads(),
                                  "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows})
    return rows


def _state_tag(precision: str, grad_checkpointing: int = 0) -> str:
    """The resume-state file's suffix: a state never crosses precisions or checkpointing settings."""
    return ("" if precision == "fp32" else f".{precision}") + (f".gc{grad_checkpointing}" if grad_checkpointing else "")


def _progress(name: str, precision: str) -> tuple[int, int]:
    """(epochs finished, epochs since the best) of the cell's resume state at ``precision`` (any checkpointing
    setting, the most advanced one); (0, 0) if none."""
    states = [p for p in STATE_DIR.glob(f"{name}{_state_tag(precision)}*.pt")
              if re.fullmatch(re.escape(name + _state_tag(precision)) + r"(\.gc\d+)?\.pt", p.name)]
    if not states:
        return 0, 0
    st = max((torch.load(p, map_location="cpu", weights_only=False) for p in states), key=lambda s: int(s["epoch"]))
    return int(st["epoch"]), int(st["bad_epochs"])


def plan_remaining(precision: str, datasets=DATASETS, horizons=HORIZONS, models=MODELS, out: Path | None = None,
                   steps: int = 2) -> list[dict]:
    """Re-measure the step time of every cell without a JSON, on this machine at ``precision``, and the
    worst-case time it still needs (the recipe's epochs left after its resume state, if any)."""
    out = out or REMAINING
    rows = []
    for ds in datasets:
        series = D.load(ds)
        for h in horizons:
            prep = None
            for m in models:
                name = cell_name(ds, h, m)
                if (CELLS_DIR / f"{name}.json").is_file():
                    continue
                prep = prep or D.prepare(series, LOOKBACK, h)
                r = measure(ds, h, m, prep, steps=steps, precision=precision)
                done, bad = _progress(name, precision)
                r.update(epochs_done=done, epochs_since_best=bad,
                         seconds_left_max=round((r["max_epochs"] - done) * r["epoch_seconds"], 0))
                rows.append(r)
                print(json.dumps(r), flush=True)
                _write_json(out, {"precision": precision, "threads": torch.get_num_threads(),
                                  "loadavg": round(os.getloadavg()[0], 2), "git": _git_commit(),
                                  "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  "cpu": platform.processor() or platform.machine(), "rows": rows})
    return rows


def remaining_table() -> str:
    """The cells still missing, with their re-measured step time and worst-case hours left."""
    if not REMAINING.is_file():
        return "(not measured: run --plan --remaining)"
    est = json.loads(REMAINING.read_text())
    rows = [r for r in est["rows"] if not (CELLS_DIR / f"{cell_name(r['dataset'], r['horizon'], r['model'])}.json")
            .is_file()]
    if not rows:
        return "(every cell has finished)"
    lines = ["| data | H | model | step s (batch) | epoch | epochs done / max | hours left at most |",
             "|---|---:|---|---:|---:|---:|---:|"]
    total = {}
    for r in sorted(rows, key=lambda r: (r["model"], DATASETS.index(r["dataset"]), r["horizon"])):
        # the epochs done now (the resume state moves on after the measurement), at the measured epoch time
        done = max(_progress(cell_name(r["dataset"], r["horizon"], r["model"]), est["precision"])[0],
                   r["epochs_done"])
        left = (r["max_epochs"] - done) * r["epoch_seconds"]
        total[r["model"]] = total.get(r["model"], 0.0) + left
        lines.append(f"| {r['dataset']} | {r['horizon']} | {NAMES[r['model']]} | {r['step_seconds']:.2f} "
                     f"({r['batch_size']}) | {_duration(r['epoch_seconds'])} | {done} / "
                     f"{r['max_epochs']} | {left / 3600:.1f} |")
    lines.append("| **total** | | " + ", ".join(f"{NAMES[m]} {v / 3600:.0f} h" for m, v in total.items())
                 + f" | | | | **{sum(total.values()) / 3600:.0f} CPU-hours** |")
    return "\n".join(lines) + (
        f"\n\nMeasured {est['measured']} at {est['precision']}, {est['threads']} thread, load average "
        f"{est['loadavg']}, code {est['git']}; epochs done as of the last --table. \"At most\" is the recipe's "
        "maximum epochs; early stopping ends most cells sooner (the finished cells above stopped at a median of "
        f"{_median_stop_fraction()} of their maximum).")


def _median_stop_fraction() -> str:
    fr = []
    for (ds, h, m), c in load_cells().items():
        fr.append(c["epochs_run"] / recipe(m, ds, h)[1]["epochs"])
    if not fr:
        return "?"
    fr.sort()
    return f"{100 * fr[len(fr) // 2]:.0f} %"


# Rough seconds per cell, used to order cells that have not been measured yet (replaced by --plan's numbers).
_PRIOR = {"dlinear": 60, "itransformer": 600, "ffnet_ts": 3000, "patchtst": 10000}


def ordered_cells(estimates: dict) -> list[tuple[str, int, str]]:
    """H96 and H720 of every dataset first, then H192 / H336; within each phase the cheapest cells first."""
    cells = [(ds, h, m) for ds in DATASETS for h in HORIZONS for m in MODELS]

    def key(c):
        ds, h, m = c
        est = estimates.get(c, _PRIOR[m] * (1 if ds.startswith("ETTh") else 4))
        return (0 if h in (96, 720) else 1, est, DATASETS.index(ds), h, MODELS.index(m))

    return sorted(cells, key=key)


def _load_estimates() -> dict:
    """Seconds per cell for the run order: the plan's, replaced by --plan --remaining's time left where measured."""
    est = {}
    if ESTIMATES.is_file():
        est = {(r["dataset"], r["horizon"], r["model"]): r["cell_seconds_max"]
               for r in json.loads(ESTIMATES.read_text())["rows"]}
    if REMAINING.is_file():
        est.update({(r["dataset"], r["horizon"], r["model"]): r["seconds_left_max"]
                    for r in json.loads(REMAINING.read_text())["rows"]})
    return est


N_VARS = {"ETTh1": 7, "ETTh2": 7, "ETTm1": 7, "ETTm2": 7, "Weather": 21}


def memory_need_gb(ds: str, h: int, model: str, grad_checkpointing: int = 0) -> float:
    """Rough peak memory of a cell (training step or evaluation pass). FFNet-TS's activations grow with batch x variables x
    ffn_ratio, PatchTST's with batch x variables; DLinear and iTransformer stay near 2 GB. Fitted to peak RSS
    with the kept heap (``keep_freed_memory``), which swings by a few GB within an epoch: ETTm2 H96 (batch
    2048, 7 variables, ratio 12) 13.8-16.4 GB sampled over two epochs -> 16.6 here; Weather shapes (batch
    512, 21 variables, ratio 4) 5.2-6.3 GB -> 6.9. A fit to one 11.4 GB reading of ETTm2 H720 (coefficient
    1.4) let an ETTm cell start beside PatchTST Weather H720 with 23.3 of 23.5 GB in use."""
    if model == "patchtst":  # measured: Weather H720 (batch 128, 21 variables) 7.1 GB with the kept heap
        batch = PATCHTST_SCRIPTS[ds][h][2]
        return 1.0 + 6.1 * batch / 128 * N_VARS[ds] / 21
    if model != "ffnet_ts":
        return 2.0
    d = dataset_defaults(ds, h)
    need = 1.0 + 1.95 * d["batch_size"] / 256 * N_VARS[ds] / 7 * (d["ffn_ratio"] + 4) / 16
    # checkpointed (session 31): ETTm1 H192 at batch 2048 held 7.6-8.3 GB instead of 14.7
    if grad_checkpointing:
        need = 1.0 + (need - 1.0) * 0.5
    # NOTE: validation and test run 512 windows x all variables at once, in fp32 and without checkpointing. On
    # Weather (21 variables) that pass alone peaks at 5.9 GB, and FFNet-TS Weather H192 (training batch 256, plain)
    # held 11.3 GB after its first epoch, where the training term above says 6.9 (session 31).
    evaluation = 1.0 + 10.3 * N_VARS[ds] / 21 * (d["ffn_ratio"] + 4) / 16
    return max(need, evaluation)


def _mem_available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


class CellBusy(RuntimeError):
    """The cell's lock is held by a live process."""


def _acquire_lock(lock: Path) -> bool:
    """Create ``lock`` holding our pid, atomically (O_EXCL); take over a lock whose process is gone.

    Two runners started at the same moment must not train the same cell: both would write its resume state."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text())
                if pid != os.getpid():
                    os.kill(pid, 0)
                    return False  # alive
            except (OSError, ValueError):
                pass  # stale (dead pid) or unreadable: remove and retry once
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _running_elsewhere(cell: tuple) -> bool:
    """A live process holds this cell's lock (e.g. a cell left running by a runner that was restarted)."""
    lock = STATE_DIR / f"{cell_name(*cell)}.lock"
    try:
        os.kill(int(lock.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


MAX_KILLS = 3  # a cell killed by a signal this many times in one runner is given up (as an error would be)


def run_grid(threads: int, datasets=DATASETS, horizons=HORIZONS, models=MODELS, precision: str = "fp32",
             grad_checkpointing: int = 0) -> None:
    """Every missing cell of datasets x horizons x models in order, each in a fresh subprocess (so it picks up
    the current code). The order is recomputed before every cell, so estimates written by a concurrent --plan
    are used as they land. Runners over disjoint models can share a machine; a cell another process is
    running is skipped (its lock is taken atomically by the cell itself)."""
    failed: set = set()
    killed: collections.Counter = collections.Counter()
    while True:
        estimates = _load_estimates()
        todo = [c for c in ordered_cells(estimates) if c not in failed and not _running_elsewhere(c)
                and c[0] in datasets and c[1] in horizons and c[2] in models
                and not (CELLS_DIR / f"{cell_name(*c)}.json").is_file()]
        if not todo:
            break
        # NOTE: the machine is shared: a cell whose training step would not fit in the free memory waits (an OOM
        # kill could hit another job), and a cheaper cell that fits runs meanwhile.
        free = _mem_available_gb()
        fits = [c for c in todo if memory_need_gb(*c, grad_checkpointing) <= free - 2.0]
        if not fits:
            print(f"[{time.strftime('%H:%M:%S')}] waiting: {cell_name(*todo[0])} needs "
                  f"~{memory_need_gb(*todo[0], grad_checkpointing):.0f} GB,"
                  f" {free:.0f} GB available", flush=True)
            time.sleep(120)  # a cell killed for memory (OOM) resumes soon after the memory is back
            continue
        ds, h, m = fits[0]
        est = estimates.get((ds, h, m))
        print(f"[{time.strftime('%H:%M:%S')}] start {cell_name(ds, h, m)} "
              f"({'estimate ' + _duration(est) + ' at most' if est else 'not yet measured'}; {len(todo)} cells left)",
              flush=True)
        t0 = time.perf_counter()
        # THP: the recipes' 512-2048 batches make activations far above glibc's 32 MiB mmap cap; on huge pages
        # a batch-512 fp32 FFNet-TS step takes 2.0 instead of 3.0 s (ffnet_ts.accel.keep_freed_memory). Cells
        # finished before 2026-12-01 ran without it: their train_seconds are not comparable with later ones.
        env = {"THP_MEM_ALLOC_ENABLE": "1", **os.environ, "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        rc = subprocess.run([sys.executable, __file__, "--cell", ds, str(h), m, "--threads", str(threads),
                             "--precision", precision, "--grad-checkpointing", str(grad_checkpointing)],
                            env=env).returncode
        print(f"[{time.strftime('%H:%M:%S')}] end {cell_name(ds, h, m)} rc={rc} "
              f"{(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        if rc < 0 and killed[(ds, h, m)] < MAX_KILLS:
            # killed by a signal: on this shared machine, the kernel's OOM killer (SIGKILL) when another job grew.
            # The cell resumes from its last finished epoch, so it goes back in the queue (memory permitting).
            killed[(ds, h, m)] += 1
            print(f"[{time.strftime('%H:%M:%S')}] {cell_name(ds, h, m)} was killed by signal {-rc}; it will resume "
                  f"from its last finished epoch (retry {killed[(ds, h, m)]} of {MAX_KILLS})", flush=True)
        elif rc != 0:
            failed.add((ds, h, m))
        write_table()


# ---------------------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------------------

NAMES = {"ffnet_ts": "FFNet-TS", "itransformer": "iTransformer", "patchtst": "PatchTST", "dlinear": "DLinear"}


def _f(pair) -> str:
    return f"{pair[0]:.3f} / {pair[1]:.3f}"


def _bf16(cell: dict) -> bool:
    return cell.get("train_args", {}).get("precision", "fp32") == "bf16"


def _cell(cell: dict) -> str:
    """A cell's MSE / MAE, marked ᵇ when its training steps ran under CPU bf16 autocast and ᶜ when under
    gradient checkpointing (``--grad-checkpointing``)."""
    gc = cell.get("train_args", {}).get("grad_checkpointing")
    return _f((cell["mse"], cell["mae"])) + (" ᵇ" if _bf16(cell) else "") + ("ᶜ" if gc else "")


def _duration(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def load_cells() -> dict:
    out = {}
    for p in sorted(CELLS_DIR.glob("*.json")):
        r = json.loads(p.read_text())
        out[(r["dataset"], r["horizon"], r["model"])] = r
    return out


def results_table(cells: dict) -> str:
    head = ("| data | H | " + " | ".join(f"{NAMES[m]} MSE / MAE" for m in MODELS)
            + " | paper FFNet | paper iTransformer |")
    lines = [head, "|---|---:|" + "---:|" * len(MODELS) + "---:|---:|"]
    ett_avgs = {m: [] for m in MODELS}
    for ds in DATASETS:
        for h in HORIZONS:
            row = [_cell(cells[(ds, h, m)]) if (ds, h, m) in cells else "missing" for m in MODELS]
            paper = PAPER_ITRANSFORMER.get((ds, h))
            lines.append(f"| {ds} | {h} | " + " | ".join(row) + f" | – | {_f(paper) if paper else '–'} |")
        avg = []
        for m in MODELS:
            rs = [cells[(ds, h, m)] for h in HORIZONS if (ds, h, m) in cells]
            if rs:
                pair = (sum(r["mse"] for r in rs) / len(rs), sum(r["mae"] for r in rs) / len(rs))
                avg.append(f"**{_f(pair)}**" + ("" if len(rs) == 4 else f" ({len(rs)}/4 H)"))
                if ds.startswith("ETT") and len(rs) == 4:
                    ett_avgs[m].append(pair)
            else:
                avg.append("missing")
        p = PAPER_AVG.get(ds, {})
        lines.append(f"| **{ds} avg** | | " + " | ".join(avg) + f" | {_f(p['ffnet_ts']) if 'ffnet_ts' in p else '–'}"
                     f" | {_f(p['itransformer'])} |")
    ett = []
    for m in MODELS:
        if len(ett_avgs[m]) == 4:
            ett.append("**" + _f(tuple(sum(v[i] for v in ett_avgs[m]) / 4 for i in range(2))) + "**")
        else:
            ett.append(f"missing ({len(ett_avgs[m])}/4 subsets complete)")
    lines.append("| **ETT avg** | | " + " | ".join(ett) + f" | {_f(PAPER_AVG['ETT']['ffnet_ts'])} | "
                 f"{_f(PAPER_AVG['ETT']['itransformer'])} |")
    return "\n".join(lines)


def cost_table(cells: dict) -> str:
    lines = ["| data | H | " + " | ".join(f"{NAMES[m]} train time / epochs / params" for m in MODELS) + " |",
             "|---|---:|" + "---:|" * len(MODELS)]
    for ds in DATASETS:
        for h in HORIZONS:
            row = []
            for m in MODELS:
                r = cells.get((ds, h, m))
                row.append(f"{_duration(r['train_seconds'])}{' bf16' if _bf16(r) else ''} / {r['epochs_run']} "
                           f"(best {r['best_epoch']}) / {r['params']:,}" if r else "missing")
            if any(x != "missing" for x in row):
                lines.append(f"| {ds} | {h} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def estimate_table() -> str:
    if not ESTIMATES.is_file():
        return "(no estimates yet: run --plan)"
    est = json.loads(ESTIMATES.read_text())
    by = {(r["dataset"], r["horizon"], r["model"]): r for r in est["rows"]}
    lines = ["| data | H | " + " | ".join(f"{NAMES[m]} step s (batch) / epoch / cell max" for m in MODELS) + " |",
             "|---|---:|" + "---:|" * len(MODELS)]
    totals = dict.fromkeys(MODELS, 0.0)
    for ds in DATASETS:
        for h in HORIZONS:
            row = []
            for m in MODELS:
                r = by.get((ds, h, m))
                if r is None:
                    row.append("not measured")
                    continue
                totals[m] += r["cell_seconds_max"]
                row.append(f"{r['step_seconds']:.3f} ({r['batch_size']}) / {_duration(r['epoch_seconds'])} / "
                           f"{_duration(r['cell_seconds_max'])}" + (" †" if r.get("note") else ""))
            lines.append(f"| {ds} | {h} | " + " | ".join(row) + " |")
    lines.append("| **total** | | " + " | ".join(f"**{_duration(totals[m])}**" for m in MODELS) + " |")
    grand = sum(totals.values())
    notes = "".join(f"\n\n† {r['dataset']} H{r['horizon']} {NAMES[r['model']]}: {r['note']}." for r in est["rows"]
                    if r.get("note"))
    rm = est.get("remeasured")
    if rm:
        notes += (f"\n\nRe-measured ETTh1 H96 at {rm['when']} (load average {rm['loadavg']}, code {rm['code']}): "
                  + ", ".join(f"{NAMES[r['model']]} {r['step_seconds']:.3f} s per batch-{r['batch_size']} step "
                              f"({r['cell_hours_max']:.2f} h per cell at most)" for r in rm["rows"])
                  + ". The plan above was measured at load average 10-15 (and before that commit for FFNet-TS), so "
                    "its estimates are 2-6x pessimistic for a quieter machine.")
    return "\n".join(lines) + notes + (f"\n\nWhole grid at the recipes' maximum epochs: **{grand / 3600:.0f} CPU-hours** "
                               f"(measured {est.get('measured', '?')}, load average {est.get('loadavg', 0):.1f} on "
                               f"2 cores shared with other agents; early stopping ends most cells sooner).")


def write_table() -> str:
    cells = load_cells()
    done = len(cells)
    order = ordered_cells(_load_estimates())
    text = "\n".join([
        "# Reference recipes at lookback 96: FFNet-TS vs iTransformer vs PatchTST vs DLinear",
        "",
        f"Generated by `benchmarks/timeseries_reference.py --table` from {done} of {len(order)} finished cells "
        "(`benchmarks/results/timeseries_reference/*.json`). Standard splits, lookback 96, features M, MSE / MAE in "
        "the standardized space over **every** test window, one seed (2021), 1 thread, on a shared 2-core CPU "
        "machine (other agents or a second grid job were running: times are shared-machine times, load average "
        "~1-15 depending on the session). Each model trains with its own "
        "published recipe, nothing selected on test. Averages use only finished cells (the count is given when "
        "a dataset is incomplete); the ETT average needs all 16 ETT cells of a model.",
        "",
        "## Test MSE / MAE",
        "",
        results_table(cells),
        "",
        "ᵇ: training steps under CPU bf16 autocast (`--precision bf16`, an AMX Xeon; validation and test in fp32). "
        "On the ETTh1 H96 reference recipe bf16 and fp32 gave test MSE 0.38611 vs 0.38608 for FFNet-TS, best epoch "
        "96 in both (`timeseries_bf16_etth1_reference_recipe.json`), and 0.37937 vs 0.37936 for PatchTST, best "
        "epoch 7 in both, 33 instead of 114 minutes (`timeseries_bf16_etth1_patchtst_reference_recipe.json`, "
        "session 21); PatchTST cells from session 21 on run in bf16. Every cell without the mark is fp32. "
        "ᶜ: FFNet-TS trained with `--grad-checkpointing 8` (session 31 on): the channel mixer's hidden layer in 8 "
        "recomputed feature slices (`FFNetTS.set_grad_checkpointing`), about half the memory for ~1.3x the step "
        "time, so two FFNet-TS cells fit the machine at once. Same model, recipe and parameters; the dropout masks "
        "are drawn per slice, so a run is not bit-identical to an unmarked one.",
        "",
        "Paper columns: FFNet's Table 5 (spec §2.6) gives only 4-horizon averages (ETT = mean of the four subsets); "
        "iTransformer per horizon from its paper (anchors §1.2; averages §9.1). Those runs used GPUs and, for "
        "iTransformer, calendar covariate tokens that our shared data code does not feed to any model.",
        "",
        "## Training cost of the finished cells (train time = training + per-epoch validation, this machine)",
        "",
        cost_table(cells),
        "",
        "## Plan: measured step times and estimated wall time per cell (recipe's maximum epochs, 1 thread)",
        "",
        estimate_table(),
        "",
        "Run order (resumable; cells with a JSON are skipped): H96 and H720 of every dataset first, cheapest first, "
        "then H192 / H336.",
        "",
        "## What is left: the missing cells re-measured on this machine",
        "",
        "`--plan --remaining --precision bf16`: each missing cell's step timed again (the plan above is from a "
        "loaded machine), and the hours it needs at most after its resume state.",
        "",
        remaining_table(),
        "",
        "## Recipes and their sources",
        "",
        *[f"* **{NAMES[m]}**: {SOURCES[m]}." for m in MODELS],
        "* Shared by all: our data code (standard splits, train-only scaler), Adam, MSE loss, early stopping on the "
        "validation MSE over every validation window with the best epoch's weights restored, the last partial "
        "training batch dropped (as our loop always does), every test window scored (drop_last False).",
        "* Deliberate differences from the original codes: iTransformer gets no calendar-feature tokens (our data "
        "pipeline gives every model values only); seed 2021 for every model (iTransformer's run.py uses 2023).",
        "",
    ])
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TABLE.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, TABLE)
    sync_readme(results_table(cells), done, len(order))
    plot_grid(cells)
    return text


PLOT = RESULTS / "timeseries_reference.png"
REL_YLIM = (-20, 40)  # % vs iTransformer; taller bars (DLinear on ETTh2: up to +100 %) are clipped and labelled
COLORS = {"ffnet_ts": "C3", "itransformer": "C0", "patchtst": "C2", "dlinear": "0.45"}


def plot_grid(cells: dict, path: Path = PLOT) -> dict:
    """PNG of the finished cells: per dataset, test MSE against the horizon for each model (top row) and each
    model's MSE relative to iTransformer's in the same run (bottom row, %; below 0 = better than iTransformer).
    Missing cells are left out, never interpolated. Returns the plotted points {(row, model, dataset): [(h, y)]}
    so a test can check what was drawn."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ffnet.fileio import save_figure

    drawn: dict = {}
    fig, axes = plt.subplots(2, len(DATASETS), figsize=(3.2 * len(DATASETS), 6.2), squeeze=False)
    x_of = {h: i for i, h in enumerate(HORIZONS)}
    for j, ds in enumerate(DATASETS):
        top, bottom = axes[0, j], axes[1, j]
        paper = [(x_of[h], PAPER_ITRANSFORMER[(ds, h)][0]) for h in HORIZONS if (ds, h) in PAPER_ITRANSFORMER]
        if paper:
            top.plot(*zip(*paper), "x", color="0.6", ms=6, label="iTransformer (paper)")
        width = 0.8 / (len(MODELS) - 1)
        k = 0
        for m in MODELS:
            pts = [(h, cells[(ds, h, m)]["mse"]) for h in HORIZONS if (ds, h, m) in cells]
            drawn[("mse", m, ds)] = pts
            if pts:  # NaN at a missing horizon breaks the line there: no segment bridges a missing cell
                ys = [cells[(ds, h, m)]["mse"] if (ds, h, m) in cells else float("nan") for h in HORIZONS]
                top.plot(range(len(HORIZONS)), ys, "o-", color=COLORS[m], ms=4,
                         lw=2.2 if m == "ffnet_ts" else 1.2, label=NAMES[m])
            if m == "itransformer":
                continue
            rel = [(h, 100 * (cells[(ds, h, m)]["mse"] / cells[(ds, h, "itransformer")]["mse"] - 1)) for h in HORIZONS
                   if (ds, h, m) in cells and (ds, h, "itransformer") in cells]
            drawn[("rel", m, ds)] = rel
            if rel:
                xs = [x_of[h] - 0.4 + width * (k + 0.5) for h, _ in rel]
                bottom.bar(xs, [y for _, y in rel], width, color=COLORS[m], label=NAMES[m])
                for x, (_, y) in zip(xs, rel):
                    if y > REL_YLIM[1]:  # clipped bar: print its value
                        bottom.annotate(f"+{y:.0f}", (x, REL_YLIM[1]), xytext=(0, -9), textcoords="offset points",
                                        ha="center", fontsize=6, color="white")
            k += 1
        for ax in (top, bottom):
            ax.set_xticks(range(len(HORIZONS)), [str(h) for h in HORIZONS])
            ax.set_xlim(-0.6, len(HORIZONS) - 0.4)
            ax.grid(axis="y", color="0.9")
        bottom.axhline(0, color="C0", lw=1)
        bottom.set_ylim(*REL_YLIM)
        top.set_title(ds, fontsize=10)
        bottom.set_xlabel("horizon")
        for h in HORIZONS:
            gaps = [NAMES[m][0] for m in MODELS if (ds, h, m) not in cells]
            if gaps:
                top.annotate("missing: " + ",".join(gaps), (x_of[h], 0), xycoords=("data", "axes fraction"),
                             xytext=(0, 3), textcoords="offset points", ha="center", fontsize=6, color="0.4")
    axes[0, 0].set_ylabel("test MSE (standardized)")
    axes[1, 0].set_ylabel("MSE vs iTransformer, same run (%)")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[1, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Reference recipes, lookback 96, every test window: {len(cells)} of "
                 f"{len(DATASETS) * len(HORIZONS) * len(MODELS)} cells (missing: D DLinear, i iTransformer, "
                 "P PatchTST, F FFNet-TS)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return drawn


README = HERE.parent / "packages" / "timeseries" / "README.md"
README_START, README_END = "<!-- reference-table:start -->", "<!-- reference-table:end -->"


def sync_readme(table: str, done: int, total: int, readme: Path = README) -> bool:
    """Replace the block between the README's two markers with the current results table (atomic write).

    Returns False, touching nothing, when the file or either marker is missing."""
    if not readme.is_file():
        return False
    s = readme.read_text()
    i, j = s.find(README_START), s.find(README_END)
    if i < 0 or j < i:
        return False
    block = (f"{README_START}\n<!-- generated by benchmarks/timeseries_reference.py --table; edits here are "
             f"overwritten -->\n{done} of {total} cells finished.\n\n{table}\n")
    new = s[:i] + block + s[j:]
    if new != s:
        tmp = readme.with_suffix(".md.tmp")
        tmp.write_text(new)
        os.replace(tmp, readme)
    return True


# ---------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--plan", action="store_true", help="measure step times and write the wall-time estimates")
    p.add_argument("--remaining", action="store_true",
                   help="with --plan: re-measure only the missing cells (at --precision) and their time left")
    g.add_argument("--run", action="store_true", help="run every missing cell (resumable), each as a subprocess")
    g.add_argument("--cell", nargs=3, metavar=("DATASET", "HORIZON", "MODEL"), help="run one cell")
    g.add_argument("--table", action="store_true", help="regenerate the markdown table from the finished cells")
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--horizons", nargs="+", type=int, default=HORIZONS)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", choices=T.PRECISIONS, default="fp32",
                   help="training-step precision of the cells run (bf16: CPU autocast, native-bf16 CPUs only; "
                        "recorded per cell and marked in the table)")
    p.add_argument("--grad-checkpointing", type=int, default=0, metavar="CHUNKS",
                   help="FFNet-TS cells: the channel mixer's hidden layer in CHUNKS recomputed slices (about half "
                        "the memory, ~1.3x the step time; recorded per cell and marked in the table); 0: off")
    p.add_argument("--epochs", type=int, default=None, help="smoke tests only: override the recipe's epochs")
    p.add_argument("--max-windows", type=int, default=None, help="smoke tests only: windows kept per split")
    p.add_argument("--out-dir", default=None, help="where --cell writes its JSON (default: results dir)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.table:
        print(write_table())
        return 0
    if args.plan and args.remaining:
        plan_remaining(args.precision, args.datasets, args.horizons, args.models)
        write_table()
        return 0
    if args.plan:
        plan(args.datasets, args.horizons, args.models, ESTIMATES)
        write_table()
        return 0
    if args.run:
        try:
            T.check_precision(args.precision, torch.device("cpu"))
        except T.ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        run_grid(args.threads, args.datasets, args.horizons, args.models, args.precision, args.grad_checkpointing)
        return 0
    ds, h, model = args.cell[0], int(args.cell[1]), args.cell[2]
    if ds not in DATASETS or h not in HORIZONS or model not in MODELS:
        print(f"error: unknown cell {ds} {h} {model} (datasets {DATASETS}, horizons {HORIZONS}, models {MODELS})",
              file=sys.stderr)
        return 2
    smoke = args.epochs is not None or args.max_windows is not None
    out_dir = Path(args.out_dir) if args.out_dir else CELLS_DIR
    if smoke and not args.out_dir:
        print("error: --epochs / --max-windows are for smoke tests; give --out-dir so results/ stays clean",
              file=sys.stderr)
        return 2
    if (out_dir / f"{cell_name(ds, h, model)}.json").is_file():
        print(f"{cell_name(ds, h, model)}: already finished ({out_dir}); delete its JSON to re-run", file=sys.stderr)
        return 0
    try:
        run_cell(ds, h, model, out_dir=out_dir, epochs=args.epochs, max_windows=args.max_windows,
                 threads=args.threads, precision=args.precision, grad_checkpointing=args.grad_checkpointing)
    except (CellBusy, T.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
