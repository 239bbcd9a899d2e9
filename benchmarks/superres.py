"""Super-resolution benchmark: efficiency (params, MACs, CPU latency, peak memory) and quality (PSNR/SSIM).

Efficiency, one run on this CPU: bicubic, FFNetSR-mini (ours, shipped weights, fused), FFNetSR-light and
FFNetSR (paper configs), SwinIR-light and EDSR-baseline (BasicSR archs), random weights except ours,
batch 1, 256x256 LR input at x2 and x4, channels_last, eval + inference_mode. Latency is the median of
interleaved rounds (all models timed round-robin, so background load hits all alike), together with
the median CPU time of the timing thread, which is robust to other processes sharing the cores.
MACs are counted with torch's FlopCounterMode (convs, matmuls incl. attention; MACs = FLOPs / 2).
Peak memory: a fresh process builds the model, resets its peak-RSS mark, runs one forward; we report the
forward's extra memory (peak RSS during the forward minus RSS before it) and the peak RSS itself.

Quality: Y-channel PSNR/SSIM (crop_border = scale) on Set5/Set14 for bicubic, the shipped weights at
x2/x3/x4, and the same-budget pair (FFNetSR-mini vs EDSR-baseline trained with the identical recipe and
iteration count; weights in benchmarks/results/superres_same_budget/).

    uv run python benchmarks/superres.py [--rounds 10] [--threads 1] [--pause PID ...]

``--pause PID`` sends SIGSTOP to the given (own, background training) processes while timing and
SIGCONT afterwards, so they do not corrupt the timings; the paused PIDs are recorded in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, save  # noqa: E402

SAME_BUDGET_DIR = RESULTS / "superres_same_budget"
LR_SIZE = 256


# ----------------------------------------------------------------------------- models
def build(name: str, scale: int) -> torch.nn.Module | None:
    """Eval-mode model for the efficiency table (None = bicubic)."""
    if name == "bicubic":
        return None
    if name == "ffnetsr_mini (ours)":
        from ffnet import reparameterize_model
        from ffnet_sr.weights import load_model, pretrained_path

        try:
            m, _ = load_model(pretrained_path(scale, "ffnetsr_mini"))
        except FileNotFoundError:  # weights for this scale not shipped yet: same arch, random weights
            from ffnet_sr.archs import create_model

            m = create_model("ffnetsr_mini", scale)
        return reparameterize_model(m).eval()
    if name in ("ffnetsr_light", "ffnetsr"):
        from ffnet import reparameterize_model
        from ffnet_sr.archs import create_model

        return reparameterize_model(create_model(name, scale)).eval()
    from ffnet_sr.basicsr_plugin import build_basicsr_arch

    if name == "swinir_light":  # SwinIR's lightweight SR config (SwinIR paper / BasicSR options)
        return build_basicsr_arch("SwinIR", scale, in_chans=3, img_size=64, window_size=8, img_range=1.0,
                                  depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2,
                                  upsampler="pixelshuffledirect", resi_connection="1conv").eval()
    if name == "edsr_baseline":
        return build_basicsr_arch("EDSR", scale, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16,
                                  res_scale=1, img_range=255.0, rgb_mean=[0.4488, 0.4371, 0.4040]).eval()
    raise KeyError(name)


MODELS = ["bicubic", "ffnetsr_mini (ours)", "ffnetsr_light", "swinir_light", "edsr_baseline"]


def forward_fn(model, scale, x):
    if model is None:
        return lambda: F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return lambda: model(x)


def count_macs(model, x) -> float | None:
    if model is None:
        return None
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 2


def _proc_status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def mem_child(name: str, scale: int, threads: int) -> None:
    """Runs in a fresh process: RSS before one forward and the peak RSS during it (MiB)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name, scale)
    x = torch.rand(1, 3, LR_SIZE, LR_SIZE).contiguous(memory_format=torch.channels_last)
    if model is not None:
        model = model.to(memory_format=torch.channels_last)
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS high-water mark (VmHWM)
        f.write("5")
    before = _proc_status_mib("VmRSS")
    with torch.inference_mode():
        forward_fn(model, scale, x)()
    peak = _proc_status_mib("VmHWM")
    print(json.dumps({"rss_before_mib": before, "rss_peak_mib": peak, "forward_mem_mib": peak - before}))


