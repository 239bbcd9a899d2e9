"""The generic FFNet blocks on the "sparse3d" backend, checked against the same blocks on dense 3D.

The dense reference is the lead's generic block on ``DenseBackend(3)`` (plain ``nn.Conv3d`` /
``BatchNorm3d``) with the sparse block's weights, made submanifold by forward hooks that zero every
layer's output outside the active voxels. Compared in eval mode (BN running statistics: in train
mode sparse BN sees only active voxels, dense BN all sites, by design).
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from ffnet import reparameterize_model
from ffnet.layers import DenseBackend, FFNetBlock, FFNifiedAttention, get_backend
from ffnet.sparse import SparseBackend, SparseConv3d, SparseTensor, SubMConv3d
from ffnet.testing import randomize_bn, rel_err
from torch import nn

HAS_SPCONV = importlib.util.find_spec("spconv") is not None
IMPLS = ["torch", pytest.param("spconv", marks=pytest.mark.skipif(not HAS_SPCONV, reason="spconv not installed"))]
SHAPE = (7, 8, 6)


def random_input(channels: int, device, seed: int = 0, density: float = 0.3, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, *SHAPE, generator=g) < density
    idx = mask.nonzero()
    feats = torch.randn(idx.shape[0], channels, generator=g)
    dense = torch.zeros(batch, channels, *SHAPE)
    dense[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = feats
    x = SparseTensor(feats.to(device, copy=True).requires_grad_(), idx.int().to(device), SHAPE, batch)
    return x, dense.to(device, copy=True).requires_grad_(), mask.to(device)


def dense_twin(sparse: nn.Module, dense: nn.Module, mask: torch.Tensor) -> nn.Module:
    """Loads the sparse module's weights into its dense build and masks every leaf's output."""
    target = dense.state_dict()
    dense.load_state_dict({k: v.reshape(target[k].shape) for k, v in sparse.state_dict().items()})
    m = mask[:, None].to(next(dense.parameters()).dtype)  # (B, 1, D, H, W)
    for mod in dense.modules():
        if not list(mod.children()):
            mod.register_forward_hook(lambda _mod, _inp, out: out * m)
    return dense


def test_get_backend_builds_sparse_modules():
    be = get_backend("sparse3d", impl="torch")
    assert isinstance(be, SparseBackend) and be.name == "sparse3d" and be.ndim == 3 and be.impl == "torch"
    dw = be.conv(4, 8, 7, groups=4)
    assert isinstance(dw, SubMConv3d) and dw.weight.shape == (8, 1, 7, 7, 7) and dw.bias.shape == (8,)
    assert (dw.in_channels, dw.out_channels, dw.kernel_size, dw.stride, dw.groups) == (4, 8, (7, 7, 7), (1, 1, 1), 4)
    down = be.conv(4, 8, 3, stride=2, bias=False)
    assert isinstance(down, SparseConv3d) and down.padding == (1, 1, 1) and down.bias is None
    assert "bias" in dict(dw.named_parameters()) and "bias" not in dict(down.named_parameters())
    assert be.pointwise(4, 6).weight.shape == (6, 4)
    assert isinstance(be.drop_path(0.0), nn.Identity)


@pytest.mark.parametrize("impl", IMPLS)
def test_ffnified_attention_matches_dense_3d(impl, device):
    torch.manual_seed(0)
    dim = 4
    x, xd, mask = random_input(dim, device, seed=1)
    sparse = randomize_bn(FFNifiedAttention(dim, 7, 3, backend=SparseBackend(impl))).to(device).eval()
    dense = dense_twin(sparse, FFNifiedAttention(dim, 7, 3, backend=DenseBackend(3)).to(device).eval(), mask)
    y, yd = sparse(x), dense(xd)
    torch.testing.assert_close(y.dense(), yd, atol=2e-4, rtol=1e-4)
    g = torch.randn_like(yd) * mask[:, None]
    (y.dense() * g).sum().backward()
    (yd * g).sum().backward()
    i = x.indices.long()
    torch.testing.assert_close(x.features.grad, xd.grad[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]], atol=2e-4, rtol=1e-4)
    for (name, ps), pd in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(ps.grad.reshape(pd.shape), pd.grad, atol=5e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_ffnet_block_trains_and_fuses_on_sparse(impl, device):
    torch.manual_seed(0)
    dim = 8
    x, _, _ = random_input(dim, device, seed=2, batch=3)
    block = FFNetBlock(dim, kernel_size=7, small_kernel=3, cm_kernel_size=5, cm_small_kernel=3, mlp_ratio=2.0,
                       ls_init_value=0.5, drop_path=0.2, backend=SparseBackend(impl)).to(device).train()
    y = block(x)
    assert y.coords is x.coords and y.features.shape == x.features.shape and torch.isfinite(y.features).all()
    y.features.square().sum().backward()
    assert all(p.grad is not None for p in block.parameters())

    randomize_bn(block).eval()
    with torch.no_grad():
        ref = block(x).features
        reparameterize_model(block)
        fused = block(x).features
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules())
    assert rel_err(fused, ref) < 1e-5
