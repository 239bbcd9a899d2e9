"""The fused numba depthwise sparse conv (CPU) against dense conv3d and the torch reference kernel.

Forward and backward (input and weight gradients) on random batch-2 inputs, kernels 3 / 5 / 7,
float32 and float64; bitwise determinism across runs and across 1 vs 2 threads; neighbour maps
against the pure-torch kernel maps; ``import ffnet`` stays free of numba.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ffnet.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d
from ffnet.sparse import functional as SF
from ffnet.sparse.maps import (
    NeighborMap,
    build_conv_map,
    build_subm_map,
    build_subm_neighbors,
    numba_available,
    subm_map_from_neighbors,
)

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba not installed")
SHAPE = (9, 8, 10)
TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def random_input(channels, seed, dtype=torch.float32, density=0.25, shape=SHAPE):
    """(features leaf, indices, dense leaf copy) of a random sparse batch of 2."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, *shape, generator=g) < density
    idx = mask.nonzero()
    idx = idx[torch.randperm(idx.shape[0], generator=g)]  # storage order != key order
    feats = torch.randn(idx.shape[0], channels, generator=g, dtype=dtype)
    dense = torch.zeros(2, channels, *shape, dtype=dtype)
    dense[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = feats
    return feats.clone().requires_grad_(), idx.int(), dense.requires_grad_()


def at_sites(dense, idx):
    i = idx.long()
    return dense[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]]


def fused_subm(feats, idx, weight, shape=SHAPE):
    x = SparseTensor(feats, idx, shape, 2)
    y = SF.sparse_conv3d(x, weight, subm=True, groups=feats.shape[1], impl="torch")
    return y, x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [3, 5, 7])