def peak_memory(name: str, scale: int, threads: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--_mem", name, str(scale), "--threads", str(threads)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def time_models(fns: dict, rounds: int, warmup: int = 1) -> dict:
    """Interleaved medians of wall time and of this thread's CPU time per call."""
    import statistics

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t, c = time.perf_counter(), time.thread_time()
            fn()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.thread_time() - c)
    return {k: {"median_ms": 1e3 * statistics.median(wall[k]), "min_ms": 1e3 * min(wall[k]),
                "cpu_median_ms": 1e3 * statistics.median(cpu[k]), "rounds": rounds} for k in fns}


# ----------------------------------------------------------------------------- training cost
TRAIN_COST_MODELS = {
    "ffnetsr_mini (ours)": {"type": "FFNetSR", "num_feat": 48, "num_block": 8, "mlp_ratio": 2.0},
    "ffnetsr_light": {"type": "FFNetSR", "num_feat": 96, "num_block": 36, "mlp_ratio": 2.0},
    "edsr_baseline": {"type": "EDSR", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16, "res_scale": 1,
                      "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.4040]},
}


def train_step_cost(steps: int = 3, batch: int = 16, lr_patch: int = 48, scale: int = 2) -> dict:
    """CPU seconds (this thread) per training step of the x2 recipe: bf16 autocast, L1 + 0.02 FFT, Adam."""
    from ffnet_sr.train import build_network, fft_l1

    out = {}
    for name, net in TRAIN_COST_MODELS.items():
        torch.manual_seed(0)
        m = build_network(net, scale).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        x = torch.rand(batch, 3, lr_patch, lr_patch).contiguous(memory_format=torch.channels_last)
        y = torch.rand(batch, 3, lr_patch * scale, lr_patch * scale)
        ts = []
        for i in range(steps + 1):
            c = time.thread_time()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                o = m(x)
            loss = F.l1_loss(o.float(), y) + 0.02 * fft_l1(o.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:  # the first step pays one-off kernel setup
                ts.append(time.thread_time() - c)
        out[name] = {"cpu_s_per_step": sorted(ts)[len(ts) // 2], "batch": batch, "lr_patch": lr_patch}
        print(name, out[name], flush=True)
    return out


# ----------------------------------------------------------------------------- quality
def quality(same_budget=None, scales=(2, 3, 4), sets=("Set5", "Set14")) -> list[dict]:
    from ffnet_sr.evaluate import evaluate
    from ffnet_sr.weights import load_model, pretrained_path, read_metadata

    rows = []

    def add(label, model, scale, meta=None):
        for s in sets:
            r = evaluate(model, s, scale)
            rows.append({"model": label, "scale": scale, "set": s, "psnr": r["psnr"], "ssim": r["ssim"], **(meta or {})})

    for scale in scales:
        add("bicubic", None, scale)
        try:
            w = pretrained_path(scale, "ffnetsr_mini")
        except FileNotFoundError:
            continue
        m, _ = load_model(w)
        md = read_metadata(w)
        add("ffnetsr_mini (ours, shipped)", m, scale, {"iters": md.get("iters"), "train_hours": md.get("train_hours")})
    for w in same_budget if same_budget is not None else sorted(SAME_BUDGET_DIR.glob("*.safetensors")):
        m, scale = load_model(w)
        md = read_metadata(w)
        add(f"same budget: {w.stem}", m, scale, {"iters": md.get("iters"), "train_hours": md.get("train_hours"),
                                                   "params": sum(p.numel() for p in m.parameters())})
    return rows


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for timing (default 1)")
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--pause", type=int, nargs="*", default=[], help="PIDs to SIGSTOP while timing (own jobs)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--same-budget", type=Path, nargs="*", default=None,
                    help=f"same-budget weight files to score (default: {SAME_BUDGET_DIR.name}/*.safetensors)")
    ap.add_argument("--train-cost-only", action="store_true", help="only measure CPU s per training step")
    ap.add_argument("--_mem", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._mem:
        mem_child(args._mem[0], int(args._mem[1]), args.threads)
        return
    os.environ.setdefault("FFNET_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.train_cost_only:
        print(json.dumps(train_step_cost(), indent=1))
        return

    eff = []
    load = {}
    try:
        for pid in args.pause:
            os.kill(pid, signal.SIGSTOP)
        load["loadavg_before"] = os.getloadavg()
        for scale in args.scales:
            x = torch.rand(1, 3, LR_SIZE, LR_SIZE).contiguous(memory_format=torch.channels_last)
            models = {n: build(n, scale) for n in args.models}
            models = {n: (m.to(memory_format=torch.channels_last) if m is not None else None) for n, m in models.items()}
            fns = {}
            for n, m in models.items():
                f = forward_fn(m, scale, x)

                def run(f=f):
                    with torch.inference_mode():
                        f()
                fns[n] = run
            times = time_models(fns, args.rounds)
            for n, m in models.items():
                mem = peak_memory(n, scale, args.threads)
                eff.append({"model": n, "scale": scale, "lr_size": LR_SIZE,
                            "params": sum(p.numel() for p in m.parameters()) if m is not None else 0,
                            "macs": count_macs(m, x), **times[n], **mem})
                print(json.dumps(eff[-1]), flush=True)
        load["loadavg_after"] = os.getloadavg()
    finally:
        for pid in args.pause:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    qual = [] if args.skip_quality else quality(args.same_budget)
    env = environment()
    payload = {"environment": env, "threads": args.threads, "paused_pids": args.pause, **load,
               "efficiency": eff, "quality": qual}

    ref = {(r["scale"]): r for r in eff if r["model"] == "edsr_baseline"}
    lines = [f"## Super-resolution efficiency: 1x3x{LR_SIZE}x{LR_SIZE} LR input, CPU, {args.threads} thread(s), "
             f"channels_last, median of {args.rounds} interleaved rounds (torch {env['torch']}, {env['date']})",
             "", f"Background trainings paused while timing: {args.pause or 'none'}; load average before/after: "
             f"{load.get('loadavg_before')} / {load.get('loadavg_after')}.", "",
             "| model | scale | params (K) | GMACs | median ms | CPU ms | speed vs EDSR-baseline | forward mem (MiB) | peak RSS (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in eff:
        e = ref.get(r["scale"])
        rel = f"{e['cpu_median_ms'] / r['cpu_median_ms']:.2f}x" if e else "-"
        macs = f"{r['macs'] / 1e9:.1f}" if r["macs"] else "-"
        lines.append(f"| {r['model']} | x{r['scale']} | {r['params'] / 1e3:.0f} | {macs} | {r['median_ms']:.0f} | "
                     f"{r['cpu_median_ms']:.0f} | {rel} | {r['forward_mem_mib']:.0f} | {r['rss_peak_mib']:.0f} |")
    if qual:
        lines += ["", "## Quality: Y-channel PSNR / SSIM, crop_border = scale", "",
                  "| model | scale | Set5 | Set14 | iterations | train wall h |", "|---|---:|---:|---:|---:|---:|"]
        keyed = {}
        for q in qual:
            keyed.setdefault((q["model"], q["scale"]), {})[q["set"]] = q
        for (model, scale), d in keyed.items():
            any_ = next(iter(d.values()))
            cells = [f"{d[s]['psnr']:.2f} / {d[s]['ssim']:.4f}" if s in d else "-" for s in ("Set5", "Set14")]
            lines.append(f"| {model} | x{scale} | {cells[0]} | {cells[1]} | {any_.get('iters') or '-'} | "
                         f"{any_.get('train_hours') or '-'} |")
    save("superres", payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
