"""FFNet-TS against the spec: structure, re-parameterization, CPU fast path vs stock ops, baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ffnet import reparameterize_model
from ffnet.layers import MetaMixer, RepDWConv
from ffnet.testing import randomize_bn, rel_err
from ffnet_ts import fastconv
from ffnet_ts.baselines import DLinear, PatchTST
from ffnet_ts.model import (
    CrossVariableFFNOut,
    CrossVariableQuery,
    FFNetTS,
    create_model,
    dataset_defaults,
    list_models,
)

VARIANTS = ["ffnet_ts_tiny", "ffnet_ts"]


def _model(name: str, n_vars=3, lookback=32, horizon=8, **kw):
    torch.manual_seed(0)
    return create_model(name, n_vars=n_vars, lookback=lookback, horizon=horizon, **kw)


@pytest.mark.parametrize("name", VARIANTS + ["dlinear", "patchtst"])
def test_shapes_finite_and_every_parameter_gets_a_gradient(name, device):
    m = _model(name).to(device)
    x = torch.randn(4, 32, 3, device=device)
    y = m(x)
    assert y.shape == (4, 8, 3) and torch.isfinite(y).all()
    y.pow(2).mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", VARIANTS)
def test_fused_equals_unfused_and_loads_into_inference_mode_build(name, device):
    m = randomize_bn(_model(name, dropout=0.5)).to(device).eval()
    x = torch.randn(5, 32, 3, device=device) * 3 + 1
    with torch.no_grad():
        ref = m(x)
        reparameterize_model(m)
        assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in m.modules())
        assert rel_err(m(x), ref) < 1e-5
        reparameterize_model(m)  # idempotent
        assert rel_err(m(x), ref) < 1e-5
    torch.manual_seed(1)
    deployed = create_model(name, n_vars=3, lookback=32, horizon=8, inference_mode=True).to(device).eval()
    deployed.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert rel_err(deployed(x), ref) < 1e-5


def test_block_is_two_metamixers_from_core_primitives():
    m = _model("ffnet_ts")
    block = m.blocks[0]
    assert isinstance(block.token_mixer, MetaMixer) and isinstance(block.channel_mixer, MetaMixer)
    tm, cm = block.token_mixer, block.channel_mixer
    assert isinstance(tm.key_interaction, RepDWConv) and tm.key_interaction.kernel_size == 51
    assert isinstance(tm.value_interaction, RepDWConv) and tm.value_interaction.small is None
    assert isinstance(cm.query_proj, RepDWConv) and (cm.query_proj.kernel_size, cm.query_proj.small_kernel) == (51, 5)
    assert m.num_patches == 16  # (32 + 4 - 2 - 4) / 2 + 1


def test_reference_parameter_count_etth1():
    """Analytic count of the spec §2 network for ETTh1 (M=7, D=64, r=2, N=48, H=96), train-time form."""
    M, D, r, N, H, k, ks = 7, 64, 2, 48, 96, 51, 5
    stem = D * 4 + D + 2 * D
    query = (D * 2 * M * M + 2 * M * D) + (M * D * 2 * D + M * D) + 2 * D
    key_value = 2 * (M * D * k + M * D)
    repdw = M * D * k + 2 * M * D + M * D * ks + 2 * M * D
    ffn = 2 * D + (M * D * r * D + M * D * r) + (D * M * r * M + M * D)
    head = D * N * H + H
    m = create_model("ffnet_ts", n_vars=M, lookback=96, horizon=H, ffn_ratio=r)
    assert sum(p.numel() for p in m.parameters()) == stem + query + key_value + repdw + ffn + head


def test_cross_variable_query_equals_the_spec_formula():
    """§2.2: per feature d a linear map M -> 2M (+bias), GELU; per variable g a map over {2g, 2g+1} x D -> D."""
    D, M, N, B = 4, 3, 6, 2
    q = CrossVariableQuery(D, M, drop1=0.0, drop2=0.0).eval()
    randomize_bn(q)
    x = torch.randn(B, M * D, N)
    xv = x.view(B, M, D, N)
    w1, b1 = q.fc1.weight.view(D, 2 * M, M), q.fc1.bias.view(D, 2 * M)
    h = torch.einsum("dkm,bmdn->bkdn", w1, xv) + b1.T[None, :, :, None]  # (B, 2M, D, N)
    h = F.gelu(h)
    w2, b2 = q.fc2.weight.view(M, D, 2, D), q.fc2.bias.view(M, D)  # out (g, d'), in ({2g, 2g+1}, d)
    h2 = h.view(B, M, 2, D, N)
    out = torch.einsum("gekd,bgkdn->bgen", w2, h2) + b2[None, :, :, None]  # (B, M, D, N)
    bn = q.norm.bn
    out = (out - bn.running_mean[None, None, :, None]) / torch.sqrt(bn.running_var + bn.eps)[None, None, :, None]
    out = out * bn.weight[None, None, :, None] + bn.bias[None, None, :, None]
    with torch.no_grad():
        assert rel_err(q(x), out.reshape(B, M * D, N)) < 1e-5
        q0 = q(x)
        x2 = x.clone()
        x2[:, :D] += 1.0  # perturb variable 0 only
        assert (q(x2) - q0)[:, D:2 * D].abs().max() > 1e-3  # variable 1's query changes: it mixes variables


def test_cross_variable_ffn_out_equals_the_spec_formula():
    """§2.3 step 4: for feature d, mix hidden channels {d r .. d r + r - 1} of all M variables into M outputs."""
    D, M, r, N, B = 4, 3, 2, 5, 2
    f = CrossVariableFFNOut(D, M, r, dropout=0.0).eval()
    x = torch.randn(B, M * D * r, N)
    xv = x.view(B, M, D, r, N)  # hidden channel j = d * r + i of variable m
    w, b = f.fc.weight.view(D, M, r, M), f.fc.bias.view(D, M)  # group d: out m', in (i, m)
    ref = torch.einsum("dnim,bmdit->bndt", w, xv) + b.T[None, :, :, None]  # (B, M', D, N)
    with torch.no_grad():
        assert rel_err(f(x), ref.reshape(B, M * D, N)) < 1e-5


def test_revin_makes_the_forecast_shift_and_scale_equivariant():
    m = _model("ffnet_ts_tiny").eval()
    x = torch.randn(3, 32, 3)
    with torch.no_grad():
        assert rel_err(m(x * 4 + 10), m(x) * 4 + 10) < 1e-4


def test_dataset_defaults_follow_the_reference_scripts():
    assert dataset_defaults("ETTh1", 96) == dict(ffn_ratio=2, dropout=0.7, head_dropout=0.0, batch_size=512, lr=1e-4,
                                                 patience=20)
    assert dataset_defaults("ETTh2", 720)["dropout"] == 0.85 and dataset_defaults("ETTh2", 96)["dropout"] == 0.8
    assert dataset_defaults("Weather", 336)["batch_size"] == 512
    assert dataset_defaults("my.csv", 96) == dataset_defaults(None, 96)
    assert set(list_models()) >= {"ffnet_ts", "dlinear", "patchtst"}
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope", n_vars=1)


# ------------------------------------------------------------------------------------- CPU fast path vs stock


def _channel_major(shape):
    return fastconv.to_channel_major(torch.randn(*shape))


@pytest.mark.parametrize("k, n", [(51, 48), (5, 48), (7, 20), (51, 10)])
@pytest.mark.parametrize("layout", ["standard", "channel_major"])
def test_toeplitz_depthwise_conv_equals_conv1d(k, n, layout):
    conv = fastconv.SEQUENCE_BACKEND.conv(6, 6, k, groups=6)
    assert isinstance(conv, fastconv.ToeplitzDWConv1d)
    x = torch.randn(4, 6, n) if layout == "standard" else _channel_major((4, 6, n))
    x.requires_grad_(True)
    y = conv(x)
    ref = F.conv1d(x, conv.weight, conv.bias, padding=k // 2, groups=6)
    assert rel_err(y, ref) < 1e-5
    g = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    rx, rw, rb = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    assert rel_err(gx, rx) < 1e-5 and rel_err(gw, rw) < 1e-5 and rel_err(gb, rb) < 1e-5


@pytest.mark.parametrize("groups", [1, 3, 12])
def test_pointwise_grouped_conv_equals_conv1d(groups):
    conv = fastconv.SEQUENCE_BACKEND.conv(12, 24, 1, groups=groups)
    assert isinstance(conv, fastconv.PointwiseConv1d)
    for x in (torch.randn(3, 12, 7), _channel_major((3, 12, 7))):
        x.requires_grad_(True)
        y, ref = conv(x), F.conv1d(x, conv.weight, conv.bias, groups=groups)
        assert rel_err(y, ref) < 1e-5
        g = torch.randn_like(y)
        assert rel_err(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0]) < 1e-5


def test_layout_batchnorm_matches_batchnorm_including_running_stats():
    bn, ref = fastconv.LayoutBatchNorm1d(5), torch.nn.BatchNorm1d(5)
    x = _channel_major((6, 5, 9))
    assert rel_err(bn(x), ref(x.contiguous())) < 1e-5
    assert torch.allclose(bn.running_mean, ref.running_mean) and torch.allclose(bn.running_var, ref.running_var)


def test_swap_channel_groups_keeps_layout_and_values():
    x = torch.randn(2, 3 * 4, 5)
    ref = x.view(2, 3, 4, 5).transpose(1, 2).reshape(2, 12, 5)
    for inp in (x, fastconv.to_channel_major(x)):
        out = fastconv.swap_channel_groups(inp, 3, 4)
        assert torch.equal(out, ref) and fastconv.is_channel_major(out) == fastconv.is_channel_major(inp)


def test_fast_dropout_statistics_and_eval_identity():
    torch.manual_seed(0)
    d = fastconv.FastDropout(0.7)
    x = torch.ones(200, 50, 40)
    y = d(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - (256 - 179) / 256) < 0.005  # p = 0.7 -> 179/256 dropped
    assert torch.allclose(y[y != 0], torch.tensor(256 / 77))  # exact inverse scaling of the quantized p
    assert abs(y.mean().item() - 1.0) < 0.02
    y_cm = d(fastconv.to_channel_major(x))
    assert fastconv.is_channel_major(y_cm)
    d.eval()
    assert d(x) is x


@pytest.mark.parametrize("name", VARIANTS)
def test_whole_model_fast_path_equals_stock_ops(name):
    m = randomize_bn(_model(name, dropout=0.0)).eval()
    x = torch.randn(6, 32, 3)
    with torch.no_grad():
        fast = m(x)
        with fastconv.stock_ops():
            stock = m(x)
    assert rel_err(fast, stock) < 1e-5
    # training mode without dropout: same loss gradient on every parameter
    m = _model(name, dropout=0.0)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    m.train()
    grads = []
    for ctx in (fastconv.stock_ops, None):
        m.zero_grad()
        if ctx is None:
            m(x).pow(2).mean().backward()
        else:
            with ctx():
                m(x).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    scale = max(g.abs().max().item() for g in grads[0])
    for a, b in zip(*grads):  # (biases right before a BN have ~0 gradient: compare on the global scale)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


# ------------------------------------------------------------------------------------------------ baselines


def test_dlinear_decomposition_against_a_loop():
    m = DLinear(20, 5, 2, kernel_size=5)
    x = torch.randn(3, 20, 2)
    padded = torch.cat([x[:, :1].expand(-1, 2, -1), x, x[:, -1:].expand(-1, 2, -1)], dim=1)
    ref = torch.stack([padded[:, i:i + 5].mean(1) for i in range(20)], dim=1)  # (B, L, C)
    assert rel_err(m.moving_average(x).transpose(1, 2), ref) < 1e-6


def test_patchtst_patching_and_channel_independence():
    m = PatchTST(96, 24, 3).eval()
    assert m.num_patches == 12  # (96 - 16) / 8 + 2 with end padding
    x = torch.randn(2, 96, 3)
    with torch.no_grad():
        y = m(x)
        x2 = x.clone()
        x2[..., 0] += torch.randn(2, 96)
        y2 = m(x2)
    assert torch.allclose(y[..., 1:], y2[..., 1:], atol=1e-5)  # variables never mix
    assert not torch.allclose(y[..., 0], y2[..., 0])


def test_ffnet_ts_rejects_too_short_lookback():
    with pytest.raises(ValueError):
        FFNetTS(n_vars=1, lookback=1, horizon=4, patch_size=4, patch_stride=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channel_major", [False, True])
def test_fast_dropout_fused_kernel_equals_stock_mask_multiply(dtype, channel_major):
    """The fused (numba) dropout == x * (bytes >= drop) * scale with the same bytes, forward and backward."""
    d = fastconv.FastDropout(0.7).train()
    x = torch.randn(6, 10, 12, dtype=dtype)
    if channel_major:
        x = fastconv.to_channel_major(x)
    x.requires_grad_(True)
    torch.manual_seed(3)
    y = d(x)
    g = torch.randn(6, 10, 12, dtype=dtype)  # batch-major gradient: exercises the layout copy in backward
    y.backward(g)
    # the stock-op reference with the same random bytes
    torch.manual_seed(3)
    n = x.numel()
    bits = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-(2**63), None)
    u8 = bits.view(torch.uint8)[:n].as_strided(x.shape, x.stride())
    mask = (u8 >= 179).to(dtype).mul_(256.0 / 77)
    assert torch.equal(y, x.detach() * mask)
    assert torch.equal(x.grad, g * mask)
    assert fastconv.is_channel_major(y) == channel_major


def test_bf16_dropout_kernel_rounds_like_aten_including_specials():
    """The bf16 kernel (fp32 widening by bitcast, round to nearest even) == ATen's bf16 ``x * mask`` bit for bit
    on every finite value, for every quantized drop level; NaN / inf stay NaN / inf where ATen's do."""
    assert fastconv._numba_dropout_bf16(), "the bf16 dropout kernel did not compile"
    torch.manual_seed(0)
    x = (torch.randn(40, 33, 17) * torch.logspace(-30, 30, 17)).bfloat16()  # spans exponents: rounding carries
    x.view(-1)[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0]).bfloat16()
    u8 = torch.randint(0, 256, x.shape, dtype=torch.uint8)
    for drop in (1, 38, 77, 179, 255):
        scale = 256.0 / (256 - drop)
        ref = x * (u8 >= drop).to(torch.bfloat16).mul_(scale)
        out = fastconv._masked_scale(x, u8, drop, scale)
        fin = ref.isfinite()
        assert torch.equal(out[fin].view(torch.int16), ref[fin].view(torch.int16)), drop
        assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layout_gelu_and_residual_add_on_channel_major_equal_the_standard_layout(dtype):
    """On channel-major input, GELU (forward and backward) and the residual add give exactly what the stock ops
    give on the same values in the standard layout (the layout the stock model runs in), and keep the layout."""
    torch.manual_seed(0)
    x = (torch.randn(16, 30, 48) * 3).to(dtype)
    g = torch.randn(16, 30, 48).to(dtype)
    xs = x.clone().requires_grad_(True)
    ref = F.gelu(xs)
    ref.backward(g)
    xc = fastconv.to_channel_major(x).requires_grad_(True)
    out = fastconv.LayoutGELU()(xc)
    out.backward(fastconv.to_channel_major(g))
    assert fastconv.is_channel_major(out) and fastconv.is_channel_major(xc.grad)
    assert torch.equal(out, ref) and torch.equal(xc.grad, xs.grad)
    b = torch.randn(16, 30, 48).to(dtype)
    s = fastconv.residual_add(xc.detach(), fastconv.to_channel_major(b))
    assert fastconv.is_channel_major(s) and torch.equal(s, x + b)