def test_fused_matches_dense_conv3d(k, dtype):
    c = 5
    feats, idx, dense = random_input(c, seed=k, dtype=dtype)
    g = torch.Generator().manual_seed(100 + k)
    w = torch.randn(c, 1, k, k, k, generator=g, dtype=dtype)
    w_fused, w_dense = w.clone().requires_grad_(), w.clone().requires_grad_()
    assert SF.use_fused(feats, w_fused)
    y, x = fused_subm(feats, idx, w_fused)
    assert ("torch", "subm-nbr", (k,) * 3) in x.cache and ("torch", "subm", (k,) * 3) not in x.cache
    yd = at_sites(F.conv3d(dense, w_dense, padding=k // 2, groups=c), idx)
    torch.testing.assert_close(y.features, yd, **TOL[dtype])
    go = torch.randn(y.features.shape, generator=g, dtype=dtype)
    (y.features * go).sum().backward()
    (yd * go).sum().backward()
    torch.testing.assert_close(feats.grad, at_sites(dense.grad, idx), **TOL[dtype])
    torch.testing.assert_close(w_fused.grad, w_dense.grad, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k,mult", [(3, 1), (7, 1), (5, 2)])
def test_fused_matches_torch_reference(k, mult, dtype):
    c = 4
    feats, idx, _ = random_input(c, seed=20 + k, dtype=dtype)
    x = SparseTensor(feats, idx, SHAPE, 2)
    kmap = build_subm_map(x.coords, (k,) * 3)
    w = torch.randn(c * mult, 1, k, k, k, dtype=dtype, generator=torch.Generator().manual_seed(k))
    wa, wb = w.clone().requires_grad_(), w.clone().requires_grad_()
    fa = feats.detach().clone().requires_grad_()
    ya = SF.fused_depthwise_conv(fa, wa, build_subm_neighbors(x.coords, (k,) * 3))
    yb = SF.depthwise_conv_reference(feats, wb, kmap)
    torch.testing.assert_close(ya, yb, **TOL[dtype])
    go = torch.randn_like(ya)
    (ya * go).sum().backward()
    (yb * go).sum().backward()
    torch.testing.assert_close(fa.grad, feats.grad, **TOL[dtype])
    torch.testing.assert_close(wa.grad, wb.grad, **TOL[dtype])


@pytest.mark.parametrize("mult", [1, 2])
def test_fused_strided_and_inverse_depthwise_match_reference(mult, monkeypatch):
    """Non-submanifold maps (strided conv, its inverse) go through the same kernel."""
    c = 3
    feats, idx, _ = random_input(c, seed=5)
    torch.manual_seed(mult)
    down = SparseConv3d(c, c * mult, 3, stride=2, padding=1, groups=c, impl="torch")
    up = SparseInverseConv3d(c * mult, c * mult, 3, stride=2, padding=1, groups=c * mult, impl="torch")
    results = []
    for fused in ("1", "0"):
        monkeypatch.setenv(SF.ENV_FUSED, fused)
        for m in (down, up):
            m.zero_grad()
        f = feats.detach().clone().requires_grad_()
        x = SparseTensor(f, idx, SHAPE, 2)
        y = up(down(x))
        y.features.square().sum().backward()
        results.append((y.features.detach(), f.grad, down.weight.grad.clone(), up.weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _run(k, dtype, threads):
    n0 = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        c = 6
        feats, idx, _ = random_input(c, seed=40 + k, dtype=dtype, density=0.5, shape=(12, 12, 12))
        w = torch.randn(c, 1, k, k, k, dtype=dtype, generator=torch.Generator().manual_seed(1)).requires_grad_()
        y, _ = fused_subm(feats, idx, w, shape=(12, 12, 12))
        (y.features * torch.linspace(-1, 1, y.features.numel(), dtype=dtype).reshape(y.features.shape)).sum().backward()
        return y.features.detach(), feats.grad, w.grad
    finally:
        torch.set_num_threads(n0)


@pytest.mark.parametrize("backend", ["omp", "pool"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [3, 7])
def test_fused_is_bitwise_deterministic_across_runs_and_threads(k, dtype, backend, monkeypatch):
    from ffnet.sparse import _numba_kernels as nk

    if backend == "omp" and nk.parallel_backend() != "omp":
        pytest.skip("numba's OpenMP threading layer does not load here (no libgomp)")
    monkeypatch.setattr(nk, "_BACKEND", backend)
    monkeypatch.setattr(nk, "_MIN_PARALLEL_WORK", 0)  # 2 threads really split the rows, however small
    calls = []
    real = nk.run_rows
    monkeypatch.setattr(nk, "run_rows", lambda *a: calls.append(a[3]) or real(*a))
    ref = _run(k, dtype, 1)
    assert ref[0].shape[0] > 256 * 2  # more than one weight-gradient chunk
    again, two = _run(k, dtype, 1), _run(k, dtype, 2)
    assert 2 in calls and nk._BACKEND == backend
    for other in (again, two):
        for a, b in zip(ref, other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("ks", [(3, 3, 3), (5, 5, 5), (7, 7, 7), (3, 1, 5)])
def test_subm_neighbor_map_matches_torch_kernel_map(ks):
    feats, idx, _ = random_input(1, seed=sum(ks))
    x = SparseTensor(feats, idx, SHAPE, 2)
    nmap = build_subm_neighbors(x.coords, ks)  # numba hash
    ref = NeighborMap.from_kernel_map(build_subm_map(x.coords, ks))  # sort + searchsorted
    assert nmap.nbr.dtype == torch.int32 and nmap.nbr.shape == (idx.shape[0], ks[0] * ks[1] * ks[2])
    assert torch.equal(nmap.nbr, ref.nbr)
    # the pair list derived from it equals the torch build, pair for pair
    a, b = subm_map_from_neighbors(nmap), build_subm_map(x.coords, ks)
    assert a.counts == b.counts and a.identity_offset == b.identity_offset
    for name in ("in_idx", "out_idx", "offset"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    # the inverse of a submanifold map is the map with its offsets reversed (used by the backward)
    generic = NeighborMap(nmap.nbr, nmap.num_in, subm=False).inverse()
    assert torch.equal(nmap.inverse(), generic)


def test_strided_neighbor_map_inverse():
    feats, idx, _ = random_input(1, seed=3)
    x = SparseTensor(feats, idx, SHAPE, 2)
    kmap, _ = build_conv_map(x.coords, (3, 3, 3), (2, 2, 2), (1, 1, 1))
    nmap = kmap.neighbors()
    inv = nmap.inverse()
    assert kmap.neighbors() is nmap
    o, k = (nmap.nbr >= 0).nonzero(as_tuple=True)
    assert (inv >= 0).sum() == o.numel() == kmap.num_pairs
    assert torch.equal(inv[nmap.nbr[o, k].long(), k].long(), o)
    assert torch.equal(kmap.transposed().neighbors().nbr, inv)


def test_empty_and_unsupported_dtypes_fall_back():
    x = SparseTensor(torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.int32), SHAPE, 1)
    conv = SubMConv3d(3, 3, 5, groups=3, impl="torch")
    assert conv(x).features.shape == (0, 3)
    feats, idx, dense = random_input(3, seed=9)
    conv16 = SubMConv3d(3, 3, 3, groups=3, impl="torch").to(torch.bfloat16)
    xb = SparseTensor(feats.detach().bfloat16(), idx, SHAPE, 2)
    assert not SF.use_fused(xb.features, conv16.weight)
    ref = F.conv3d(dense.detach().bfloat16(), conv16.weight, conv16.bias, padding=1, groups=3)
    torch.testing.assert_close(conv16(xb).features, at_sites(ref, idx), atol=0.1, rtol=0.05)


def test_numba_lives_in_one_lazily_imported_module():
    """``import ffnet`` must not import numba: only _numba_kernels imports it at module level, and
    nothing imports _numba_kernels at module level (a static check; a fresh interpreter would cost
    a torch import)."""
    import ast
    from pathlib import Path

    import ffnet

    root = Path(ffnet.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            if path.name != "_numba_kernels.py":
                assert not any(n.split(".")[0] == "numba" for n in names), path
            assert "_numba_kernels" not in names and not any(n.endswith("._numba_kernels") for n in names), path


def test_gradcheck_float64():
    feats, idx, _ = random_input(2, seed=11, density=0.3, shape=(3, 3, 4))
    x = SparseTensor(feats, idx, (3, 3, 4), 2)
    nmap = build_subm_neighbors(x.coords, (3, 3, 3))
    f = feats.detach().double().requires_grad_()
    w = torch.randn(2, 1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: SF.fused_depthwise_conv(a, b, nmap), (f, w))


def test_parallel_backend_choice(monkeypatch):
    from ffnet.sparse import _numba_kernels as nk

    monkeypatch.setattr(nk, "_BACKEND", None)
    monkeypatch.setenv(nk.ENV_THREADS, "pool")
    assert nk.parallel_backend() == "pool"
    monkeypatch.setattr(nk, "_BACKEND", None)
    monkeypatch.setenv(nk.ENV_THREADS, "gpu")
    with pytest.raises(ValueError, match="FFNET_SPARSE_THREADS"):
        nk.parallel_backend()
    monkeypatch.setattr(nk, "_BACKEND", None)
    monkeypatch.delenv(nk.ENV_THREADS)
    assert nk.parallel_backend() in ("omp", "pool")
