"""What glibc's allocator costs an FFNet-TS training step on CPU: ``ffnet_ts.accel.keep_freed_memory`` on/off.

Each setting runs in its own fresh process (mallopt must act before the first large allocation, and a
process's heap history would otherwise leak into the other setting), alternating A B A B ... ``--repeats``
times so that drift in the machine's load hits both alike. A process times ``--steps`` training steps
(forward + backward + Adam) after 2 warm-up steps, and reports wall seconds per step, user and kernel CPU
seconds per step, minor page faults per step and peak RSS (getrusage). Shapes: lookback 96, horizon 96,
``--vars`` variables (21 = Weather), ``--ffn-ratio``. Results: ``results/timeseries_malloc.{json,md}``.

    nice -n 10 uv run python benchmarks/timeseries_malloc.py --batches 128 256 512 --precision bf16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import environment, save

SETTINGS = {"glibc default": "0", "keep_freed_memory": "1"}

_CHILD = r"""
import json, resource, sys, time
import ffnet_ts  # before torch, as the ffnet-ts command does (THP_MEM_ALLOC_ENABLE)
import torch
from ffnet_ts.accel import keep_freed_memory
from ffnet_ts.model import create_model
applied = keep_freed_memory()
threads, bs, prec, steps, n_vars, ffn = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]),
                                         int(sys.argv[5]), int(sys.argv[6]))
torch.set_num_threads(threads)
torch.manual_seed(0)
m = create_model("ffnet_ts", n_vars=n_vars, lookback=96, horizon=96, ffn_ratio=ffn, dropout=0.5).train()
opt = torch.optim.Adam(m.parameters(), 1e-4)
x, y = torch.randn(bs, 96, n_vars), torch.randn(bs, 96, n_vars)
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
        out = m(x)
    loss = torch.nn.functional.mse_loss(out.float(), y)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return loss.item()
for _ in range(2):
    step()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
losses = [step() for _ in range(steps)]
t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"applied": applied, "step_s": t / steps, "user_s": (r1.ru_utime - r0.ru_utime) / steps,
                  "sys_s": (r1.ru_stime - r0.ru_stime) / steps, "minflt": (r1.ru_minflt - r0.ru_minflt) / steps,
                  "maxrss_gb": r1.ru_maxrss / 1e6, "losses": losses}))
"""


def run(setting: str, threads: int, batch: int, precision: str, steps: int, n_vars: int, ffn: int) -> dict:
    env = {**os.environ, "FFNET_TS_KEEP_FREED_MEMORY": SETTINGS[setting], "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(threads), str(batch), precision, str(steps),
                          str(n_vars), str(ffn)], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--vars", type=int, default=21)
    ap.add_argument("--ffn-ratio", type=int, default=4)
    ap.add_argument("--name", default="timeseries_malloc")
    a = ap.parse_args(argv)
    rows = []
    for bs in a.batches:
        got: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for _ in range(a.repeats):
            for s in SETTINGS:
                got[s].append(run(s, a.threads, bs, a.precision, a.steps, a.vars, a.ffn_ratio))
        # same arithmetic either way: the losses of every step agree bit for bit across settings
        same = len({json.dumps(r["losses"]) for rs in got.values() for r in rs}) == 1
        for s, rs in got.items():
            med = {k: statistics.median(r[k] for r in rs) for k in ("step_s", "user_s", "sys_s", "minflt")}
            rows.append({"batch": bs, "setting": s, "applied": rs[0]["applied"], **med,
                         "maxrss_gb": max(r["maxrss_gb"] for r in rs), "runs": len(rs), "same_losses": same})
            print(json.dumps(rows[-1]), flush=True)
    base = {r["batch"]: r["step_s"] for r in rows if r["setting"] == "glibc default"}
    lines = [f"FFNet-TS training step (lookback 96, horizon 96, {a.vars} variables, ffn_ratio {a.ffn_ratio}, "
             f"{a.precision}, {a.threads} thread(s)); median of {a.repeats} fresh processes x {a.steps} steps each, "
             "settings alternated", "",
             "| batch | allocator | s / step | user s | kernel s | minor faults / step | peak RSS GB | speed-up | "
             "same losses |",
             "|---:|:---|---:|---:|---:|---:|---:|---:|:---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['setting']} | {r['step_s']:.3f} | {r['user_s']:.2f} | {r['sys_s']:.2f} | "
                     f"{r['minflt']:,.0f} | {r['maxrss_gb']:.2f} | {base[r['batch']] / r['step_s']:.2f}x | "
                     f"{'yes' if r['same_losses'] else 'NO'} |")
    table = "\n".join(lines) + "\n"
    print(table)
    save(a.name, {"env": environment(), "args": vars(a), "rows": rows}, table)


if __name__ == "__main__":
    main()
