"""Deployment speed: PyTorch eager (fused) vs ONNX Runtime (CPU) on the same inputs, 1 and 2 threads.

Cases: FFNet-1 classifier at 256x256 (batch 1, random weights), FFNetSR-mini x2 (shipped weights) and
FFNetSR-light x2 (random weights) on a 256x256 input, FFNet-TS (ETTh1 configuration: 7 variables,
lookback 96, horizon 96, random weights) at batch 1 and 512 on real ETTh1 test windows. Speed does not
depend on the weights' values.

Every model is the fused (re-parameterized) graph; ORT runs the file ``ffnet.export`` writes. Per case
and thread count, these are timed round-robin (median of interleaved rounds, so background load hits all
alike): torch eager in NCHW and in channels_last (image models), ORT at ``ORT_ENABLE_ALL`` (with the
NCHWc layout transforms) and at ``ORT_ENABLE_EXTENDED`` (opset 20 graphs, native ``Gelu``), and for
FFNet-1 and FFNetSR-mini also the opset-18 graph (GELU as an ``Erf`` chain) at ``ORT_ENABLE_ALL``.
The ratio is best torch / best ORT (opset 20).

    nice -n 10 uv run python benchmarks/deploy.py [--rounds 7] [--threads 1,2] [--cases ffnet_1,sr_mini,...]

Results: benchmarks/results/deploy.json and deploy.md (rewritten after every case, so a stopped run keeps
what it measured; ``--resume`` skips the cases already in deploy.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved_medians, save  # noqa: E402

OPSET18_CASES = ("ffnet_1", "sr_mini")
CASES = ("ffnet_1", "sr_mini", "sr_light", "ts_b1", "ts_b512")
LABELS = {"ffnet_1": "FFNet-1 classifier, 1x3x256x256", "sr_mini": "FFNetSR-mini x2, 1x3x256x256 -> 512x512",
          "sr_light": "FFNetSR-light x2, 1x3x256x256 -> 512x512", "ts_b1": "FFNet-TS ETTh1 (L96 H96 M7), batch 1",
          "ts_b512": "FFNet-TS ETTh1 (L96 H96 M7), batch 512"}


def build(case: str, tmp: Path, data_dir: Path | None, opset: int = 20):
    """(torch module taking the input, example input as numpy, onnx path, channels_last applicable)."""
    from ffnet.export import fuse_for_export

    torch.manual_seed(0)
    if case == "ffnet_1":
        import ffnet
        from ffnet.export import export_backbone

        path = tmp / f"ffnet_1_op{opset}.onnx"
        if not path.is_file():  # exported once, reused for the second thread count
            export_backbone("ffnet_1", path, img_size=256, opset=opset)
        torch.manual_seed(0)  # export_backbone builds its model right after this seed
        model = fuse_for_export(ffnet.create_model("ffnet_1"))  # same seed -> same weights as the export
        return model, np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32), path, True
    if case.startswith("sr_"):
        from ffnet_sr.archs import VARIANTS, create_model
        from ffnet_sr.export import SRExportWrapper, export_sr_onnx, load_sr_model

        if case == "sr_mini":
            net, scale, cfg, desc = load_sr_model(None, "ffnetsr_mini", 2)
        else:
            net, scale, cfg, desc = create_model("ffnetsr_light", 2).eval(), 2, {"type": "FFNetSR",
                                                                                  **VARIANTS["ffnetsr_light"]}, ""
        path = tmp / f"{case}_op{opset}.onnx"
        if not path.is_file():
            export_sr_onnx(net, scale, path, net_cfg=cfg, source=desc, opset=opset)
        x = np.random.default_rng(0).random((1, 3, 256, 256)).astype(np.float32)
        if data_dir is not None and (data_dir / "superres" / "Set5" / "LR_bicubic" / "X2" / "babyx2.png").is_file():
            from PIL import Image

            img = Image.open(data_dir / "superres" / "Set5" / "LR_bicubic" / "X2" / "babyx2.png").convert("RGB")
            x = (np.asarray(img, np.float32)[:256, :256].transpose(2, 0, 1)[None] / 255).copy()
        return SRExportWrapper(fuse_for_export(net)).eval(), x, path, True
    # time series: the ETTh1 configuration with a checkpoint in the format `ffnet-ts forecast` writes
    from ffnet_ts import cli as ts_cli
    from ffnet_ts import data as D
    from ffnet_ts.export import build_from_checkpoint, export_checkpoint
    from ffnet_ts.model import create_model as ts_create
    from ffnet_ts.train import CHECKPOINT_FORMAT

    series = D.load("ETTh1")
    prep = D.prepare(series, 96, 96, "M")
    margs = {"n_vars": prep.n_vars, "lookback": 96, "horizon": 96, "ffn_ratio": 2, "dropout": 0.7, "head_dropout": 0.0}
    ck = tmp / "ts.pt"
    if not ck.is_file():
        torch.save({"format": CHECKPOINT_FORMAT, "model": {"name": "ffnet_ts", "args": margs},
                    "data": ts_cli._data_meta(prep), "state_dict": ts_create("ffnet_ts", **margs).state_dict()}, ck)
    path = tmp / f"ts_op{opset}.onnx"
    if not path.is_file():
        export_checkpoint(ck, path, opset=opset)
    wrapper, _ = build_from_checkpoint(torch.load(ck, weights_only=False))
    batch = 1 if case == "ts_b1" else 512
    raw = prep.data.numpy() * prep.std + prep.mean
    start = prep.borders["test"][0]
    x = np.stack([raw[start + i:start + i + 96] for i in range(batch)]).astype(np.float32)
    return wrapper, x, path, False


def run_case(case: str, threads: int, rounds: int, tmp: Path, data_dir: Path | None) -> dict:
    from ffnet.export import create_session

    torch.set_num_threads(threads)
    model, x, path, cl = build(case, tmp, data_dir)
    xt = torch.from_numpy(x)
    fns = {}

    def torch_fn(m, inp):
        def run():
            with torch.inference_mode():
                m(inp)
        return run

    fns["torch"] = torch_fn(model, xt)
    if cl:
        import copy

        fns["torch channels_last"] = torch_fn(copy.deepcopy(model).to(memory_format=torch.channels_last),
                                              xt.contiguous(memory_format=torch.channels_last))
    sessions = {lvl: create_session(path, threads=threads, optimization=lvl) for lvl in ("all", "extended")}
    if case in OPSET18_CASES:  # the Erf-chain GELU of opsets 17-19, to show why opset 20 is the default
        sessions["all, opset 18"] = create_session(build(case, tmp, data_dir, opset=18)[2], threads=threads)
    for lvl, s in sessions.items():
        name = s.get_inputs()[0].name
        fns[f"ort {lvl}"] = (lambda s=s, name=name: s.run(None, {name: x}))
    # the two runtimes agree on this input (the tests check 1e-4; here it is recorded)
    with torch.inference_mode():
        ref = model(xt).numpy()
    got = sessions["all"].run(None, {sessions["all"].get_inputs()[0].name: x})[0]
    rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
    t = interleaved_medians(fns, rounds=rounds, warmup=1)
    best_torch = min(v["median_s"] for k, v in t.items() if k.startswith("torch"))
    best_ort = min(v["median_s"] for k, v in t.items() if k in ("ort all", "ort extended"))
    return dict(case=case, label=LABELS[case], threads=threads, rounds=rounds, max_rel_diff=rel,
                median_ms={k: v["median_s"] * 1e3 for k, v in t.items()},
                min_ms={k: v["min_s"] * 1e3 for k, v in t.items()},
                speedup_best_ort_vs_best_torch=best_torch / best_ort,
                speedup_ort_all_vs_torch_nchw=t["torch"]["median_s"] / t["ort all"]["median_s"])


def table(rows: list[dict], env: dict, loadavg: list[float], wall: float) -> str:
    lines = [f"Deployment speed, PyTorch eager (fused) vs ONNX Runtime {env.get('onnxruntime', '')} (CPU), median ms of "
             f"interleaved rounds (torch {env['torch']}, {env['cores']} cores, {env['date']}). "
             f"**Shared, loaded machine**: 1-min load average {loadavg[0]:.1f} at the start and "
             f"{loadavg[1]:.1f} at the end on {env['cores']} cores; absolute times are inflated, the ratios "
             f"(same inputs, timed round-robin) are the result. Wall time {wall / 60:.1f} min.", "",
             "| model | threads | torch NCHW | torch channels_last | ORT all | ORT extended | ORT all, opset 18 "
             "| ORT / torch (best vs best) | max rel diff |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["median_ms"]
        cl = f"{m['torch channels_last']:.1f}" if "torch channels_last" in m else "-"
        o18 = f"{m['ort all, opset 18']:.1f}" if "ort all, opset 18" in m else "-"
        lines.append(f"| {r['label']} | {r['threads']} | {m['torch']:.1f} | {cl} | {m['ort all']:.1f} | "
                     f"{m['ort extended']:.1f} | {o18} | **{r['speedup_best_ort_vs_best_torch']:.2f}x** | "
                     f"{r['max_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--resume", action="store_true", help="keep the rows already in results/<name>.json")
    ap.add_argument("--name", default="deploy", help="results file stem in benchmarks/results/")
    args = ap.parse_args()
    data_dir = Path(os.environ["FFNET_DATA_DIR"]) if os.environ.get("FFNET_DATA_DIR") else None
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        sys.exit(f"error: unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    threads = [int(t) for t in args.threads.split(",")]
    import onnxruntime

    env = {**environment(), "onnxruntime": onnxruntime.__version__}
    rows, start_load = [], os.getloadavg()[0]
    prev = RESULTS / f"{args.name}.json"
    if args.resume and prev.is_file():
        old = json.loads(prev.read_text())
        rows, start_load = old["rows"], old.get("loadavg_start", start_load)
    t0 = time.perf_counter() - (json.loads(prev.read_text()).get("wall_s", 0) if args.resume and prev.is_file() else 0)
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for th in threads:
                if any(r["case"] == case and r["threads"] == th for r in rows):
                    continue
                print(f"{case} threads={th} ...", file=sys.stderr, flush=True)
                rows.append(run_case(case, th, args.rounds, Path(tmp), data_dir))
                rows.sort(key=lambda r: (CASES.index(r["case"]), r["threads"]))
                wall = time.perf_counter() - t0
                load = [start_load, os.getloadavg()[0]]
                save(args.name, dict(env=env, rows=rows, loadavg_start=start_load, loadavg_end=load[1], wall_s=wall,
                                    command="nice -n 10 uv run python benchmarks/deploy.py " + " ".join(sys.argv[1:])),
                     table(rows, env, load, wall))


if __name__ == "__main__":
    main()
