"""Reference forecasts printed beside every model: does the network add skill over trivial predictors?

Both are scored on exactly the windows the model is scored on (``Prepared.borders``, every window, the
standardized space, the scored columns), so their rows in the forecast table are directly comparable:

* **naive**: repeat the last observed value of each variable for the whole horizon (persistence).
* **linear**: one closed-form linear map from the ``lookback`` values of a variable (plus an intercept) to
  its ``horizon`` future values, shared by all variables (each variable's windows are extra rows of the
  same least-squares problem, in the standardized space). It is fitted on the train windows only; the ridge
  strength is chosen on the validation windows from ``RIDGE_ALPHAS`` (``lambda = alpha * rows``, the
  intercept is not penalized). This is the univariate "Linear" model of LTSF-Linear (Zeng et al., 2023)
  solved exactly instead of by SGD.

Everything is float64 numpy on the normal equations, accumulated one variable at a time, so the memory
stays at one variable's windows even for Weather at H=720.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from .data import (
    AMPLITUDES,
    CYCLE_SHRINK,
    DataError,
    Prepared,
    cycle_gain,
    daily_period,
    fit_cycle,
    remove_cycle,
    time_step_ns,
)

RIDGE_ALPHAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _windows(prep: Prepared, split: str, column: int) -> np.ndarray:
    """(windows, lookback + horizon) float64 view of one column's windows of ``split``.

    With a window-amplitude cycle each window is ``[x - g cx | y - g cy]`` (``data.cycle_gain``): what the
    model sees and what it must forecast, so a linear map fitted on these windows is the closed-form
    relative of a network trained with that cycle, and its error is the series' error."""
    a, b = prep.borders[split]
    z = prep.data[a:b, column].double().numpy()
    w = sliding_window_view(z, prep.lookback + prep.horizon)
    if prep.cycle is None or prep.cycle.shrink is None:
        return w
    L = prep.lookback
    cw = sliding_window_view(prep.cycle.at(prep.series.dates.asi8[a:b])[:, column], prep.lookback + prep.horizon)
    g = cycle_gain(torch.from_numpy(np.ascontiguousarray(w[:, :L, None])),
                   torch.from_numpy(np.ascontiguousarray(cw[:, :L, None])), prep.cycle.shrink).numpy()[:, :, 0]
    return w - g * cw


def naive_metrics(prep: Prepared, split: str = "test") -> dict:
    """MSE / MAE of repeating the last observed value, over every window of ``split``."""
    L = prep.lookback
    sse = sae = 0.0
    n = prep.windows(split)
    for c in prep.out_idx:
        w = _windows(prep, split, c)
        err = w[:, L:] - w[:, L - 1:L]
        sse += float(np.square(err).sum())
        sae += float(np.abs(err).sum())
    count = n * prep.horizon * len(prep.out_idx)
    return {"mse": sse / count, "mae": sae / count, "windows": n}


@dataclass
class LinearBaseline:
    """A fitted shared linear map: ``y = x @ weight[:-1] + weight[-1]`` for one variable's window ``x``."""

    weight: np.ndarray  # (lookback + 1, horizon)
    alpha: float
    val_mse: float
    selection: list[dict]  # [{"alpha", "val_mse"}] for every alpha tried

    @property
    def params(self) -> int:
        return int(self.weight.size)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, lookback) -> (n, horizon)."""
        return x @ self.weight[:-1] + self.weight[-1]

    def as_module(self) -> torch.nn.Module:
        """The map as a forecaster module, (B, lookback, M) -> (B, horizon, M) (:class:`ffnet_ts.model.LinearMap`)."""
        from .model import LinearMap

        return LinearMap.from_weight(self.weight)


def _scores_many(weights: list[np.ndarray], prep: Prepared, split: str, columns) -> list[tuple[float, float]]:
    """(MSE, MAE) of each weight over ``split``; each column's windows are built once for all the weights."""
    L = prep.lookback
    sse, sae = [0.0] * len(weights), [0.0] * len(weights)
    for c in columns:
        w = _windows(prep, split, c)
        for i, weight in enumerate(weights):
            err = w[:, :L] @ weight[:-1] + weight[-1] - w[:, L:]
            sse[i] += float(np.square(err).sum())
            sae[i] += float(np.abs(err).sum())
    count = prep.windows(split) * prep.horizon * len(columns)
    return [(a / count, b / count) for a, b in zip(sse, sae)]


