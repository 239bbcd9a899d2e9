"""Sparse 3D conv latency on CPU: ffnet.sparse's pure-PyTorch implementation vs its spconv implementation.

Same weights, same voxels, one run, interleaved rounds. Input: KITTI training frame 000000 from
$FFNET_DATA_DIR (pointcloud/kitti/training/velodyne), voxelized on SECOND's grid (0.05 x 0.05 x 0.1 m
over [0, -40, -3, 70.4, 40, 1] -> 41 x 1600 x 1408 z/y/x; features are random, only the coordinates
matter for speed); without the data a synthetic scene of clustered voxels of similar size is used.

Cases (batch 1, C = 32):
  map_*         kernel-map / rulebook construction on fresh coordinates (no conv)
  subm3 / dw7 / down   one conv forward on cached maps: SubMConv3d(32, 32, 3), depthwise
                SubMConv3d(32, 32, 7, groups=32), SparseConv3d(32, 64, 3, stride 2, padding 1)
  attn_fwd_bwd  FFNified-attention core (depthwise 7^3 -> GELU -> depthwise 7^3), forward + backward,
                map built from fresh coordinates as in a training step
  block_eval    the generic FFNetBlock(32) on the sparse3d backend, eval forward, fresh coordinates

Implementations: ``torch`` (pure PyTorch; depthwise convs on the fused numba kernel, neighbour maps
from a numba hash), ``torch-ref`` (the same with ``FFNET_SPARSE_FUSED=0``: the plain-torch reference
depthwise kernel, gather + per-pair weight copy + ``index_add``) and ``spconv``. ``map_subm7_sortsearch``
is the device-generic pure-torch map build (sort + searchsorted; what CUDA runs) for comparison with
``map_subm7`` (numba hash on CPU).

Each implementation is timed at torch's thread count and with torch at 1 thread (on a shared,
loaded 2-core machine OpenMP's 2-thread barriers can stall badly). The spconv implementation always
runs spconv's kernels at 1 thread (ffnet.sparse's guard against spconv#679); its depthwise convs use
the same kernel as the torch implementation. numba's one-off costs (compiling the kernels into an
empty cache, or loading them from the cache) are measured in fresh processes and reported apart.

    nice -n 10 uv run python benchmarks/sparse_backends.py [--rounds 10] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, interleaved_medians, save  # noqa: E402
from ffnet.layers import FFNetBlock  # noqa: E402
from ffnet.sparse import SparseBackend, SparseConv3d, SparseGELU, SparseTensor, SubMConv3d  # noqa: E402
from ffnet.sparse.maps import build_subm_map  # noqa: E402
from ffnet.sparse.tensor import coord_keys  # noqa: E402

VOXEL = (0.05, 0.05, 0.1)  # x, y, z metres
RANGE = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
SHAPE = (41, 1600, 1408)  # z, y, x (SECOND's grid with one extra z layer)
CHANNELS = 32


def kitti_voxels() -> tuple[torch.Tensor, str]:
    """Unique voxel coordinates [0, z, y, x] of KITTI frame 000000, or a synthetic stand-in."""
    root = os.environ.get("FFNET_DATA_DIR")
    path = Path(root) / "pointcloud/kitti/training/velodyne/000000.bin" if root else None
    if path is not None and path.is_file():
        pts = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4)[:, :3].copy())
        lo, hi = torch.tensor(RANGE[:3]), torch.tensor(RANGE[3:])
        pts = pts[((pts >= lo) & (pts < hi)).all(1)]
        xyz = ((pts - lo) / torch.tensor(VOXEL)).floor().long()
        zyx = torch.unique(xyz.flip(1), dim=0)
        return torch.cat([torch.zeros(len(zyx), 1, dtype=torch.long), zyx], 1).int(), f"KITTI 000000 ({path})"
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(400, 3, generator=g) * torch.tensor(SHAPE)
    zyx = (centres.repeat_interleave(50, 0) + torch.randn(20000, 3, generator=g) * 4).long()
    zyx = torch.unique(zyx.clamp(torch.zeros(3, dtype=torch.long), torch.tensor(SHAPE) - 1), dim=0)
    return torch.cat([torch.zeros(len(zyx), 1, dtype=torch.long), zyx], 1).int(), "synthetic clusters"


def cases(impl: str, indices: torch.Tensor, feats: torch.Tensor, nets: dict) -> dict:
    def fresh(f=feats):
        return SparseTensor(f, indices, SHAPE, 1, check=False)  # new coordinate context: maps rebuilt

    cached = fresh()
    subm3, dw7, down = nets["subm3"], nets["dw7"], nets["down"]
    with torch.no_grad():  # build the cached maps once
        subm3(cached), dw7(cached), down(cached)
    key, value, block = nets["key"], nets["value"], nets["block"]

    def no_grad(fn):
        def run():
            with torch.inference_mode():
                fn()
        return run

    def attn():
        x = fresh(feats.detach().requires_grad_())
        y = value(SparseGELU()(key(x)))
        y.features.square().sum().backward()

    return {
        f"{impl}/map_subm3": no_grad(lambda: subm3(fresh())),
        f"{impl}/map_subm7": no_grad(lambda: dw7(fresh())),
        f"{impl}/map_subm7_sortsearch": no_grad(lambda: build_subm_map(fresh().coords, (7, 7, 7))),
        f"{impl}/map_down": no_grad(lambda: down(fresh())),
        f"{impl}/subm3": no_grad(lambda: subm3(cached)),
        f"{impl}/dw7": no_grad(lambda: dw7(cached)),
        f"{impl}/down": no_grad(lambda: down(cached)),
        f"{impl}/attn_fwd_bwd": attn,
        f"{impl}/block_eval": no_grad(lambda: block(fresh())),
    }


def reference_kernel(fns: dict) -> dict:
    """The torch cases with ``FFNET_SPARSE_FUSED=0`` (the plain-torch depthwise kernel)."""

    def wrap(fn):
        def run():
            old = os.environ.get("FFNET_SPARSE_FUSED")
            os.environ["FFNET_SPARSE_FUSED"] = "0"
            try:
                fn()
            finally:
                if old is None:
                    del os.environ["FFNET_SPARSE_FUSED"]
                else:
                    os.environ["FFNET_SPARSE_FUSED"] = old
        return run

    return {k.replace("torch/", "torch-ref/", 1): wrap(fn) for k, fn in fns.items()}


_FIRST_CALL = """
import time, torch
t0 = time.perf_counter()
from ffnet.sparse import SparseTensor, SubMConv3d
from ffnet.sparse import _numba_kernels  # noqa: F401  (imports numba)
t1 = time.perf_counter()
torch.manual_seed(0)
idx = torch.randint(0, 20, (3000, 3)).unique(dim=0)
x = SparseTensor(torch.randn(len(idx), 8, requires_grad=True), torch.cat([torch.zeros(len(idx), 1, dtype=torch.long), idx], 1).int(), (20, 20, 20), 1)
conv = SubMConv3d(8, 8, 5, groups=8, impl="torch")
t2 = time.perf_counter()
conv(x).features.sum().backward()
t3 = time.perf_counter()
x2 = SparseTensor(x.features.detach().requires_grad_(), x.indices, (20, 20, 20), 1)
conv(x2).features.sum().backward()
t4 = time.perf_counter()
print(f'{{"import_numba_s": {t1 - t0:.3f}, "first_call_s": {t3 - t2:.3f}, "second_call_s": {t4 - t3:.3f}}}')
"""


def numba_one_off_costs() -> dict:
    """First fused conv (float32 fwd + bwd + map build) in fresh processes: empty numba cache, then warm cache."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
        for name in ("empty_cache", "warm_cache"):
            res = subprocess.run([sys.executable, "-c", _FIRST_CALL], capture_output=True, text=True, env=env)
            out[name] = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {
                "error": res.stderr.strip().splitlines()[-1:]}
    return out


