"""FFNetSR architectures: spec parameter counts, shapes, gradients, global skip, re-parameterization."""

import pytest
import torch
import torch.nn.functional as F
from ffnet_sr.archs import VARIANTS, FFNetSR, create_model

SMALL = ["ffnetsr_test", "ffnetsr_mini", "ffnetsr_mini_lk"]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,scale,expected", [
    ("ffnetsr", 2, 2.382e6), ("ffnetsr", 3, 2.395e6), ("ffnetsr", 4, 2.413e6),
    ("ffnetsr_light", 2, 1.789e6), ("ffnetsr_light", 3, 1.802e6), ("ffnetsr_light", 4, 1.821e6),
])
def test_param_counts_match_spec(name, scale, expected):
    """Spec section 3.1 (derived from the official configs): 2.38M / 1.79M at x2."""
    assert abs(n_params(create_model(name, scale)) - expected) < 0.0005e6


def test_spec_block_structure():
    m = create_model("ffnetsr_light", 2)
    assert len(m.body) == 36
    blk = m.body[0]
    convs = [mod for mod in blk.modules() if isinstance(mod, torch.nn.Conv2d)]
    # token mixer: 1x1 (bias) -> DW3 -> DW3; channel mixer: DW3 -> 1x1 96->192 -> 1x1 192->96, all biased
    assert [(c.kernel_size[0], c.in_channels, c.out_channels, c.groups) for c in convs] == [
        (1, 96, 96, 1), (3, 96, 96, 96), (3, 96, 96, 96), (3, 96, 96, 96), (1, 96, 192, 1), (1, 192, 96, 1)]
    assert all(c.bias is not None for c in convs)
    assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in m.modules())


@pytest.mark.parametrize("name,scale", [("ffnetsr_test", 2), ("ffnetsr_test", 3), ("ffnetsr_test", 4),
                                        ("ffnetsr_mini", 3), ("ffnetsr_mini_lk", 4)])
def test_forward_shape_grad(name, scale, device):
    torch.manual_seed(0)
    m = create_model(name, scale).to(device)
    x = torch.rand(2, 3, 12, 10, device=device)
    y = m(x)
    assert y.shape == (2, 3, 12 * scale, 10 * scale)
    assert torch.isfinite(y).all()
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_global_skip_is_nearest_upsampling():
    m = create_model("ffnetsr_test", 3)
    torch.nn.init.zeros_(m.conv_last.weight)
    torch.nn.init.zeros_(m.conv_last.bias)
    x = torch.rand(1, 3, 7, 5)
    assert torch.allclose(m(x), F.interpolate(x, scale_factor=3, mode="nearest"))


@pytest.mark.parametrize("name", SMALL)
def test_reparameterized_equals_unfused_and_loads_into_inference_build(name):
    from ffnet import reparameterize_model

    torch.manual_seed(0)
    m = create_model(name, 2).eval()
    x = torch.rand(1, 3, 16, 16)
    ref = m(x)
    fused = reparameterize_model(m, inplace=False)
    torch.testing.assert_close(fused(x), ref, atol=1e-5, rtol=1e-5)
    deploy = create_model(name, 2, inference_mode=True).eval()
    deploy.load_state_dict(fused.state_dict(), strict=True)
    torch.testing.assert_close(deploy(x), ref, atol=1e-5, rtol=1e-5)


def test_channels_last_and_bf16_autocast_agree():
    torch.manual_seed(0)
    m = create_model("ffnetsr_test", 2).eval()
    x = torch.rand(1, 3, 16, 16)
    ref = m(x)
    cl = m.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lo = m(x)
    assert lo.dtype == torch.float32  # the residual stream and the global skip stay fp32
    assert (lo - ref).abs().max() < 0.05


def test_receptive_radius_is_exact():
    """Perturbing one pixel changes outputs exactly within receptive_radius (used for exact tiling)."""
    torch.manual_seed(0)
    m = create_model("ffnetsr_test", 2).eval()
    r = m.receptive_radius()
    x = torch.rand(1, 3, 41, 41)
    x2 = x.clone()
    x2[..., 20, 20] += 1
    d = (m(x2) - m(x)).abs().sum(1)[0]  # (82, 82)
    ys, xs = torch.nonzero(d > 0, as_tuple=True)
    lr_reach = max((ys // 2 - 20).abs().max().item(), (xs // 2 - 20).abs().max().item())
    assert lr_reach == r


def test_errors_and_variant_table():
    with pytest.raises(KeyError, match="unknown"):
        create_model("nope")
    with pytest.raises(ValueError):
        FFNetSR(num_in_ch=1, num_out_ch=3)
    assert set(SMALL) <= set(VARIANTS)


def test_mini_input_scale_keeps_gelus_nonlinear():
    """Why ffnetsr_mini uses img_range=255: with [0, 1] inputs the default init keeps pre-GELU activations
    tiny (GELU ~ linear there, and short CPU training stalled at a linear filter); x255 puts them in GELU's bend."""
    def pre_gelu_std(model):
        stds = []
        hooks = [m.register_forward_hook(lambda mod, i, o: stds.append(i[0].std().item()))
                 for m in model.modules() if isinstance(m, torch.nn.GELU)]
        with torch.no_grad():
            model(torch.rand(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        return sum(stds) / len(stds)

    torch.manual_seed(0)
    assert pre_gelu_std(create_model("ffnetsr_mini", 2)) > 1.0
    assert pre_gelu_std(create_model("ffnetsr_mini", 2, img_range=1.0)) < 0.3
