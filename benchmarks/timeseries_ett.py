"""FFNet-TS vs DLinear vs PatchTST on the ETT benchmark, lookback 96, the standard protocol, in one run.

All three models are trained and scored by the same code (ffnet_ts.data splitter/scaler, ffnet_ts.train loop,
every test window, MSE/MAE in the standardized space). DLinear and PatchTST are faithful re-implementations
(ffnet_ts.baselines), not gluonts' probabilistic estimators of the same names. Each model has a fixed recipe
(below); hyper-parameters were chosen on the *validation* split only (``--select``), never on test.

    # the benchmark (JSON + markdown table to benchmarks/results/)
    nice -n 10 uv run python benchmarks/timeseries_ett.py --datasets ETTh1 --threads 1
    # interleaved training-step timing (robust to load drift on a shared machine)
    nice -n 10 uv run python benchmarks/timeseries_ett.py --speed 30 --threads 1
    # validation-only selection of each model's CPU training recipe (ETTh1, H=96, <= 6 epochs, patience 2)
    nice -n 10 uv run python benchmarks/timeseries_ett.py --select --epochs 6 --patience 2 --threads 1

Needs the ETT CSVs (``$FFNET_DATA_DIR`` or a download). Timings are wall-clock seconds of the training loop
(including the per-epoch validation) on whatever machine runs it; they are measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from ffnet_ts import data as D
from ffnet_ts import train as T
from ffnet_ts.model import create_model, dataset_defaults

RESULTS = Path(__file__).resolve().parent / "results"

# Training recipes. FFNet-TS: the reference architecture and per-dataset regularization (spec §2.4) with a
# CPU budget (the reference trains up to 100 epochs at lr 1e-4, batch 512); lr / batch / schedule were selected
# on ETTh1 H=96 validation MSE by `--select`. DLinear: LTSF-Linear's recipe (Adam, batch 32, lr halved every
# epoch; per-dataset lr; 5e-3 on ETTh1 was also the validation pick). PatchTST: the PatchTST/42 supervised
# architecture (d_model 16 on ETTh, 128 on ETTm) and one-cycle schedule, batch 128; its paper lr 1e-4 is far
# too slow for a 10-epoch budget, so lr 1e-3 was selected on validation like FFNet-TS's. With lookback 96 and
# patch 16 / stride 8 there are 12 patches.
EPOCHS, PATIENCE = 10, 3
RECIPES = {
    "ffnet_ts": lambda ds, h: (
        {k: dataset_defaults(ds, h)[k] for k in ("ffn_ratio", "dropout", "head_dropout")},
        dict(lr=1e-4, batch_size=128, lr_schedule="type3"),  # selected: results/timeseries_selection.json
    ),
    "dlinear": lambda ds, h: (
        {}, dict(lr={"ETTh1": 5e-3, "ETTh2": 5e-2, "ETTm1": 1e-4, "ETTm2": 1e-3}.get(ds, 1e-3), batch_size=32,
                 lr_schedule="type1"),
    ),
    "patchtst": lambda ds, h: (
        dict(dim=16, num_heads=4, ffn_dim=128, dropout=0.3) if ds.startswith("ETTh")
        else dict(dim=128, num_heads=16, ffn_dim=256, dropout=0.2),
        dict(lr=1e-3, batch_size=128, lr_schedule="onecycle"),  # lr selected on validation (1e-4 in the paper)
    ),
}
SELECTION_GRID = {  # recipes tried per model on ETTh1 H=96, scored on validation MSE only
    "ffnet_ts": [
        dict(lr=1e-3, batch_size=128, lr_schedule="type3"),
        dict(lr=3e-4, batch_size=128, lr_schedule="type3"),
        dict(lr=1e-4, batch_size=128, lr_schedule="type3"),
        dict(lr=1e-3, batch_size=512, lr_schedule="official"),
    ],
    "patchtst": [
        dict(lr=1e-3, batch_size=128, lr_schedule="onecycle"),
        dict(lr=3e-4, batch_size=128, lr_schedule="onecycle"),
        dict(lr=1e-4, batch_size=128, lr_schedule="onecycle"),
    ],
    "dlinear": [
        dict(lr=1e-2, batch_size=32, lr_schedule="type1"),
        dict(lr=5e-3, batch_size=32, lr_schedule="type1"),
        dict(lr=1e-3, batch_size=32, lr_schedule="type1"),
    ],
}


def run_one(model_name: str, prep, model_args: dict, train_args: dict, *, epochs: int, patience: int, seed: int,
            evaluate_test: bool = True) -> dict:
    torch.manual_seed(seed)
    model = create_model(model_name, n_vars=prep.n_vars, lookback=prep.lookback, horizon=prep.horizon, **model_args)
    cfg = T.TrainConfig(epochs=epochs, patience=patience, seed=seed, progress=False, **train_args)
    res = T.fit(model, prep, cfg, desc=f"{model_name} {prep.series.name} H={prep.horizon}")
    out = {"model": model_name, "data": prep.series.name, "horizon": prep.horizon, "lookback": prep.lookback,
           "params": sum(p.numel() for p in model.parameters()), "train_seconds": round(res.train_seconds, 2),
           "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "val_mse": res.best_val_mse,
           "model_args": model_args, "train_args": {**train_args, "epochs": epochs, "patience": patience}}
    if evaluate_test:
        test = T.evaluate(model, prep, "test")
        out.update(mse=test["mse"], mae=test["mae"], test_windows=test["windows"])
    return out


def _step_flops(net, x, y) -> int:
    """FLOPs of one training step's forward + backward (torch's FlopCounter: matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.mse_loss(net(x), y).backward()
    net.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def _train_step(net, opt, x, y, bf16: bool = False) -> None:
    """One training step (forward, MSE, backward, Adam); ``bf16``: the forward under CPU bf16 autocast, as
    ``ffnet-ts forecast --precision bf16`` trains."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = net(x)
    loss = torch.nn.functional.mse_loss(out.float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _profile_top_ops(net, opt, x, y, steps: int = 3, top: int = 12, bf16: bool = False) -> list[dict]:
    """torch.profiler self-CPU time per op over ``steps`` training steps (ms per step)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            _train_step(net, opt, x, y, bf16)
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev) or 1
    return [{"op": e.key, "ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 1),
             "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": e.count // steps}
            for e in ev[:top]]


# Speed-only rows: the configurations the reference-recipe grid (benchmarks/timeseries_reference.py) trains on
# ETTh1 H=96, timed at the same batch so the step cost of each published recipe's *architecture* can be compared.
# "patchtst" above is the small PatchTST/42 ETTh configuration (d_model 16); TSLib's script, which the reference
# grid and the lookback-96 tables use, has d_model 512.
REFERENCE_SPEED_ROWS = {"patchtst_tslib": "patchtst", "itransformer": "itransformer"}


def _speed_recipe(name: str) -> tuple[str, dict]:
    """(create_model name, model kwargs) for a --speed row at ETTh1 H=96."""
    if name in RECIPES:
        return name, RECIPES[name]("ETTh1", 96)[0]
    if name in REFERENCE_SPEED_ROWS:
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:  # the sibling script, importable as a module when run from anywhere
            sys.path.insert(0, here)
        from timeseries_reference import recipe

        return REFERENCE_SPEED_ROWS[name], recipe(REFERENCE_SPEED_ROWS[name], "ETTh1", 96)[0]
    raise SystemExit(f"--speed: unknown model {name!r} (known: {', '.join([*RECIPES, *REFERENCE_SPEED_ROWS])})")


def speed(models: list[str], rounds: int, batch: int = 128, compile_ffnet: bool = False, bf16: bool = False) -> dict:
    """Median training-step time (forward + backward + Adam) per model, rounds interleaved across models so
    that a change in machine load hits every model alike. ETTh1 shapes: lookback 96, horizon 96, 7 variables.

    Beside the models, every round also times a 1024^3 fp32 matmul: the machine's sustained GEMM rate at this
    thread count in the same conditions, which turns each model's FLOPs into a lower bound on its step time.
    ``bf16``: every model also gets a "<model> (bf16)" row trained under CPU bf16 autocast (and the rounds
    time a bf16 matmul too). Like ``ffnet-ts forecast``, the process keeps freed memory mapped
    (:func:`ffnet_ts.accel.keep_freed_memory`), which speeds every model alike.
    """
    from ffnet_ts.accel import keep_freed_memory

    malloc_tuned = keep_freed_memory()
    nets, opts, is_bf16 = {}, {}, {}
    for m in models:
        arch, model_args = _speed_recipe(m)
        for name in ([m, f"{m} (bf16)"] if bf16 else [m]):
            torch.manual_seed(0)
            nets[name] = create_model(arch, n_vars=7, lookback=96, horizon=96, **model_args).train()
            opts[name] = torch.optim.Adam(nets[name].parameters(), lr=1e-4)
            is_bf16[name] = name.endswith("(bf16)")
    x, y = torch.randn(batch, 96, 7), torch.randn(batch, 96, 7)
    flops = {m: _step_flops(nets[m], x, y) for m in models}
    flops.update({f"{m} (bf16)": flops[m] for m in models if bf16})
    compile_seconds = None
    if compile_ffnet and "ffnet_ts" in models:
        from ffnet_ts.accel import maybe_compile

        t0 = time.perf_counter()
        nets["ffnet_ts (torch.compile)"] = maybe_compile(create_model(
            "ffnet_ts", n_vars=7, lookback=96, horizon=96, **RECIPES["ffnet_ts"]("ETTh1", 96)[0]).train(), True)
        opts["ffnet_ts (torch.compile)"] = torch.optim.Adam(nets["ffnet_ts (torch.compile)"].parameters(), lr=1e-4)
        torch.nn.functional.mse_loss(nets["ffnet_ts (torch.compile)"](x), y).backward()  # compiles here
        compile_seconds = round(time.perf_counter() - t0, 1)
        flops["ffnet_ts (torch.compile)"] = flops["ffnet_ts"]
        is_bf16["ffnet_ts (torch.compile)"] = False
    a = torch.randn(1024, 1024)
    a16 = a.bfloat16()
    names = list(nets)
    times = {m: [] for m in names}
    gemm, gemm16 = [], []
    for r in range(rounds + 2):
        for m in names:
            t0 = time.perf_counter()
            _train_step(nets[m], opts[m], x, y, is_bf16[m])
            if r >= 2:  # warm-up rounds
                times[m].append(time.perf_counter() - t0)
        for mat, acc in ((a, gemm), (a16, gemm16)) if bf16 else ((a, gemm),):
            t0 = time.perf_counter()
            mat @ mat
            if r >= 2:
                acc.append(time.perf_counter() - t0)
    gemm_gflops = 2 * 1024**3 / sorted(gemm)[len(gemm) // 2] / 1e9
    gemm16_gflops = 2 * 1024**3 / sorted(gemm16)[len(gemm16) // 2] / 1e9 if bf16 else None
    rows = []
    for m in names:
        ts = sorted(times[m])
        med = ts[len(ts) // 2]
        rate = gemm16_gflops if is_bf16[m] else gemm_gflops
        rows.append({"model": m, "precision": "bf16" if is_bf16[m] else "fp32", "batch": batch,
                     "median_step_ms": round(1000 * med, 1),
                     "min_step_ms": round(1000 * ts[0], 1), "params": sum(p.numel() for p in nets[m].parameters()),
                     "gflop_per_step": round(flops[m] / 1e9, 3), "achieved_gflops": round(flops[m] / med / 1e9, 1),
                     "gemm_floor_ms": round(1000 * flops[m] / 1e9 / rate, 1),
                     "steps_per_etth1_epoch": 8449 // batch})
    profile = _profile_top_ops(nets["ffnet_ts"], opts["ffnet_ts"], x, y) if "ffnet_ts" in nets else []
    profile16 = (_profile_top_ops(nets["ffnet_ts (bf16)"], opts["ffnet_ts (bf16)"], x, y, bf16=True)
                 if bf16 and "ffnet_ts" in models else [])
    return {"rows": rows, "gemm_gflops_1024": round(gemm_gflops, 1),
            "gemm_gflops_1024_bf16": round(gemm16_gflops, 1) if bf16 else None, "compile_seconds": compile_seconds,
            "malloc_keep_freed": malloc_tuned, "ffnet_ts_profile": profile, "ffnet_ts_bf16_profile": profile16}


def speed_markdown(res: dict, threads: int) -> str:
    bf16_rate = (f", bf16 {res['gemm_gflops_1024_bf16']} GFLOP/s (the bf16 rows' floor)"
                 if res.get("gemm_gflops_1024_bf16") else "")
    lines = [f"Training step, batch 128, ETTh1 shapes (L=96, H=96, M=7), {threads} thread(s), median of interleaved "
             f"rounds; sustained fp32 GEMM rate in the same run: {res['gemm_gflops_1024']} GFLOP/s (1024^3 matmul)"
             + bf16_rate,
             "", "| model | params | GFLOP / step | median ms | achieved GFLOP/s | GEMM floor ms | vs patchtst |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    ref = next((r["median_step_ms"] for r in res["rows"] if r["model"] == "patchtst"), None)
    for r in res["rows"]:
        ratio = f"{ref / r['median_step_ms']:.2f}x" if ref else "-"  # > 1: faster than PatchTST/42
        lines.append(f"| {r['model']} | {r['params']:,} | {r['gflop_per_step']:.2f} | {r['median_step_ms']:.1f} | "
                     f"{r['achieved_gflops']:.1f} | {r['gemm_floor_ms']:.1f} | {ratio} |")
    if res.get("compile_seconds") is not None:
        lines.append(f"\ntorch.compile (inductor, CPU) compile time: {res['compile_seconds']} s")
    for key, what in (("ffnet_ts_profile", "FFNet-TS"), ("ffnet_ts_bf16_profile", "FFNet-TS (bf16 autocast)")):
        if res.get(key):
            lines += ["", f"{what} top ops (torch.profiler, self CPU time per training step):", "",
                      "| op | ms / step | share | calls / step |", "|---|---:|---:|---:|"]
            lines += [f"| {p['op']} | {p['ms_per_step']} | {100 * p['share']:.1f}% | {p['calls_per_step']} |"
                      for p in res[key]]
    return "\n".join(lines)


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo) and whether it has native bf16: speed tables depend on both."""
    from ffnet_ts.accel import cpu_bf16_native, cpuinfo

    info = cpuinfo()
    name = (info or {}).get("model") or platform.processor() or platform.machine()
    return f"{name} ({'native bf16' if cpu_bf16_native() else 'no native bf16'})"


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def markdown(rows: list[dict], models: list[str]) -> str:
    head = "| data | H | " + " | ".join(f"{m} MSE / MAE | {m} train s | {m} params" for m in models) + " |"
    sep = "|---|---:|" + "---:|---:|---:|" * len(models)
    lines = [head, sep]
    keys = sorted({(r["data"], r["horizon"]) for r in rows}, key=lambda k: (k[0], k[1]))
    by = {(r["data"], r["horizon"], r["model"]): r for r in rows}
    for ds, h in keys:
        cells = []
        for m in models:
            r = by.get((ds, h, m))
            cells += ([f"{r['mse']:.3f} / {r['mae']:.3f}", f"{r['train_seconds']:.0f}", f"{r['params']:,}"]
                      if r else ["-", "-", "-"])
        lines.append(f"| {ds} | {h} | " + " | ".join(cells) + " |")
    # averages over the (data, horizon) cells every model finished
    done = [k for k in keys if all((k[0], k[1], m) in by for m in models)]
    if done:
        avg = []
        for m in models:
            rs = [by[(ds, h, m)] for ds, h in done]
            avg += [f"{sum(r['mse'] for r in rs) / len(rs):.3f} / {sum(r['mae'] for r in rs) / len(rs):.3f}",
                    f"{sum(r['train_seconds'] for r in rs):.0f} (sum)", ""]
        lines.append(f"| **avg ({len(done)} cells)** | | " + " | ".join(avg) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["ETTh1"])
    p.add_argument("--horizons", nargs="+", type=int, default=[96, 192, 336, 720])
    p.add_argument("--models", nargs="+", default=["ffnet_ts", "dlinear", "patchtst"],
                   help="models to train; --speed also accepts " + ", ".join(REFERENCE_SPEED_ROWS) + " (reference-grid configs)")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--patience", type=int, default=PATIENCE)
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--select", action="store_true", help="validation-only selection of the models' recipes")
    p.add_argument("--speed", type=int, default=0, metavar="ROUNDS",
                   help="only measure interleaved training-step times (ETTh1 shapes, batch 128) for ROUNDS rounds")
    p.add_argument("--compile", action="store_true", help="--speed: also time FFNet-TS under torch.compile")
    p.add_argument("--bf16", action="store_true",
                   help="--speed: also time every model under CPU bf16 autocast (needs AMX-BF16 / AVX512-BF16)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": _cpu_model(), "command": " ".join(sys.argv)}
    started = time.time()

    if args.speed:
        if args.bf16:
            try:  # the CLI's own check of --precision bf16
                T.check_precision("bf16", torch.device("cpu"))
            except T.ConfigError as e:
                raise SystemExit(f"--bf16: {e}") from None
        res = speed(args.models, args.speed, compile_ffnet=args.compile, bf16=args.bf16)
        table = speed_markdown(res, torch.get_num_threads())
        print(table, flush=True)
        out = Path(args.out or RESULTS / f"timeseries_speed_{torch.get_num_threads()}threads.json")
        _write(out, {"env": env, **res, "table": table})
        out.with_suffix(".md").write_text(table + "\n")
        return 0

    if args.select:
        prep = D.prepare(D.load("ETTh1"), 96, 96)
        out = Path(args.out or RESULTS / "timeseries_selection.json")
        previous = json.loads(out.read_text()).get("rows", []) if out.is_file() else []
        rows = [r for r in previous if r["model"] not in args.models]  # keep other models' earlier selections
        for m in args.models:
            model_args, _ = RECIPES[m]("ETTh1", 96)
            for train_args in SELECTION_GRID[m]:
                r = run_one(m, prep, model_args, train_args, epochs=args.epochs, patience=args.patience,
                            seed=args.seed, evaluate_test=False)  # NOTE: selection never looks at test
                r["command"] = env["command"]
                rows.append(r)
                print(json.dumps(r), flush=True)
                _write(out, {"split": "val", "dataset": "ETTh1", "horizon": 96, "rows": rows})
            best = min((r for r in rows if r["model"] == m), key=lambda r: r["val_mse"])
            print(f"{m}: selected by validation MSE: {best['train_args']} (val {best['val_mse']:.4f})", flush=True)
        return 0

    out = Path(args.out or RESULTS / "timeseries_ett.json")
    rows = []
    for ds in args.datasets:
        series = D.load(ds)
        for h in args.horizons:
            prep = D.prepare(series, 96, h)
            for m in args.models:
                model_args, train_args = RECIPES[m](ds, h)
                r = run_one(m, prep, model_args, train_args, epochs=args.epochs, patience=args.patience, seed=args.seed)
                rows.append(r)
                print(json.dumps(r), flush=True)
                table = markdown(rows, args.models)
                _write(out, {"env": env, "protocol": "standard (TSLib) splits, lookback 96, features M, standardized "
                             "MSE/MAE over every test window", "wall_seconds": round(time.time() - started, 1),
                             "rows": rows, "table": table})
                out.with_suffix(".md").write_text(table + "\n")
    print(markdown(rows, args.models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