def test_linear_base_variant_starts_at_the_closed_form_forecast_and_learns_the_residual():
    """ffnet_ts_lb (ours): untrained == the closed-form linear map; the network part is a residual on top."""
    import numpy as np

    torch.manual_seed(0)
    L, H, M = 32, 8, 3
    m = create_model("ffnet_ts_lb", n_vars=M, lookback=L, horizon=H, ffn_ratio=2, dropout=0.1, dim=8,
                     kernel_size=7, small_kernel=3).eval()
    w = np.random.default_rng(0).normal(size=(L + 1, H))
    m.set_linear_base(w)
    x = torch.randn(4, L, M)
    expected = torch.from_numpy(np.einsum("blm,lh->bhm", x.double().numpy(), w[:-1]) + w[-1][None, :, None]).float()
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)
    # after a few training steps the output differs from the base, and the base itself did not move
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    y = torch.randn(4, H, M)
    for _ in range(3):
        loss = F.mse_loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert not torch.allclose(m(x), expected, atol=1e-4)
    torch.testing.assert_close(m.base_weight, torch.from_numpy(w[:-1]).float())
    assert "base_weight" in m.state_dict() and all(n != "base_weight" for n, _ in m.named_parameters())
    with pytest.raises(ValueError, match="linear base must be"):
        m.set_linear_base(np.zeros((L, H)))
    # fused == unfused for the variant too
    ref = m(x)
    reparameterize_model(m)
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_fit_installs_the_linear_base_from_the_train_windows(data_dir, tmp_path):
    from ffnet_ts import data as D
    from ffnet_ts import reference as R
    from ffnet_ts import train as T
    from ffnet_ts.testing import staged_csv, truncated_csv

    csv = truncated_csv(staged_csv(data_dir), tmp_path / "etth1_small.csv", 600)
    prep = D.prepare(D.load(str(csv)), 48, 12)
    torch.manual_seed(0)
    m = create_model("ffnet_ts_lb", n_vars=prep.n_vars, lookback=48, horizon=12, dim=8, kernel_size=7,
                     small_kernel=3)
    T.fit(m, prep, T.TrainConfig(epochs=1, patience=1, batch_size=64, progress=False))
    w = R.fit_linear(prep).weight
    torch.testing.assert_close(m.base_weight, torch.from_numpy(w[:-1]).float())