def _scores(weight: np.ndarray, prep: Prepared, split: str, columns) -> tuple[float, float]:
    return _scores_many([weight], prep, split, columns)[0]


def window_errors(weight: np.ndarray, prep: Prepared, split: str) -> np.ndarray:
    """(windows,) MSE of each window of ``split`` (mean over the horizon and the scored columns)."""
    L = prep.lookback
    total = np.zeros(prep.windows(split))
    for c in prep.out_idx:
        w = _windows(prep, split, c)
        total += np.square(w[:, :L] @ weight[:-1] + weight[-1] - w[:, L:]).mean(1)
    return total / len(prep.out_idx)


def one_se_choice(errors: dict[str, np.ndarray], n_blocks: int) -> tuple[str, dict, dict]:
    """The one-standard-error rule: ``errors`` maps candidates, simplest first, to their per-window validation
    errors (same windows). The lowest mean wins unless a simpler candidate is within one standard error of
    it; the standard error of each difference comes from ``n_blocks`` contiguous blocks of windows (windows
    that overlap are far from independent, so blocks about ``lookback + horizon`` windows long are the unit).
    Returns ``(choice, {name: mean}, {name: standard error of its difference to the lowest})``."""
    mean = {k: float(v.mean()) for k, v in errors.items()}
    best = min(mean, key=mean.get)
    n = len(errors[best])
    blocks = np.array_split(np.arange(n), max(min(n_blocks, n), 1))
    se = {}
    for k, v in errors.items():
        d = np.array([v[b].mean() - errors[best][b].mean() for b in blocks])
        se[k] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    choice = next(k for k in errors if mean[k] - mean[best] <= se[k])
    return choice, mean, se


def fit_linear(prep: Prepared, alphas=RIDGE_ALPHAS) -> LinearBaseline:
    """Least squares / ridge on the train windows of every input variable; alpha chosen on validation MSE.

    With the default alphas the result is kept on ``prep`` (``Prepared.linear_fit``) and returned by later
    calls, so the cycle decision and the reference rows fit each map once."""
    if alphas == RIDGE_ALPHAS and prep.linear_fit is not None:
        return prep.linear_fit
    L, H = prep.lookback, prep.horizon
    gram = np.zeros((L + 1, L + 1))
    cross = np.zeros((L + 1, H))
    rows = 0
    for c in range(prep.n_vars):
        w = _windows(prep, "train", c)
        x, y = w[:, :L], w[:, L:]
        xs, ys = x.sum(0), y.sum(0)
        gram[:L, :L] += x.T @ x
        gram[:L, L] += xs
        gram[L, :L] += xs
        gram[L, L] += len(w)
        cross[:L] += x.T @ y
        cross[L] += ys
        rows += len(w)
    penalty = np.eye(L + 1)
    penalty[L, L] = 0.0  # the intercept is not shrunk
    weights = [np.linalg.lstsq(gram, cross, rcond=None)[0] if alpha == 0 else
               np.linalg.solve(gram + alpha * rows * penalty, cross) for alpha in alphas]
    # one pass over the validation windows scores every alpha (a window-amplitude cycle makes them costly)
    val_scores = _scores_many(weights, prep, "val", prep.out_idx)
    best, selection = None, []
    for alpha, weight, (val_mse, _) in zip(alphas, weights, val_scores):
        selection.append({"alpha": float(alpha), "val_mse": val_mse})
        if best is None or val_mse < best.val_mse:
            best = LinearBaseline(weight, float(alpha), val_mse, selection)
    if alphas == RIDGE_ALPHAS:
        prep.linear_fit = best
    return best


def _linear_row(prep: Prepared, split: str, naive_mse: float) -> dict:
    lin = fit_linear(prep)
    mse, mae = _scores(lin.weight, prep, split, prep.out_idx)
    params = lin.params + (prep.cycle.table.size if prep.cycle is not None else 0)
    return {"mse": mse, "mae": mae, "windows": prep.windows(split), "params": params, "ridge_alpha": lin.alpha,
            "val_mse": lin.val_mse, "alpha_selection": lin.selection, "skill_vs_naive": skill(mse, naive_mse)}


