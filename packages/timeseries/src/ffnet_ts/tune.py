"""Validation-only hyper-parameter search for FFNet-TS (``ffnet-ts forecast --tune [MINUTES]``).

A CSV that is not in the registry has no per-dataset recipe (spec §2.4 only covers the benchmark datasets),
so the search picks ``ffn_ratio``, ``dropout``, ``head_dropout``, ``lr`` and ``batch_size`` on the
validation split inside a wall-clock budget:

* **Successive halving** (Jamieson & Talwalkar, 2016). ``n`` configurations (the generic default first, then
  the generic default at the other learning rates of the space, then draws without replacement from
  ``SEARCH_SPACE`` by a seeded RNG) train ``r0`` epochs; the best
  ``n / eta`` by validation MSE continue to ``r0 * eta`` epochs, and so on until one is left. The survivor
  then keeps training (same run, continued from its resume file) until early stopping, the epoch cap or
  the end of the budget, and its best-validation weights are the result. Test is never evaluated here;
  the caller scores it once, after the choice.
* **Every stage anneals** (``anneal=True``, the default; otherwise everything runs at ``base_cfg``'s
  schedule). Each rung trains its new epochs with a cosine from the candidate's lr to 0 (a warm restart per
  rung, ``TrainConfig.schedule_offset``), so a high lr is compared after its decay, as the survivor will use
  it, not in the noisy middle of a constant-lr run. The survivor then plans as many more epochs as fit in
  ``ANNEAL_FILL`` of the budget left, at its own measured seconds per epoch, with one more cosine to 0 over
  exactly those epochs. Early stopping is off inside an annealed stage (the restart worsens validation for a
  while on purpose); the best-validation weights are still kept. Under a budget of a few epochs, ending at
  lr 0 instead of being cut at a constant lr is what makes a short run count: on Weather H96 one epoch at lr 1e-3 with the cosine reached validation
  MSE 0.394, where the reference recipe needed 7 epochs (README, tuning). The plan is in the state file.
* **Budget -> plan.** A short calibration measures seconds per training window (at the costliest
  ``ffn_ratio`` of the space) and per validation window; the plan then sizes an "epoch" (``epoch_windows``,
  a seeded random subset of the train windows when a full pass would be too long) so that the halving
  rungs take about ``SEARCH_FRACTION`` of the budget and the survivor gets the rest (its last epoch is cut
  when the budget ends inside it, see ``train.fit``). Validation scores every ``val_stride``-th window (at
  most ``MAX_VAL_WINDOWS``): neighbouring windows overlap in all but one row, so this costs little
  information and a lot less time. The plan depends on the measured speed, so it is stored in the state
  file: a resumed search keeps the plan it started with.
* **Learning rate first.** A 10-minute budget on a mid-sized CSV affords three candidates (plan ``(3, 3, 1)``).
  Drawn at random out of the 720 combinations, three candidates are a coin toss, and on Weather H96 the
  draws never paired the generic model with a high lr, which the annealed schedule favours under a short
  budget (README, tuning: one annealed epoch at lr 1e-3 reached a validation MSE no 10-minute search
  reached). So the candidates after the base are the base at the space's other learning rates, the
  farthest first; random draws fill the rest of larger searches. With this order (and a faster step), lr 1e-3
  won rung 0 of all three 10-minute Weather searches measured and each came within 3 % of the reference cell.
* **Equal time, not equal epochs.** The calibration also times the cheapest ``ffn_ratio``; a candidate's
  epoch then holds ``epoch_windows`` x (costliest / its own seconds per window, linear in ``ffn_ratio``
  between the two measured) windows, up to a full pass. Every candidate gets about the same seconds per rung,
  so a cheap model that learns more from the windows it can afford is not ranked as if it had the costly
  one's budget: under a budget, that is the trade the survivor will face too.
* **Deterministic** for a fixed seed and plan: the choice depends only on the validation scores, which are
  bit-reproducible on CPU with a fixed thread count (pass ``calibration`` to pin the plan, as the tests do).
  Ties go to the lower candidate index. If a loaded machine makes the search overrun its budget, the rung
  in progress is cut short and ``budget_exhausted`` is recorded; only then does timing affect the choice.
* **Resumable**: ``tune_state.json`` in ``out_dir`` records the plan and every finished (candidate, rung);
  each candidate trains through ``fit``'s exact resume file, so an interrupted search continues where it
  stopped (``ffnet-ts forecast --tune --resume``).
* **No test access by construction**: ``search_view`` hands the search a copy of the data cut at the end
  of the validation split whose ``borders`` raise ``TestSplitAccess`` on ``"test"``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import train as T
from .data import Prepared, gather_windows

SEARCH_SPACE: dict[str, tuple] = {
    "ffn_ratio": (2, 4, 8, 12),
    "dropout": (0.3, 0.5, 0.6, 0.7, 0.8),
    "head_dropout": (0.0, 0.1, 0.2),
    "lr": (1e-4, 3e-4, 1e-3),
    "batch_size": (64, 128, 256, 512),
}
SEARCH_FRACTION = 0.6  # of the budget for the halving rungs; the survivor trains in the rest
MAX_VAL_WINDOWS = 1000
STATE_FORMAT = "ffnet-ts-tune/1"
STATE_FILE = "tune_state.json"
# (configurations, eta, epochs in the first rung), most thorough first: the first whose epochs are not
# smaller than MIN_EPOCH_STEPS batches is used.
PLAN_OPTIONS = ((9, 3, 2), (4, 2, 2), (3, 3, 1), (2, 2, 1))
MIN_EPOCH_STEPS = 4
ANNEAL_FILL = 0.9  # of the budget left that the survivor's annealing schedule is planned to fill
# An annealed stage runs to its planned end: a warm restart makes validation worse for a few epochs on purpose,
# and early stopping would end the stage there (seen: a 30-minute Weather search whose survivor stopped 3 epochs
# into its restart at lr 1e-3, with 600 s of budget left). The best-validation weights are still the result.
NO_EARLY_STOP = 1 << 30


class TestSplitAccess(RuntimeError):
    """The search touched the test split (a bug: the tuner must see train and validation only)."""

    __test__ = False  # not a pytest class


class _TrainValBorders(dict):
    def __getitem__(self, split):
        if split == "test":
            raise TestSplitAccess("the hyper-parameter search must not read the test split")
        return super().__getitem__(split)


def search_view(prep: Prepared) -> Prepared:
    """``prep`` without its test split: data cut at the end of validation, ``borders['test']`` raises."""
    end = prep.borders["val"][1]
    borders = _TrainValBorders(train=prep.borders["train"], val=prep.borders["val"])
    return dataclasses.replace(prep, data=prep.data[:end].clone(), borders=borders)


# ---------------------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    n_configs: int
    eta: int
    rung_epochs: list[int]  # cumulative epochs at the end of each halving rung
    epoch_windows: int
    val_stride: int
    estimated_search_s: float

    def survivors(self, rung: int) -> int:
        return max(self.n_configs // self.eta ** rung, 1)


def make_plan(budget_s: float, train_windows: int, val_windows: int, calibration: dict,
              max_batch: int = 512, n_space: int | None = None, min_batch: int = 64) -> Plan:
    """Size the halving rungs so that they take about ``SEARCH_FRACTION`` of ``budget_s``.

    When even the smallest plan cannot give every epoch ``MIN_EPOCH_STEPS`` batches of the largest size, its
    epochs shrink (down to ``MIN_EPOCH_STEPS`` batches of the smallest size) so that the survivor still gets
    the rest of the budget instead of the search eating all of it.
    """
    stride = max(math.ceil(val_windows / MAX_VAL_WINDOWS), 1)
    val_s = math.ceil(val_windows / stride) * calibration["val_window_s"]
    min_windows = min(train_windows, MIN_EPOCH_STEPS * max_batch)
    options = [o for o in PLAN_OPTIONS if n_space is None or o[0] <= n_space] or [(max(n_space or 1, 1), 2, 1)]
    for i, (n, eta, r0) in enumerate(options):
        rungs = [r0 * eta ** k for k in range(max(round(math.log(n, eta)), 1))]
        # epochs trained during the rungs: n_k candidates each add (r_k - r_{k-1}) epochs
        epochs = sum(max(n // eta ** k, 1) * (r - (rungs[k - 1] if k else 0)) for k, r in enumerate(rungs))
        per_epoch = SEARCH_FRACTION * budget_s / epochs
        windows = min(train_windows, int((per_epoch - val_s) / calibration["train_window_s"]))
        if windows >= min_windows or i == len(options) - 1:
            windows = max(windows, min_windows if windows >= min_windows else
                          min(train_windows, MIN_EPOCH_STEPS * min_batch))
            est = epochs * (windows * calibration["train_window_s"] + val_s)
            return Plan(n, eta, rungs, windows, stride, est)
    raise AssertionError("unreachable")


def window_cost(calibration: dict, ffn_ratio: float) -> float:
    """Seconds per training window at ``ffn_ratio``: linear between the calibrated cheapest and costliest
    ratios (the channel mixer's cost is linear in it), the costliest's when only that one was measured."""
    by = calibration.get("train_window_s_by_ffn_ratio")
    if not by or len(by) < 2:
        return calibration["train_window_s"]
    points = sorted((float(k), float(v)) for k, v in by.items())
    (r0, s0), (r1, s1) = points[0], points[-1]
    return max(s0 + (s1 - s0) * (ffn_ratio - r0) / (r1 - r0), 1e-12)


def candidate_windows(plan: Plan, calibration: dict, config: dict, train_windows: int) -> int:
    """Training windows per epoch for ``config``: the plan's (sized for the costliest ffn_ratio) times how much
    cheaper ``config`` is per window, so that every candidate's epoch takes about the same time; at most a
    full pass, never fewer than the plan's."""
    scale = calibration["train_window_s"] / window_cost(calibration, config["ffn_ratio"])
    return min(max(int(plan.epoch_windows * scale), plan.epoch_windows), train_windows)


def calibrate(view: Prepared, build: Callable[[dict], tuple], config: dict, *, device="cpu",
              steps: int = 3, precision: str = "fp32", warmup: int = 2) -> dict:
    """Seconds per training window and per validation window for ``config``, at the training ``precision``.

    ``warmup`` untimed steps first (a fresh process pays for its first large allocations), then the fastest of
    ``steps`` timed ones: on a shared machine the slow outliers are other processes, not the model.
    """
    torch.manual_seed(0)
    device = torch.device(device)
    model, _ = build(config)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = view.data.to(device)
    start, n = view.borders["train"][0], view.windows("train")
    bs = min(128, n)
    times = []
    for i in range(steps + warmup):
        idx = torch.randint(0, n, (bs,), generator=torch.Generator().manual_seed(i))
        t0 = time.perf_counter()
        x, y = gather_windows(data, start, idx, view.lookback, view.horizon)
        with T._autocast(device, False, precision):
            out = model(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    train_s = min(times[warmup:]) / bs
    nv = min(view.windows("val"), 256)
    t0 = time.perf_counter()
    T.evaluate(model, dataclasses.replace(view, borders=_TrainValBorders(
        train=view.borders["train"], val=(view.borders["val"][0], view.borders["val"][0] + nv + view.lookback
                                          + view.horizon - 1))), "val", device=device)
    val_s = (time.perf_counter() - t0) / nv
    return {"train_window_s": train_s, "val_window_s": val_s, "config": config}


# ---------------------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------------------


def sample_configs(space: dict[str, tuple], base: dict, n: int, seed: int) -> list[dict]:
    """``base`` (snapped into the space) first; then ``base`` at the space's other learning rates, the farthest
    from ``base``'s first (on a log scale); then distinct configurations drawn with ``seed``, ``n`` in all.

    The learning rate goes first because, under a budget, it is the setting that decides most: a short search
    affords only two or three candidates, and three random draws out of hundreds of combinations rarely
    include the base model at another lr (see the module docstring)."""
    keys = list(space)
    first = {k: (base[k] if base.get(k) in space[k] else space[k][0]) for k in keys}
    lrs = sorted((lr for lr in space.get("lr", ()) if lr != first.get("lr")),
                 key=lambda lr: (-abs(math.log(lr / first["lr"])), -lr))
    chosen = [first] + [{**first, "lr": lr} for lr in lrs][:max(n - 1, 0)]
    grid = [dict(zip(keys, v)) for v in itertools.product(*(space[k] for k in keys))]
    grid = [g for g in grid if g not in chosen]
    rng = random.Random(seed)
    return chosen + rng.sample(grid, min(n - len(chosen), len(grid)))


@dataclasses.dataclass
class TuneResult:
    config: dict  # the chosen settings
    candidate: int
    model: torch.nn.Module  # holding the chosen run's best-validation weights
    model_args: dict
    fit: T.FitResult
    train_config: T.TrainConfig
    table: list[dict]  # one row per candidate: settings and validation MSE after each rung
    state: dict


def _save_state(path: Path, state: dict) -> None:
    from ffnet.fileio import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(state, indent=2) + "\n").encode())


