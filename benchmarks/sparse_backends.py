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

Each implementation is timed at torch's thread count and with torch at 1 thread (on a shared,
loaded 2-core machine OpenMP's 2-thread barriers can stall badly). The spconv implementation always
runs spconv's kernels at 1 thread (ffnet.sparse's guard against spconv#679); its depthwise convs and
feature-wise ops are torch ops at the given thread count.

    nice -n 10 uv run python benchmarks/sparse_backends.py [--rounds 10] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, interleaved_medians, save  # noqa: E402
from ffnet.layers import FFNetBlock  # noqa: E402
from ffnet.sparse import SparseBackend, SparseConv3d, SparseGELU, SparseTensor, SubMConv3d  # noqa: E402
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
        f"{impl}/map_down": no_grad(lambda: down(fresh())),
        f"{impl}/subm3": no_grad(lambda: subm3(cached)),
        f"{impl}/dw7": no_grad(lambda: dw7(cached)),
        f"{impl}/down": no_grad(lambda: down(cached)),
        f"{impl}/attn_fwd_bwd": attn,
        f"{impl}/block_eval": no_grad(lambda: block(fresh())),
    }


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
    fns = {**torch_cases, **one_thread(torch_cases), **spconv_cases, **one_thread(spconv_cases)}
    timings = interleaved_medians(fns, rounds=args.rounds, warmup=1)
    names = [k.split("/", 1)[1] for k in fns if k.startswith("torch/")]
    def ms(key):
        return timings[key]["median_s"] * 1e3

    rows = [dict(case=n, torch_ms=ms(f"torch/{n}"), torch_1thread_ms=ms(f"torch@1/{n}"), spconv_ms=ms(f"spconv/{n}"),
                 spconv_1thread_ms=ms(f"spconv@1/{n}")) for n in names]
    for r in rows:
        r["spconv_over_torch_1thread"] = r["spconv_1thread_ms"] / r["torch_1thread_ms"]
    env = environment()
    lines = [f"Sparse conv CPU latency, {source}: {len(indices)} voxels, grid {SHAPE}, C={CHANNELS}, batch 1; "
             f"spconv's own kernels always at 1 thread; median of {args.rounds} interleaved rounds "
             f"(torch {env['torch']}, {env['date']})", "",
             f"| case | torch impl, {env['threads']} thr (ms) | torch impl, 1 thr (ms) | spconv impl, {env['threads']} thr (ms) "
             "| spconv impl, 1 thr (ms) | spconv / torch at 1 thr |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['torch_ms']:.1f} | {r['torch_1thread_ms']:.1f} | {r['spconv_ms']:.1f} | "
              f"{r['spconv_1thread_ms']:.1f} | {r['spconv_over_torch_1thread']:.2f} |" for r in rows]
    save("sparse_backends", dict(env=env, source=source, num_voxels=len(indices), spatial_shape=SHAPE,
                                 channels=CHANNELS, rounds=args.rounds, rows=rows), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