def reference_metrics(prep: Prepared, split: str = "test", cycle_prep: Prepared | None = None) -> dict:
    """The reference rows for ``split``: ``{"naive": {...}, "linear": {...}}`` (JSON-able), plus
    ``"linear_cycle"`` (the same closed-form linear map on the series minus the cycle, the cycle added back)
    when ``cycle_prep`` (``remove_cycle(prep, ...)``) is given. The residual's error is the series' error, so
    all rows are scored on the same windows in the same space."""
    naive = naive_metrics(prep, split)
    out = {"naive": naive, "linear": _linear_row(prep, split, naive["mse"])}
    if cycle_prep is not None:
        out["linear_cycle"] = {**_linear_row(cycle_prep, split, naive["mse"]), "period": cycle_prep.cycle.period,
                               "amplitude": cycle_prep.cycle.amplitude}
    return out


def choose_cycle(prep: Prepared, mode: str | int = "auto", amplitude: str = "auto") -> tuple[Prepared | None, dict]:
    """Decide on validation whether and how to remove a cycle: ``(residual prep or None, decision record)``.

    ``mode``: ``"off"``; a period in rows (always used); or ``"auto"``: the daily cycle of the series' time
    step (``daily_period``: 24 for hourly data, 96 for 15 min, 7 for daily), used only when the closed-form
    linear map's **validation** MSE prefers it by the rule below (float64 least squares, seconds; test is not
    read).
    ``amplitude``: ``"fixed"`` (the train split's cycle as it is), ``"window"`` (scaled per window,
    ``data.cycle_gain`` with ``CYCLE_SHRINK``) or ``"auto"``: both are candidates.

    Among the candidates (no cycle, fixed, window: simplest first) the one-standard-error rule
    (``one_se_choice``) picks on the validation windows: the lowest validation MSE of the closed-form map,
    unless a simpler candidate is within one standard error of it.

    Raises:
        DataError: an explicit period that the train split cannot estimate (``fit_cycle``).
    """
    if amplitude not in ("auto", *AMPLITUDES):
        raise DataError(f"cycle amplitude must be auto, {' or '.join(AMPLITUDES)} (got {amplitude!r})")
    if mode == "off":
        return None, {"mode": "off", "used": False, "period": None, "amplitude": None, "reason": "--cycle off"}
    forced = mode != "auto"
    period = int(mode) if forced else daily_period(time_step_ns(prep.series.dates))
    rec = {"mode": str(mode), "used": False, "period": period, "amplitude": None}
    if period is None:
        return None, {**rec, "reason": "no daily or weekly cycle for this time step"}
    try:
        cyc = fit_cycle(prep, period)
    except DataError as e:
        if forced:
            raise
        return None, {**rec, "reason": str(e)}
    kinds = AMPLITUDES if amplitude == "auto" else (amplitude,)
    cands = {a: remove_cycle(prep, replace(cyc, shrink=None if a == "fixed" else CYCLE_SHRINK)) for a in kinds}
    if forced and len(cands) == 1:
        (a, resid), = cands.items()
        return resid, {**rec, "used": True, "amplitude": a, "reason": f"--cycle {mode}"}
    # simplest first: no cycle, the fixed cycle, the window-scaled cycle
    preps = ({} if forced else {"off": prep}) | cands
    errors = {k: window_errors(fit_linear(p).weight, p, "val") for k, p in preps.items()}
    a, b = prep.borders["val"]
    n_blocks = max((b - a) // (prep.lookback + prep.horizon), 2)
    best, val, se = one_se_choice(errors, n_blocks)
    rec.update(linear_val_mse=val, linear_val_se=se, val_blocks=n_blocks)
    lowest = min(val, key=val.get)
    why = "closed-form linear map's validation MSE " + ", ".join(
        f"{val[k]:.4f}{'' if k == lowest else f' ± {se[k]:.4f}'} "
        f"{'without it' if k == 'off' else f'with it ({k} amplitude)'}" for k in val) + (
        "; the simplest within one standard error of the lowest" if best != lowest else "")
    if best == "off":
        return None, {**rec, "reason": why}
    return preps[best], {**rec, "used": True, "amplitude": best, "reason": why}


def skill(mse: float, naive_mse: float) -> float:
    """1 - mse / naive_mse: 0 for persistence, 1 for a perfect forecast, negative when worse than naive."""
    return 1.0 - mse / naive_mse if naive_mse > 0 else float("nan")