def _table(state: dict) -> list[dict]:
    rows = []
    for c in state["candidates"]:
        res = state["results"].get(str(c["id"]), {})
        row = {"id": c["id"], **c["config"], "epoch_windows": candidate_windows(
            Plan(**state["plan"]), state["calibration"], c["config"], state.get("train_windows", 1 << 62))}
        for key, r in res.items():
            row[f"val_mse_{key}"] = r["best_val_mse"]
        last = list(res.values())[-1] if res else None
        row.update(epochs=last["epochs_run"] if last else 0, seconds=round(last["seconds"], 1) if last else 0.0,
                   chosen=c["id"] == state.get("winner"))
        rows.append(row)
    return rows


def tune(view: Prepared, build: Callable[[dict], tuple], base_config: dict, base_cfg: T.TrainConfig, *,
         budget_s: float, out_dir: str | Path, model_name: str, data_meta: dict,
         space: dict[str, tuple] | None = None, seed: int = 2021, max_epochs: int = 100,
         calibration: dict | None = None, resume: bool = False, anneal: bool = True, log=None) -> TuneResult:
    """Successive-halving search on ``view`` (train + validation only); see the module docstring.

    Args:
        view: the protocol data without a test split (``search_view(prep)``).
        build: ``config -> (model, model_args)``; called after seeding, so every candidate starts from the
            same seed.
        base_config: the generic default settings (always candidate 0).
        base_cfg: training config for everything the search does not choose (schedule, patience, device...).
        budget_s: wall-clock seconds for the whole search including the survivor's training.
        out_dir: where ``tune_state.json`` and each candidate's checkpoint / resume files go.
        model_name / data_meta: stored in the checkpoints (so the winner's checkpoint works with ``predict``).
        space: values per searched setting (default ``SEARCH_SPACE``); one-value tuples pin a setting.
        seed: drives the candidate draw and (through ``base_cfg.seed``-independent init seeding) the models.
        max_epochs: epoch cap for any candidate.
        calibration: ``{"train_window_s", "val_window_s"}``; measured when None.
        resume: continue the search recorded in ``out_dir``.
        anneal: train each rung's new epochs, and the survivor's epochs that fit in the budget left, with a
            cosine to lr 0 (see the module docstring); False: everything at ``base_cfg``'s schedule.
        log: one-line progress messages (default stderr).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    space = dict(space or SEARCH_SPACE)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    mark = time.perf_counter()
    key = {"seed": seed, "budget_s": budget_s, "space": {k: list(v) for k, v in space.items()},
           "base_config": base_config, "model": model_name, "data": data_meta, "anneal": anneal}
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("format") != STATE_FORMAT or state.get("key") != json.loads(json.dumps(key)):
            raise T.ConfigError(f"{state_path}: recorded for other search settings; cannot resume (use --force)")
        log(f"tune: resuming the search in {state_path} ({state['elapsed_s']:.0f}s already spent)")
    else:
        if calibration is None:
            dev = base_cfg.device if base_cfg.device != "auto" else "cpu"
            hi, lo = max(space["ffn_ratio"]), min(space["ffn_ratio"])
            calibration = calibrate(view, lambda c: _seeded(build, c, seed), {**base_config, "ffn_ratio": hi},
                                    device=dev, precision=base_cfg.precision)
            if lo != hi:
                cheap = calibrate(view, lambda c: _seeded(build, c, seed), {**base_config, "ffn_ratio": lo},
                                  device=dev, precision=base_cfg.precision)
                calibration["train_window_s_by_ffn_ratio"] = {str(hi): calibration["train_window_s"],
                                                              str(lo): cheap["train_window_s"]}
        n_space = math.prod(len(v) for v in space.values())
        plan = make_plan(budget_s, view.windows("train"), view.windows("val"), calibration,
                         max_batch=max(space["batch_size"]), min_batch=min(space["batch_size"]), n_space=n_space)
        cands = sample_configs(space, base_config, plan.n_configs, seed)
        state = {"format": STATE_FORMAT, "key": key, "calibration": {k: calibration[k] for k in
                                                                       ("train_window_s", "val_window_s",
                                                                        "train_window_s_by_ffn_ratio")
                                                                       if k in calibration},
                 "plan": dataclasses.asdict(plan), "candidates": [{"id": i, "config": c} for i, c in enumerate(cands)],
                 "results": {}, "elapsed_s": 0.0, "budget_exhausted": False, "winner": None,
                 "train_windows": view.windows("train")}
        _save_state(state_path, state)
        log(f"tune: {len(cands)} configurations, halving by {plan.eta} at epochs {plan.rung_epochs}, "
            f"{plan.epoch_windows} train windows per epoch at ffn_ratio {max(space['ffn_ratio'])} (more for cheaper "
            f"ones, same time), every {plan.val_stride} val window(s); "
            f"budget {budget_s:.0f}s (search ~{plan.estimated_search_s:.0f}s, the rest for the survivor)")
    plan = Plan(**state["plan"])
    cands = {c["id"]: c["config"] for c in state["candidates"]}

    def spend():
        nonlocal mark
        now = time.perf_counter()
        state["elapsed_s"] += now - mark
        mark = now
        _save_state(state_path, state)

    def cfg_for(config: dict, epochs: int, time_budget=None, anneal_from: int | None = None) -> T.TrainConfig:
        """``anneal_from``: a cosine to lr 0 over the epochs after that one, without early stopping (see
        NO_EARLY_STOP); None: ``base_cfg``'s schedule and patience."""
        annealed = ({} if anneal_from is None else
                    {"lr_schedule": "cosine", "schedule_offset": anneal_from, "patience": NO_EARLY_STOP})
        windows = candidate_windows(plan, state["calibration"], config, view.windows("train"))
        return dataclasses.replace(base_cfg, epochs=epochs, batch_size=config["batch_size"], lr=config["lr"],
                                   seed=seed, time_budget=time_budget, epoch_windows=windows,
                                   val_stride=plan.val_stride, progress=False, **annealed)

    def run(cid: int, cfg: T.TrainConfig, tag: str):
        model, margs = _seeded(build, cands[cid], seed)
        meta = {"model": {"name": model_name, "args": margs}, "data": data_meta}
        last = out_dir / f"cand{cid:02d}_resume.pt"
        res = T.fit(model, view, cfg, meta=meta, best_path=out_dir / f"cand{cid:02d}_best.pt", last_path=last,
                    resume=last.is_file(), desc=f"tune #{cid} {tag}", log=lambda s: None)
        return model, margs, res

    alive = sorted(cands)
    for rung, epochs in enumerate(plan.rung_epochs):
        for cid in alive:
            done = state["results"].setdefault(str(cid), {})
            if str(rung) in done:
                continue
            over = state["elapsed_s"] + time.perf_counter() - mark > budget_s
            if over and any(state["results"].values()):  # at least one result, or there is nothing to choose
                state["budget_exhausted"] = True
                break
            # with anneal, each rung is a cosine from the candidate's lr to 0 over the rung's new epochs (a warm
            # restart per rung), so a high lr is judged after its decay, as the survivor will use it
            start = (plan.rung_epochs[rung - 1] if rung else 0) if anneal else None
            _, _, res = run(cid, cfg_for(cands[cid], epochs, anneal_from=start), f"rung {rung}")
            done[str(rung)] = _record(res)
            spend()
            log(f"tune: rung {rung} #{cid} {_fmt(cands[cid])}: val_mse {res.best_val_mse:.4f} "
                f"({res.epochs_run} epochs, {state['elapsed_s']:.0f}s of {budget_s:.0f}s)")
        if state["budget_exhausted"]:
            break
        scored = sorted(alive, key=lambda c: (state["results"][str(c)][str(rung)]["best_val_mse"], c))
        alive = scored[:plan.survivors(rung + 1)]
        for cid in scored[len(alive):]:  # eliminated: their weights are no longer needed
            (out_dir / f"cand{cid:02d}_resume.pt").unlink(missing_ok=True)
            (out_dir / f"cand{cid:02d}_best.pt").unlink(missing_ok=True)
    # The survivor continues until it stops. When the budget ran out mid-rung, the alive candidate with the
    # best latest score does (best-so-far scores only fall, so it beats every eliminated one).
    latest = {int(c): list(r.values())[-1]["best_val_mse"] for c, r in state["results"].items() if r}
    winner = min((c for c in alive if c in latest), key=lambda c: (latest[c], c))
    state["winner"] = winner
    remaining = budget_s - (state["elapsed_s"] + time.perf_counter() - mark)
    prev = state["results"].get(str(winner), {})
    spent = list(prev.values())[-1]["seconds"] if prev else 0.0
    if state.get("final") is None:  # planned once: a resumed search keeps the plan it started with
        state["final"] = _final_plan(prev, remaining, max_epochs, anneal)
        _save_state(state_path, state)
    final = state["final"]
    start = final["schedule_offset"] if final["lr_schedule"] == "cosine" else None
    cfg = cfg_for(cands[winner], final["epochs"], time_budget=spent + max(remaining, 1e-3), anneal_from=start)
    if final["lr_schedule"] == "cosine":
        log(f"tune: survivor #{winner} anneals lr {cands[winner]['lr']:g} -> 0 over epochs "
            f"{final['schedule_offset'] + 1}-{final['epochs']} (planned from {final['epoch_s']:.1f}s per epoch "
            f"and {max(remaining, 0):.0f}s left)")
    model, margs, res = run(winner, cfg, "final")
    state["results"].setdefault(str(winner), {})["final"] = _record(res)
    spend()
    log(f"tune: chose #{winner} {_fmt(cands[winner])}: val_mse {res.best_val_mse:.4f} after {res.epochs_run} "
        f"epochs ({res.stop_reason}); search took {state['elapsed_s']:.0f}s of {budget_s:.0f}s")
    return TuneResult(cands[winner], winner, model, margs, res, cfg, _table(state), state)


