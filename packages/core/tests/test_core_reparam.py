"""Structural re-parameterization: fused equals unfused in eval, for every unit, 1D and 2D."""
import copy

import pytest
import torch
from ffnet import reparameterize_model
from ffnet.layers import ChannelMixer, ConvNorm, FFNetBlock, FFNifiedAttention, RepDWConv, ResidualBNPointwise
from ffnet.testing import randomize_bn, rel_err
from torch import nn

BACKENDS = {"1d": (2, 8, 37), "2d": (2, 8, 13, 11)}  # input shapes (B, C, *spatial)

UNITS = {  # name -> factory(backend, inference_mode)
    "convnorm_3x3": lambda be, im: ConvNorm(8, 16, 3, backend=be, inference_mode=im),
    "convnorm_strided_grouped": lambda be, im: ConvNorm(8, 16, 3, stride=2, groups=4, backend=be, inference_mode=im),
    "repdw_7_3": lambda be, im: RepDWConv(8, 8, 7, 3, backend=be, inference_mode=im),
    "repdw_7_3_stride2_multiplier2": lambda be, im: RepDWConv(8, 16, 7, 3, stride=2, backend=be, inference_mode=im),
    "repdw_51_5": lambda be, im: RepDWConv(8, 8, 51, 5, backend=be, inference_mode=im),
    "repdw_nonorm_pair": lambda be, im: RepDWConv(8, 8, 7, 3, norm=False, backend=be, inference_mode=im),
    "dwbn_single": lambda be, im: RepDWConv(8, 8, 3, None, backend=be, inference_mode=im),
    "plain_dw": lambda be, im: RepDWConv(8, 8, 5, None, norm=False, backend=be, inference_mode=im),
    "residual_bn_pointwise": lambda be, im: ResidualBNPointwise(8, backend=be, inference_mode=im),
    "ffnified_attention": lambda be, im: FFNifiedAttention(8, 7, 3, backend=be, inference_mode=im),
    "channel_mixer": lambda be, im: ChannelMixer(8, 3.0, 7, 3, backend=be, inference_mode=im),
    "ffnet_block_ls": lambda be, im: FFNetBlock(8, 7, 3, 5, None, 2.0, ls_init_value=0.5, backend=be,
                                                inference_mode=im),
}


def _input(name, be, device, dtype=torch.float32):
    shape = list(BACKENDS[be])
    if name == "repdw_51_5":
        shape[2:] = [max(s, 60) for s in shape[2:]]
    return torch.randn(shape, device=device, dtype=dtype)


@pytest.mark.parametrize("be", list(BACKENDS))
@pytest.mark.parametrize("name", list(UNITS))
def test_fused_equals_unfused(name, be, device):
    torch.manual_seed(0)
    unit = randomize_bn(UNITS[name](be, False)).to(device).eval()
    x = _input(name, be, device)
    ref = unit(x)
    fused = reparameterize_model(copy.deepcopy(unit))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    out = fused(x)
    assert rel_err(out, ref) < 1e-5
    # Idempotent: a second pass changes nothing.
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    reparameterize_model(fused)
    after = fused.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("be", list(BACKENDS))
@pytest.mark.parametrize("name", list(UNITS))
def test_fused_state_dict_loads_into_inference_mode_build(name, be, device):
    torch.manual_seed(0)
    unit = randomize_bn(UNITS[name](be, False)).eval()
    fused = reparameterize_model(copy.deepcopy(unit))
    deploy = UNITS[name](be, True)
    deploy.load_state_dict(fused.state_dict(), strict=True)
    x = _input(name, be, "cpu")
    torch.testing.assert_close(deploy.eval()(x), fused(x))


def test_reparameterize_keeps_device_and_dtype(device):
    unit = randomize_bn(RepDWConv(4, 4, 7, 3)).to(device=device, dtype=torch.float64).eval()
    x = torch.randn(1, 4, 9, 9, device=device, dtype=torch.float64)
    ref = unit(x)
    unit.reparameterize()
    w = unit.reparam_conv.weight
    assert w.dtype == torch.float64 and w.device.type == torch.device(device).type
    torch.testing.assert_close(unit(x), ref, rtol=1e-12, atol=1e-12)


def test_fusion_is_exact_in_float64():
    # In float64 the only difference left is rounding: this pins the algebra, not just float32 tolerance.
    torch.manual_seed(0)
    unit = randomize_bn(FFNetBlock(8, 7, 3, 7, 3, 3.0, ls_init_value=0.3)).double().eval()
    x = torch.randn(2, 8, 15, 15, dtype=torch.float64)
    ref = unit(x)
    torch.testing.assert_close(reparameterize_model(unit)(x), ref, rtol=1e-12, atol=1e-12)


def test_small_kernel_must_be_smaller():
    with pytest.raises(ValueError, match="small_kernel"):
        RepDWConv(4, 4, 3, 5)
    with pytest.raises(ValueError, match="multiple"):
        RepDWConv(4, 6, 3)
