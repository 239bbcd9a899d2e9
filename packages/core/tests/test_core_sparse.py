"""Sparse 3D convs (torch and spconv implementations) against dense conv3d references.

Every conv test runs forward AND backward (input-feature, weight and bias gradients) on a random
sparse batch of 2 and compares with ``torch.nn.functional.conv3d`` / ``conv_transpose3d`` on the
densified input with copied weights. The dense reference never goes through ffnet.sparse code:
its input is a separate leaf tensor and outputs are read at the sparse output coordinates.
Tests run with torch's default thread count; the spconv single-thread guard lives in the library.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from ffnet.sparse import (
    FeatureWise,
    SparseBatchNorm,
    SparseConv3d,
    SparseDropPath,
    SparseGELU,
    SparseInverseConv3d,
    SparseLayerScale,
    SparseLinear,
    SparseTensor,
    SubMConv3d,
    resolve_impl,
    sparse_add,
    to_bev,
)
from torch import nn

HAS_SPCONV = importlib.util.find_spec("spconv") is not None
IMPLS = ["torch", pytest.param("spconv", marks=pytest.mark.skipif(not HAS_SPCONV, reason="spconv not installed"))]
SHAPE = (8, 7, 9)  # (D, H, W): deliberately non-cubic so axis mix-ups fail
ATOL = 2e-4


# ------------------------------------------------------------------------------------- helpers
def random_input(channels: int, seed: int = 0, shape=SHAPE, density: float = 0.3, batch: int = 2, device="cpu"):
    """Random sparse batch: returns (SparseTensor with leaf features, dense leaf copy, active mask)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, *shape, generator=g) < density  # (B, D, H, W)
    idx = mask.nonzero()  # (N, 4) [b, z, y, x]
    feats = torch.randn(idx.shape[0], channels, generator=g)
    dense = torch.zeros(batch, channels, *shape)
    dense[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = feats
    x = SparseTensor(feats.to(device, copy=True).requires_grad_(), idx.int().to(device), shape, batch)
    return x, dense.to(device, copy=True).requires_grad_(), mask.to(device)


def at_sites(dense: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) read at (N, 4) coordinates -> (N, C)."""
    i = indices.long()
    return dense[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]]


def leaf_copies(module: nn.Module):
    w = module.weight.detach().clone().requires_grad_()
    b = module.bias.detach().clone().requires_grad_() if module.bias is not None else None
    return w, b


def compare_fwd_bwd(module, x, xd, y, yd, w, b):
    """Forward at y's sites, then gradients of a random linear loss w.r.t. input, weight, bias."""
    torch.testing.assert_close(y.features, at_sites(yd, y.indices), atol=ATOL, rtol=1e-4)
    g = torch.randn_like(y.features)
    (y.features * g).sum().backward()
    (at_sites(yd, y.indices) * g).sum().backward()
    torch.testing.assert_close(x.features.grad, at_sites(xd.grad, x.indices), atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(module.weight.grad, w.grad, atol=ATOL, rtol=1e-4)
    if b is not None:
        torch.testing.assert_close(module.bias.grad, b.grad, atol=ATOL, rtol=1e-4)


def coord_set(indices: torch.Tensor) -> set:
    return set(map(tuple, indices.tolist()))


@pytest.fixture(autouse=True)
def _threads_untouched():
    # The spconv guard must restore the caller's thread count (tests run at torch's default).
    n = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == n


# --------------------------------------------------------------------------------- submanifold
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_subm_conv_matches_dense(impl, k, device):
    torch.manual_seed(k)
    x, xd, mask = random_input(3, seed=k, device=device)
    conv = SubMConv3d(3, 5, k, impl=impl).to(device)
    w, b = leaf_copies(conv)
    y = conv(x)
    assert y.coords is x.coords  # submanifold: same sites, shared map cache
    yd = F.conv3d(xd, w, b, padding=k // 2)
    compare_fwd_bwd(conv, x, xd, y, yd, w, b)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k,mult", [(3, 1), (5, 1), (7, 1), (7, 2)])
def test_subm_depthwise_matches_dense(impl, k, mult, device):
    torch.manual_seed(k + mult)
    c = 4
    x, xd, _ = random_input(c, seed=10 + k, device=device)
    conv = SubMConv3d(c, c * mult, k, groups=c, impl=impl).to(device)
    assert conv.weight.shape == (c * mult, 1, k, k, k)
    w, b = leaf_copies(conv)
    y = conv(x)
    yd = F.conv3d(xd, w, b, padding=k // 2, groups=c)
    compare_fwd_bwd(conv, x, xd, y, yd, w, b)


@pytest.mark.parametrize("impl", IMPLS)
def test_grouped_conv_matches_dense(impl, device):
    torch.manual_seed(0)
    x, xd, _ = random_input(4, seed=3, device=device)
    conv = SubMConv3d(4, 6, 3, groups=2, impl=impl)  # neither dense-channel nor depthwise
    w, b = leaf_copies(conv)
    compare_fwd_bwd(conv, x, xd, conv(x), F.conv3d(xd, w, b, padding=1, groups=2), w, b)


# ------------------------------------------------------------------------------------- strided
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k,s,p,groups,mult", [(3, 2, 1, 1, 1), (2, 2, 0, 1, 1), (3, 2, 1, 3, 2)])
def test_strided_conv_matches_dense(impl, k, s, p, groups, mult, device):
    torch.manual_seed(k * 7 + groups)
    c = 3
    out_chs = 5 if groups == 1 else c * mult
    x, xd, mask = random_input(c, seed=20 + k + groups, device=device)
    conv = SparseConv3d(c, out_chs, k, stride=s, padding=p, groups=groups, impl=impl).to(device)
    w, b = leaf_copies(conv)
    y = conv(x)
    yd = F.conv3d(xd, w, b, stride=s, padding=p, groups=groups)
    # Output sites == non-zero support of the dense conv of the occupancy grid.
    support = F.conv3d(mask[:, None].float(), torch.ones(1, 1, k, k, k, device=device), stride=s, padding=p)[:, 0] > 0
    assert y.spatial_shape == tuple(yd.shape[2:])
    assert coord_set(y.indices) == coord_set(support.nonzero())
    compare_fwd_bwd(conv, x, xd, y, yd, w, b)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("groups", [1, 4])
def test_inverse_conv_matches_conv_transpose(impl, groups, device):
    torch.manual_seed(groups)
    c_fine, c_coarse = 4, 4
    x, _, mask = random_input(c_fine, seed=30, device=device)
    down = SparseConv3d(c_fine, c_coarse, 3, stride=2, padding=1, impl=impl).to(device)
    coarse = down(x)
    # Fresh leaf features on the coarse sites (the map stays attached to the coordinates).
    y = coarse.replace_feature(torch.randn(coarse.num_points, c_coarse, device=device).requires_grad_())
    yd = y.dense().detach().requires_grad_()
    up = SparseInverseConv3d(c_coarse, c_fine, 3, stride=2, padding=1, groups=groups, impl=impl).to(device)
    w, b = leaf_copies(up)
    z = up(y)
    assert z.coords is x.coords  # back on the encoder's sites: skip sums work
    out_pad = [full - ((co - 1) * 2 - 2 + 3) for full, co in zip(SHAPE, y.spatial_shape)]
    zd = F.conv_transpose3d(yd, w.transpose(0, 1) if groups == 1 else w, b, stride=2, padding=1,
                            output_padding=out_pad, groups=groups)
    compare_fwd_bwd(up, y, yd, z, zd, w, b)
    (x + z).features.sum()  # same coordinates


@pytest.mark.parametrize("impl", IMPLS)
def test_inverse_conv_needs_map_or_ref(impl, device):
    x, _, _ = random_input(2, seed=31, device=device)
    y = SparseConv3d(2, 2, 3, stride=2, padding=1, impl=impl).to(device)(x)
    up = SparseInverseConv3d(2, 2, 3, stride=2, padding=1, impl=impl).to(device)
    bare = SparseTensor(y.features.detach(), y.indices.clone(), y.spatial_shape, y.batch_size)  # no map attached
    with pytest.raises(ValueError, match="no .* map"):
        up(bare)
    torch.testing.assert_close(up(bare, ref=x).features, up(y).features)
    other, _, _ = random_input(2, seed=32, device=device)
    with pytest.raises(ValueError, match="not the output sites"):
        up(bare, ref=other)


# ---------------------------------------------------------------------------------- composites
@pytest.mark.parametrize("impl", IMPLS)
def test_ffnified_attention_composite_matches_dense(impl, device):
    """Depthwise 7^3 -> GELU -> depthwise 7^3 (the FFNified-attention key/value pair) vs dense conv3d."""
    torch.manual_seed(1)
    c = 4
    x, xd, mask = random_input(c, seed=40, device=device)
    key = SubMConv3d(c, c, 7, groups=c, impl=impl).to(device)
    value = SubMConv3d(c, c, 7, groups=c, impl=impl).to(device)
    y = value(SparseGELU()(key(x)))
    assert len(x.cache) == 1  # both 7^3 convs used one neighbour map
    wk, bk = leaf_copies(key)
    wv, bv = leaf_copies(value)
    m = mask[:, None].float()
    # Submanifold semantics in dense form: re-mask after each conv (GELU(0) = 0 keeps the mask).
    yd = F.conv3d(F.gelu(F.conv3d(xd, wk, bk, padding=3, groups=c) * m), wv, bv, padding=3, groups=c) * m
    compare_fwd_bwd(value, x, xd, y, yd, wv, bv)
    torch.testing.assert_close(key.weight.grad, wk.grad, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(key.bias.grad, bk.grad, atol=ATOL, rtol=1e-4)


def _encoder_decoder(impl: str) -> nn.ModuleDict:
    torch.manual_seed(5)
    return nn.ModuleDict(dict(
        stem=SubMConv3d(3, 8, 3, impl=impl), down=SparseConv3d(8, 8, 3, 2, 1, impl=impl),
        mix=SubMConv3d(8, 16, 5, groups=8, impl=impl), up=SparseInverseConv3d(16, 8, 3, 2, 1, impl=impl)))


def _run_encoder_decoder(net, x):
    skip = net["stem"](x)
    return (skip + net["up"](net["mix"](net["down"](skip)))).dense()


@pytest.mark.skipif(not HAS_SPCONV, reason="spconv not installed")
def test_implementations_agree(device):
    x, _, _ = random_input(3, seed=50, shape=(10, 9, 11), device=device)
    x2 = SparseTensor(x.features.detach().clone().requires_grad_(), x.indices, x.spatial_shape, x.batch_size)
    net_t, net_s = _encoder_decoder("torch").to(device), _encoder_decoder("spconv").to(device)
    net_s.load_state_dict(net_t.state_dict())  # state dicts are implementation-independent
    out_t, out_s = _run_encoder_decoder(net_t, x), _run_encoder_decoder(net_s, x2)
    torch.testing.assert_close(out_t, out_s, atol=ATOL, rtol=1e-4)
    g = torch.randn_like(out_t)
    (out_t * g).sum().backward()
    (out_s * g).sum().backward()
    torch.testing.assert_close(x.features.grad, x2.features.grad, atol=ATOL, rtol=1e-4)
    for (name, pt), ps in zip(net_t.named_parameters(), net_s.parameters()):
        torch.testing.assert_close(pt.grad, ps.grad, atol=ATOL, rtol=1e-4, msg=name)


# --------------------------------------------------------------------------------- feature-wise
def test_featurewise_modules_match_torch():
    torch.manual_seed(0)
    x, _, _ = random_input(6, seed=60)
    f = x.features.detach()
    bn, ref_bn = SparseBatchNorm(6), nn.BatchNorm1d(6)
    torch.testing.assert_close(bn(x).features, ref_bn(f))
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    torch.testing.assert_close(SparseGELU()(x).features, F.gelu(f))
    lin = SparseLinear(6, 9)
    y = lin(x)
    torch.testing.assert_close(y.features, f @ lin.weight.t() + lin.bias)
    assert y.coords is x.coords and (lin.in_channels, lin.out_channels) == (6, 9)
    ls = SparseLayerScale(6, 0.5)
    torch.testing.assert_close(ls(x).features, f * 0.5)
    torch.testing.assert_close(FeatureWise(nn.LayerNorm(6))(x).features, F.layer_norm(f, (6,)))
    torch.testing.assert_close(sparse_add(x, x).features, 2 * f)


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    batch = 8
    x, _, _ = random_input(3, seed=61, batch=batch)
    dp = SparseDropPath(0.5).train()
    y = dp(x)
    ratio = y.features.detach() / x.features.detach()  # 0 or 1 / (1 - p) per voxel
    b = x.indices[:, 0].long()
    kept = []
    for i in range(batch):
        r = ratio[b == i]
        assert torch.allclose(r, r[0].expand_as(r)), f"sample {i} was dropped per point, not per sample"
        assert r[0, 0].item() in (0.0, 2.0)
        kept.append(r[0, 0].item() > 0)
    assert any(kept) and not all(kept)  # with p=0.5 over 8 samples (fixed seed)
    y.features.sum().backward()
    assert set(x.features.grad.unique().tolist()) <= {0.0, 2.0}
    dp.eval()
    assert dp(x) is x


# ---------------------------------------------------------------------------- tensor behaviour
def test_dense_roundtrip_and_bev():
    x, xd, _ = random_input(3, seed=70)
    torch.testing.assert_close(x.dense(), xd.detach())
    x2 = SparseTensor.from_dense(xd.detach())
    assert torch.equal(x2.indices, x.indices) and torch.equal(x2.features, x.features.detach())
    bev = to_bev(x)
    d = SHAPE[0]
    assert bev.shape == (2, 3 * d, SHAPE[1], SHAPE[2])
    torch.testing.assert_close(bev[:, 1 * d + 4], xd.detach()[:, 1, 4])  # channel c*D + z


def test_map_cache_is_shared_and_keyed():
    x, _, _ = random_input(2, seed=71)
    a = SubMConv3d(2, 2, 3, impl="torch")(x)
    SubMConv3d(2, 2, 3, impl="torch")(a)  # same coordinates, same geometry: no new map

    def geometries():  # a submanifold geometry may hold its pair list and its neighbour-map form
        return {key[2] for key in x.cache}

    assert geometries() == {(3, 3, 3)}
    n = len(x.cache)
    SubMConv3d(2, 2, 3, impl="torch")(a)
    assert len(x.cache) == n
    SubMConv3d(2, 2, 5, impl="torch")(x.replace_feature(x.features * 2))
    assert geometries() == {(3, 3, 3), (5, 5, 5)}
    y = SparseConv3d(2, 2, 3, stride=2, padding=1, impl="torch")(x)
    assert ("torch", "conv", (3, 3, 3), (2, 2, 2), (1, 1, 1)) in x.cache
    assert ("torch", "inverse", (3, 3, 3), (2, 2, 2), (1, 1, 1)) in y.cache
    with pytest.raises(ValueError, match="different coordinates"):
        x + y


def _bad(features=None, indices=None, shape=(4, 4, 4), batch=2):
    idx = torch.tensor([[0, 0, 0, 0], [1, 3, 2, 1]], dtype=torch.int32) if indices is None else indices
    f = torch.zeros(idx.shape[0], 2) if features is None else features
    return SparseTensor(f, idx, shape, batch)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(indices=torch.tensor([[0, 0, 0, 0]])), TypeError, "int32"),
    (dict(indices=torch.tensor([[0.0, 0, 0, 0]])), TypeError, "int32"),
    (dict(indices=torch.zeros(2, 3, dtype=torch.int32)), ValueError, r"\(N, 4\)"),
    (dict(indices=torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.int32)), ValueError, "duplicate"),
    (dict(indices=torch.tensor([[0, -1, 0, 0]], dtype=torch.int32)), ValueError, "negative z"),
    (dict(indices=torch.tensor([[0, 0, 4, 0]], dtype=torch.int32)), ValueError, "y coordinate 4 is outside"),
    (dict(indices=torch.tensor([[2, 0, 0, 0]], dtype=torch.int32)), ValueError, "batch index 2"),
    (dict(features=torch.zeros(2, 2, dtype=torch.long)), TypeError, "floating"),
    (dict(features=torch.zeros(3, 2)), ValueError, "3 rows"),
    (dict(shape=(4, 4)), ValueError, "spatial_shape"),
    (dict(batch=0), ValueError, "batch_size"),
])
def test_bad_input_is_rejected(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _bad(**kwargs)


def test_bad_conv_usage():
    x, _, _ = random_input(3, seed=72)
    with pytest.raises(ValueError, match="input channels"):
        SubMConv3d(4, 4, 3, impl="torch")(x)
    with pytest.raises(ValueError, match="odd"):
        SubMConv3d(3, 3, 4)
    with pytest.raises(TypeError, match="SparseTensor"):
        SubMConv3d(3, 3, 3, impl="torch")(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="empty output grid"):
        SparseConv3d(3, 3, 9, stride=2, padding=0, impl="torch")(x)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_tensor_flows_through(impl, device):
    x = SparseTensor(torch.zeros(0, 3, device=device, requires_grad=True),
                     torch.zeros(0, 4, dtype=torch.int32, device=device), SHAPE, 2)
    net = [SubMConv3d(3, 4, 3, impl=impl), SparseBatchNorm(4), SparseGELU(), SubMConv3d(4, 8, 7, groups=4, impl=impl),
           SparseConv3d(8, 8, 3, 2, 1, impl=impl)]
    net = [m.to(device) for m in net]
    y = x
    for m in net:
        y = m(y)
    assert y.features.shape == (0, 8) and y.spatial_shape == (4, 4, 5)
    z = SparseInverseConv3d(8, 3, 3, 2, 1, impl=impl).to(device)(y)
    assert z.features.shape == (0, 3) and z.dense().shape == (2, 3, *SHAPE)
    assert to_bev(z).abs().sum() == 0
    (z.features.sum() + y.features.sum()).backward()


def test_resolve_impl(monkeypatch):
    monkeypatch.setenv("FFNET_SPARSE_IMPL", "torch")
    assert resolve_impl() == "torch" and SubMConv3d(2, 2, 3).impl == "torch"
    if HAS_SPCONV:
        assert resolve_impl("spconv") == "spconv"
    else:
        with pytest.raises(ImportError, match="ffnet-core\\[sparse\\]"):
            resolve_impl("spconv")
    monkeypatch.setenv("FFNET_SPARSE_IMPL", "cuda")
    with pytest.raises(ValueError, match="unknown sparse implementation"):
        resolve_impl()
    monkeypatch.delenv("FFNET_SPARSE_IMPL")
    assert resolve_impl() == ("spconv" if torch.cuda.is_available() and HAS_SPCONV else "torch")
