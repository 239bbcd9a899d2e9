"""How much of FFNet-TS's forecast is the closed-form linear map? A diagnostic on finished runs' written forecasts.

For each ``ffnet-ts forecast`` run directory given, it reads the forecasts the run wrote (``forecasts_H<h>.npz``,
standardized space, every test window) and the run's cycle decision (``metrics.json``), refits the reference
row the run printed (the closed-form linear map, on the series minus the same cycle when one was used:
``ffnet_ts.reference``), and reports on the same test windows:

* both test MSEs (the linear one must equal the run's printed reference row: checked);
* the correlation of the two models' errors, over every window, step and scored variable;
* the RMS of the difference between the two forecasts, next to FFNet-TS's RMS error: how far the network
  moves away from the linear forecast at all;
* the test MSE of fixed blends ``w * ffnet + (1 - w) * linear`` for w = 0.25, 0.5, 0.75. Nothing is chosen
  here: the weights are fixed in advance and the rows are a diagnostic, not a model;
* ``--validate``: the blend weight chosen on **validation** instead. The run's saved model
  (``checkpoint_H<h>.pt``) forecasts the validation windows, w in {0, 0.25, 0.5, 0.75, 1} with the lowest
  validation MSE is taken, and only then is the test MSE of that w read. The checkpoint's test forecasts
  must reproduce the written file (checked), so the blend is of the model that wrote it.

    FFNET_DATA_DIR=../shared/data uv run python benchmarks/timeseries_linear_overlap.py \\
        ~/.cache/ffnet/timeseries_cycle/ETTh1_auto_s2021 ~/.cache/ffnet/timeseries_cycle/ETTh1_auto_s2024

Writes results/timeseries_linear_overlap.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ffnet_ts import data as D
from ffnet_ts import reference as Rf
from ffnet_ts import train as T
from ffnet_ts.model import LinearMap, create_model
from numpy.lib.stride_tricks import sliding_window_view

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "timeseries_linear_overlap"
BLENDS = (0.25, 0.5, 0.75)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # --validate: the candidates for w (0: the linear map, 1: FFNet-TS)


def validated_blend(run: Path, h: int, cp: D.Prepared, weight: np.ndarray, written: np.ndarray) -> dict:
    """w chosen on the validation windows from WEIGHTS, then its test MSE (everything in the residual space of
    ``cp``, whose error is the series' error; the scoring is ``ffnet-ts forecast --blend auto``'s)."""
    ckpt = T.load_checkpoint(run / f"checkpoint_H{h}.pt")
    net = create_model(ckpt["model"]["name"], **ckpt["model"]["args"])
    net.load_state_dict(ckpt["state_dict"])
    fc = T.evaluate(net, cp, "test", return_predictions=True)["predictions"]
    if np.abs(D.add_cycle(cp, "test", fc) - written).max() > 1e-4:
        raise SystemExit(f"error: {run}: checkpoint_H{h}.pt does not reproduce the written forecasts")
    lin = LinearMap.from_weight(weight)
    val = T.blend_mse(net, lin, cp, "val", WEIGHTS)
    best = min(WEIGHTS, key=lambda w: val[w])
    return {"val_mse": {str(w): v for w, v in val.items()}, "chosen_w": best,
            "test_mse": T.blend_mse(net, lin, cp, "test", [best])[best]}


def _reference_prep(prep: D.Prepared, cycle: dict | None) -> D.Prepared:
    """``prep`` minus the cycle the run used (its recorded period and amplitude), or ``prep`` itself."""
    if not cycle or not cycle.get("used"):
        return prep
    cyc = D.fit_cycle(prep, int(cycle["period"]))
    return D.remove_cycle(prep, replace(cyc, shrink=None if cycle["amplitude"] == "fixed" else D.CYCLE_SHRINK))


def overlap(run: Path, validate: bool = False) -> list[dict]:
    """One row per horizon of the run in ``run``."""
    meta = json.loads((run / "metrics.json").read_text())
    series = D.load(meta["source"] if Path(meta["source"]).is_file() else meta["data"])
    rows = []
    for key, h_rec in meta["horizons"].items():
        h = int(key.lstrip("H"))
        if h_rec.get("blend", {}).get("w", 1.0) < 1.0:
            raise SystemExit(f"error: {run}: H{h} wrote a blend with the linear map (--blend auto chose w = "
                             f"{h_rec['blend']['w']:g}); this diagnostic needs the network's own forecasts "
                             f"(--blend off)")
        z = np.load(run / f"forecasts_H{h}.npz")
        prep = D.prepare(series, int(meta["lookback"]), h)
        L = prep.lookback
        a, b = prep.borders["test"]
        if len(z["predictions"]) != prep.windows("test") or z["target_start_ns"][0] != series.dates.asi8[a + L]:
            raise SystemExit(f"error: {run}: its forecasts do not match the test windows of {meta['data']} H{h}")
        cp = _reference_prep(prep, h_rec.get("cycle"))
        weight = Rf.fit_linear(cp).weight
        cols = [prep.columns.index(str(c)) for c in z["columns"]]
        e_f, e_l, diff = [], [], []
        for j, c in enumerate(cols):
            y = sliding_window_view(prep.data[a:b, c].double().numpy(), L + h)[:, L:]
            w = Rf._windows(cp, "test", c)  # residual windows: the residual's error is the series' error
            lin_err = w[:, :L] @ weight[:-1] + weight[-1] - w[:, L:]
            ff_err = z["predictions"][:, :, j].astype(np.float64) - y
            e_f.append(ff_err)
            e_l.append(lin_err)
            diff.append(ff_err - lin_err)  # = ffnet forecast - linear forecast
        e_f, e_l, diff = np.stack(e_f), np.stack(e_l), np.stack(diff)
        lin_mse = float(np.square(e_l).mean())
        printed = h_rec["reference"]["linear_cycle" if cp is not prep else "linear"]["mse"]
        if abs(lin_mse - printed) > 1e-6:
            raise SystemExit(f"error: {run}: the refitted linear row ({lin_mse:.6f}) is not the run's ({printed:.6f})")
        rows.append({
            "run": str(run), "data": meta["data"], "horizon": h, "seed": h_rec.get("train_config", {}).get("seed"),
            "members": max(len([m for m in h_rec.get("members", []) if not m.get("dropped")]), 1),
            "cycle": (f"{h_rec['cycle']['period']} {h_rec['cycle']['amplitude']}"
                      if h_rec.get("cycle", {}).get("used") else "off"),
            "test_windows": int(len(z["predictions"])), "ffnet_mse": float(np.square(e_f).mean()),
            "run_mse": h_rec["mse"], "linear_mse": lin_mse,
            "error_correlation": float(np.corrcoef(e_f.ravel(), e_l.ravel())[0, 1]),
            "rms_forecast_difference": float(np.sqrt(np.square(diff).mean())),
            "ffnet_rms_error": float(np.sqrt(np.square(e_f).mean())),
            "blends": {str(w): float(np.square(w * e_f + (1 - w) * e_l).mean()) for w in BLENDS},
        })
        if validate:
            rows[-1]["validated"] = validated_blend(run, h, cp, weight, z["predictions"])
    return rows


def table(rows: list[dict]) -> str:
    val = any("validated" in r for r in rows)
    lines = ["| data | H | seed | members | cycle | FFNet-TS test MSE | linear (+cycle) test MSE | error correlation | "
             "RMS(FFNet - linear) / FFNet RMS error | " + " | ".join(f"blend w={w}" for w in BLENDS)
             + (" | w chosen on validation (val MSE at w = 0 / chosen / 1) | its test MSE" if val else "") + " |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|" + "---:|" * len(BLENDS) + ("---:|---:|" if val else "")]
    for r in rows:
        v = r.get("validated")
        extra = ""
        if val:
            extra = (f" | {v['chosen_w']} ({v['val_mse']['0.0']:.4f} / {v['val_mse'][str(v['chosen_w'])]:.4f} / "
                     f"{v['val_mse']['1.0']:.4f}) | **{v['test_mse']:.4f}**") if v else " | – | –"
        lines.append(f"| {r['data']} | {r['horizon']} | {r['seed']} | {r['members']} | {r['cycle']} | "
                     f"{r['ffnet_mse']:.4f} | {r['linear_mse']:.4f} | {r['error_correlation']:.3f} | "
                     f"{r['rms_forecast_difference']:.3f} / {r['ffnet_rms_error']:.3f} | "
                     + " | ".join(f"{r['blends'][str(w)]:.4f}" for w in BLENDS) + extra + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="ffnet-ts forecast output directories")
    p.add_argument("--out", type=Path, default=OUT, help="output stem (.json and .md are written)")
    p.add_argument("--validate", action="store_true",
                   help="also choose the blend weight on validation with each run's checkpoint and score it on test")
    args = p.parse_args(argv)
    missing = [r for r in args.runs if not (r / "metrics.json").is_file()]
    if missing:
        print(f"error: no metrics.json in {missing[0]} (not a finished ffnet-ts forecast run)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rows = [row for run in args.runs for row in overlap(run, args.validate)]
    for r in rows:  # the run's own score, recomputed from its written file
        if abs(r["ffnet_mse"] - r["run_mse"]) > 1e-5:
            print(f"error: {r['run']}: written forecasts score {r['ffnet_mse']:.6f}, the run said {r['run_mse']:.6f}",
                  file=sys.stderr)
            return 2
    text = "\n".join([
        "# FFNet-TS against the closed-form linear map, on the same test windows",
        "",
        "Generated by `benchmarks/timeseries_linear_overlap.py` from the forecasts each run wrote "
        "(`forecasts_H<h>.npz`, standardized space, every test window). The linear row is the run's own "
        "reference row, refitted and checked against it. Blends use fixed weights (nothing chosen on test); "
        "they are a diagnostic, not a model. With `--validate`, the last two columns choose w on the validation "
        "windows with the run's own checkpoint (w = 0 is the linear map, 1 FFNet-TS) and only then read test.",
        "",
        table(rows),
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path, payload in ((args.out.with_suffix(".json"), json.dumps({"rows": rows}, indent=2)),
                          (args.out.with_suffix(".md"), text)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(payload)
        tmp.replace(path)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