# ------------------------------------------------------------------------------------ gradient checkpointing


def _ckpt_loss_and_grads(m, x, *, bf16=False):
    m.zero_grad()
    torch.manual_seed(7)  # the token mixer's and the value's dropout draw the same masks in both runs
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = m(x).float().pow(2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("stock", [False, True])
def test_grad_checkpointing_equals_the_plain_training_step(stock, device, one_thread):
    # the sliced hidden layer computes the same function: with its own dropout off (the other dropouts on) the
    # loss, every gradient and the BN running statistics match the plain forward on the fast and stock paths
    m = _model("ffnet_ts", n_vars=3, ffn_ratio=4, dropout=0.0).to(device).train()
    x = torch.randn(6, 32, 3, device=device)
    ctx = fastconv.stock_ops() if stock else torch.enable_grad()
    with ctx:
        loss0, g0 = _ckpt_loss_and_grads(m, x)
        bn0 = m.blocks[0].channel_mixer.key_interaction.norm.bn.running_mean.clone()
        m.set_grad_checkpointing(True, chunks=4)
        loss1, g1 = _ckpt_loss_and_grads(m, x)
        bn1 = m.blocks[0].channel_mixer.key_interaction.norm.bn.running_mean.clone()
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=0)
    scale = max(g.abs().max().item() for g in g0.values())
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-6 * scale, msg=n)
    # BN sits outside the recomputed slices: its running mean (from 0) takes one update per step, not two, from
    # the same batch mean mu: bn0 = k * mu, bn1 = (1 - k) * bn0 + k * mu = (2 - k) * bn0
    momentum = m.blocks[0].channel_mixer.key_interaction.norm.bn.momentum
    torch.testing.assert_close(bn1, (2 - momentum) * bn0, rtol=1e-5, atol=1e-7)