def _final_plan(prev: dict, remaining: float, max_epochs: int, anneal: bool) -> dict:
    """The survivor's epochs: without ``anneal`` (or with nothing measured yet) it runs to ``max_epochs`` at the
    base schedule; with it, ``ANNEAL_FILL`` of ``remaining`` seconds at its measured seconds per epoch, at least
    one more epoch, and a cosine to lr 0 from the epochs it has already trained."""
    last = list(prev.values())[-1] if prev else None
    if not anneal or not last or not last["epochs_run"]:
        return {"lr_schedule": "base", "epochs": max_epochs, "schedule_offset": 0, "epoch_s": 0.0}
    done = last["epochs_run"]
    epoch_s = last["seconds"] / done
    more = max(int(ANNEAL_FILL * max(remaining, 0.0) / max(epoch_s, 1e-9)), 1)
    epochs = min(max_epochs, done + more)
    return {"lr_schedule": "cosine" if epochs > done else "base", "epochs": max(epochs, done),
            "schedule_offset": done, "epoch_s": epoch_s}


def _seeded(build, config, seed):
    torch.manual_seed(seed)
    return build(config)


def _record(res: T.FitResult) -> dict:
    return {"best_val_mse": res.best_val_mse, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
            "seconds": res.train_seconds, "stop_reason": res.stop_reason}


def _fmt(c: dict) -> str:
    return (f"ffn_ratio {c['ffn_ratio']} dropout {c['dropout']} head_dropout {c['head_dropout']} lr {c['lr']:g} "
            f"batch {c['batch_size']}")