def one_thread(fns: dict) -> dict:
    """The same cases, run with torch at 1 thread."""

    def wrap(fn):
        def run():
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(n)
        return run

    return {k.replace("/", "@1/", 1): wrap(fn) for k, fn in fns.items()}


def build_nets(impl: str) -> dict:
    torch.manual_seed(0)
    c = CHANNELS
    nets = dict(subm3=SubMConv3d(c, c, 3, impl=impl), dw7=SubMConv3d(c, c, 7, groups=c, impl=impl),
                down=SparseConv3d(c, 2 * c, 3, 2, 1, impl=impl), key=SubMConv3d(c, c, 7, groups=c, impl=impl),
                value=SubMConv3d(c, c, 7, groups=c, impl=impl),
                block=FFNetBlock(c, 7, 3, 3, None, backend=SparseBackend(impl)).eval())
    return nets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    indices, source = kitti_voxels()
    feats = torch.randn(len(indices), CHANNELS, generator=torch.Generator().manual_seed(1))
    nets_t, nets_s = build_nets("torch"), build_nets("spconv")
    for k in nets_t:  # identical weights in both implementations
        nets_s[k].load_state_dict(nets_t[k].state_dict())

    # Same answers before timing anything.
    x = SparseTensor(feats, indices, SHAPE, 1)
    with torch.no_grad():
        for k in ("subm3", "dw7", "block"):
            a, b = nets_t[k](x), nets_s[k](x)
            torch.testing.assert_close(a.features, b.features, atol=1e-3, rtol=1e-4)
        a, b = nets_t["down"](x), nets_s["down"](x)  # same sites, possibly in another order
        ka, kb = (coord_keys(t.indices[:, 0].long(), t.indices[:, 1:].long(), t.spatial_shape) for t in (a, b))
        assert torch.equal(ka.sort().values, kb.sort().values)
        torch.testing.assert_close(a.features[ka.argsort()], b.features[kb.argsort()], atol=1e-3, rtol=1e-4)

    torch_cases, spconv_cases = cases("torch", indices, feats, nets_t), cases("spconv", indices, feats, nets_s)
    ref_cases = reference_kernel(torch_cases)
    fns = {**torch_cases, **one_thread(torch_cases), **ref_cases, **one_thread(ref_cases), **spconv_cases,
           **one_thread(spconv_cases)}
    load0 = os.getloadavg()
    t_run = time.perf_counter()
    timings = interleaved_medians(fns, rounds=args.rounds, warmup=1)
    wall = time.perf_counter() - t_run
    load1 = os.getloadavg()
    names = [k.split("/", 1)[1] for k in fns if k.startswith("torch/")]

    def ms(key):
        return timings[key]["median_s"] * 1e3

    rows = [dict(case=n, torch_ms=ms(f"torch/{n}"), torch_1thread_ms=ms(f"torch@1/{n}"),
                 torch_ref_ms=ms(f"torch-ref/{n}"), torch_ref_1thread_ms=ms(f"torch-ref@1/{n}"),
                 spconv_ms=ms(f"spconv/{n}"), spconv_1thread_ms=ms(f"spconv@1/{n}")) for n in names]
    for r in rows:
        r["fused_over_ref_1thread"] = r["torch_1thread_ms"] / r["torch_ref_1thread_ms"]
        r["spconv_over_torch_1thread"] = r["spconv_1thread_ms"] / r["torch_1thread_ms"]
    one_off = numba_one_off_costs()
    env = environment()
    loaded = load0[0] > 1.5
    nt = env["threads"]
    lines = [f"Sparse conv CPU latency, {source}: {len(indices)} voxels, grid {SHAPE}, C={CHANNELS}, batch 1; "
             f"spconv's own kernels always at 1 thread; median of {args.rounds} interleaved rounds "
             f"(torch {env['torch']}, {env['date']}; run took {wall:.0f} s).", "",
             f"Load average at start {tuple(round(v, 2) for v in load0)}, at end {tuple(round(v, 2) for v in load1)} "
             f"on {env['cores']} cores" + (": the machine was shared and loaded (wall times inflated, compare ratios)."
                                          if loaded else "."), "",
             f"| case | torch impl (fused), {nt} thr | 1 thr | torch-ref (reference kernel), {nt} thr | 1 thr | "
             f"spconv impl, {nt} thr | 1 thr | fused / ref at 1 thr | spconv / torch at 1 thr |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['torch_ms']:.1f} | {r['torch_1thread_ms']:.1f} | {r['torch_ref_ms']:.1f} | "
              f"{r['torch_ref_1thread_ms']:.1f} | {r['spconv_ms']:.1f} | {r['spconv_1thread_ms']:.1f} | "
              f"{r['fused_over_ref_1thread']:.2f} | {r['spconv_over_torch_1thread']:.2f} |" for r in rows]
    lines += ["", "(ms; map_* build maps on fresh coordinates, `torch-ref` still builds its maps with the numba "
              "hash, `map_subm7_sortsearch` is the pure-torch build.)", "",
              "numba one-off costs (fresh process, 5^3 depthwise conv fwd + bwd on 3k voxels, float32):", "",
              "| numba cache | import ffnet.sparse + numba (s) | first call (s) | second call (s) |", "|---|---:|---:|---:|"]
    for name, r in one_off.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | - | - |")
        else:
            lines.append(f"| {name} | {r['import_numba_s']:.2f} | {r['first_call_s']:.2f} | {r['second_call_s']:.3f} |")
    save("sparse_backends", dict(env=env, source=source, num_voxels=len(indices), spatial_shape=SHAPE,
                                 channels=CHANNELS, rounds=args.rounds, rows=rows, numba_one_off=one_off,
                                 load_avg_start=load0, load_avg_end=load1, wall_s=wall), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