def test_grad_checkpointing_recompute_redraws_the_same_dropout_masks(monkeypatch, one_thread):
    # with the FFN dropout on, the backward's recomputation must reuse the forward's masks (RNG state restored):
    # the same sliced model without recomputation (checkpoint replaced by a plain call) gives identical numbers
    import torch.utils.checkpoint as tuc

    m = _model("ffnet_ts", n_vars=3, ffn_ratio=4, dropout=0.6).train()
    m.set_grad_checkpointing(True, chunks=2)
    x = torch.randn(6, 32, 3)
    for bf16 in (False, True):
        loss_ck, g_ck = _ckpt_loss_and_grads(m, x, bf16=bf16)
        with monkeypatch.context() as mp:
            mp.setattr(tuc, "checkpoint", lambda fn, *a, **kw: fn(*a))
            loss_plain, g_plain = _ckpt_loss_and_grads(m, x, bf16=bf16)
        assert torch.equal(loss_ck, loss_plain)
        for n in g_ck:
            assert torch.equal(g_ck[n], g_plain[n]), n


def test_grad_checkpointing_holds_the_hidden_layer_one_slice_at_a_time(one_thread):
    # bytes kept for the backward by the forward pass (the activations autograd saves), plain vs checkpointed:
    # the r = 12 hidden layer dominates the plain step and is not kept at all when checkpointed
    m = _model("ffnet_ts", n_vars=3, ffn_ratio=12, dropout=0.5).train()
    x = torch.randn(16, 32, 3)
    kept = []
    for enable in (False, True):
        m.set_grad_checkpointing(enable, chunks=4)
        total = [0]

        def pack(t, total=total):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x).pow(2).mean()
        kept.append(total[0])
    hidden = 16 * 3 * 64 * 12 * m.num_patches * 4  # one fp32 (B, M*rD, N) tensor
    assert kept[0] - kept[1] > 1.5 * hidden, kept


def test_grad_checkpointing_leaves_eval_and_fusing_alone_and_checks_chunks():
    m = randomize_bn(_model("ffnet_ts", ffn_ratio=4)).eval()
    x = torch.randn(5, 32, 3)
    with torch.no_grad():
        ref = m(x)
        m.set_grad_checkpointing(True, chunks=8)
        assert torch.equal(m(x), ref)
        reparameterize_model(m)
        assert rel_err(m(x), ref) < 1e-5
    for bad in (1, 3, 0):
        with pytest.raises(ValueError, match="chunks"):
            m.set_grad_checkpointing(True, chunks=bad)
    m.set_grad_checkpointing(False)
    assert all(b.ffn_chunks == 0 for b in m.blocks)
