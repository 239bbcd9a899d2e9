"""iTransformer and the Time-Series-Library flavours of the baselines (ffnet_ts.baselines)."""

from __future__ import annotations

import math

import pytest
import torch
from ffnet.testing import rel_err
from ffnet_ts.baselines import DLinear, PatchTST, _PostNormEncoderLayer, _sincos_positions
from ffnet_ts.model import create_model, list_models


def _itr(n_vars=5, lookback=24, horizon=6, **kw):
    torch.manual_seed(0)
    kw = {"dim": 16, "depth": 2, "num_heads": 4, "ffn_dim": 32, **kw}
    return create_model("itransformer", n_vars=n_vars, lookback=lookback, horizon=horizon, **kw)


def test_registered_and_shapes_finite_every_parameter_gets_a_gradient(device):
    assert "itransformer" in list_models()
    m = _itr().to(device)
    y = m(torch.randn(3, 24, 5, device=device))
    assert y.shape == (3, 6, 5) and torch.isfinite(y).all()
    y.pow(2).mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_runs_on_any_number_of_variates():
    m = _itr(n_vars=5).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 24, 9)).shape == (2, 6, 9)  # tokens are variates: N is not baked into weights


def test_permutation_equivariant_over_variates():
    m = _itr().eval()
    x = torch.randn(4, 24, 5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        assert rel_err(m(x[..., perm]), m(x)[..., perm]) < 1e-5


def test_variates_do_mix():
    # unlike the channel-independent PatchTST, attention over variate tokens lets one variate move the others
    m = _itr().eval()
    x = torch.randn(2, 24, 5)
    x2 = x.clone()
    x2[..., 0] = torch.randn(2, 24)
    with torch.no_grad():
        assert not torch.allclose(m(x)[..., 1:], m(x2)[..., 1:], atol=1e-4)


def test_non_stationary_normalization_makes_forecast_shift_and_scale_equivariant():
    m = _itr().eval()
    x = torch.randn(2, 24, 5)
    scale, shift = torch.tensor([2.0, 0.5, 3.0, 1.0, 4.0]), torch.tensor([10.0, -3.0, 0.0, 7.0, 1.0])
    with torch.no_grad():
        assert rel_err(m(x * scale + shift), m(x) * scale + shift) < 1e-4
    off = _itr(use_norm=False).eval()
    with torch.no_grad():
        assert rel_err(off(x + 10.0), off(x) + 10.0) > 1e-2  # the switch really removes it


def test_encoder_layer_equals_torch_transformer_encoder_layer():
    # independent reference: PyTorch's post-norm encoder layer with the same weights
    torch.manual_seed(0)
    ours = _PostNormEncoderLayer(16, 4, 40, dropout=0.1).eval()
    ref = torch.nn.TransformerEncoderLayer(16, 4, 40, dropout=0.1, activation="gelu", batch_first=True).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(ours.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(ours.proj.weight)
        ref.self_attn.out_proj.bias.copy_(ours.proj.bias)
        ref.linear1.load_state_dict(ours.fc1.state_dict())
        ref.linear2.load_state_dict(ours.fc2.state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.norm2.load_state_dict(ours.norm2.state_dict())
        x = torch.randn(3, 7, 16)
        assert rel_err(ours(x), ref(x)) < 1e-5


def test_itransformer_forward_equals_the_paper_equations():
    m = _itr(depth=1).eval()
    x = torch.randn(2, 24, 5)
    with torch.no_grad():
        mean = x.mean(1, keepdim=True)
        std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
        h = m.embed(((x - mean) / std).transpose(1, 2))  # (B, N, D): one token per variate
        h = m.norm(m.layers[0](h))
        ref = m.head(h).transpose(1, 2) * std + mean
        assert rel_err(m(x), ref) < 1e-5


def test_tiny_overfit():
    # a fixed batch of noiseless sinusoid windows must be fitted far below the loss of predicting the window mean
    torch.manual_seed(0)
    t = torch.arange(40, dtype=torch.float32)
    phases = torch.rand(16, 1, 3) * 2 * math.pi
    series = torch.sin(2 * math.pi * t[None, :, None] / 12 + phases) * torch.tensor([1.0, 2.0, 0.5])
    x, y = series[:, :28], series[:, 28:]
    m = _itr(n_vars=3, lookback=28, horizon=12, dropout=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    baseline = (y - x.mean(1, keepdim=True)).pow(2).mean().item()
    for _ in range(150):
        loss = (m(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02 * baseline


def test_tslib_patchtst_variant():
    m = PatchTST(96, 24, 3, dim=16, depth=2, num_heads=4, ffn_dim=32, dropout=0.1, style="tslib").eval()
    assert m.num_patches == 12 and m.embed.bias is None
    assert not any(isinstance(p, torch.nn.Parameter) and p is m.pos for p in m.parameters())  # fixed table
    pos = _sincos_positions(12, 16)
    assert torch.allclose(pos[5, 2], torch.sin(torch.tensor(5.0) * 10000 ** (-2 / 16)))
    assert torch.allclose(pos[5, 3], torch.cos(torch.tensor(5.0) * 10000 ** (-2 / 16)))
    x = torch.randn(2, 96, 3)
    x2 = x.clone()
    x2[..., 0] += torch.randn(2, 96)
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    assert torch.allclose(y[..., 1:], y2[..., 1:], atol=1e-5)  # still channel-independent
    m.train()
    m(x).pow(2).mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError):
        PatchTST(96, 24, 3, style="nope")


def test_patchtst_paper_style_is_unchanged_by_the_style_switch():
    torch.manual_seed(3)
    a = PatchTST(96, 24, 3)
    torch.manual_seed(3)
    b = PatchTST(96, 24, 3, style="paper")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_dlinear_average_init():
    m = DLinear(20, 5, 2, average_init=True)
    assert torch.allclose(m.trend.weight, torch.full((5, 20), 1 / 20))
    assert torch.allclose(m.remainder.weight, torch.full((5, 20), 1 / 20))
