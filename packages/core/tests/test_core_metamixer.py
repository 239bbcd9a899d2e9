"""MetaMixer instances equal their textbook definitions on the same weights."""
import pytest
import torch
import torch.nn.functional as F
from ffnet.layers import (
    ChannelMixer,
    FFNifiedAttention,
    MetaMixer,
    convnext_mixer,
    ffn_mixer,
    self_attention_mixer,
)
from torch import nn


@pytest.mark.parametrize("num_heads", [1, 4])
def test_self_attention_instance_equals_sdpa(num_heads, device):
    torch.manual_seed(0)
    B, N, C = 2, 11, 32
    mixer = self_attention_mixer(C, num_heads).to(device).eval()
    x = torch.randn(B, N, C, device=device)
    split = lambda t: t.view(B, N, num_heads, C // num_heads).transpose(1, 2)  # (B, H, N, d)
    q = split(F.linear(x, mixer.query_proj.proj.weight, mixer.query_proj.proj.bias))
    k = split(F.linear(x, mixer.key_interaction.key_proj.proj.weight, mixer.key_interaction.key_proj.proj.bias))
    v = split(F.linear(x, mixer.value_interaction.value_proj.proj.weight, mixer.value_interaction.value_proj.proj.bias))
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
    ref = mixer.value_interaction.out_proj(ref)
    torch.testing.assert_close(mixer(x), ref, rtol=1e-5, atol=1e-5)
    assert not mixer.static_key and not mixer.static_value


def test_ffn_instance_equals_linear_gelu_linear(device):
    torch.manual_seed(0)
    mixer = ffn_mixer(24, 96).to(device)
    ref = nn.Sequential(nn.Linear(24, 96), nn.GELU(), nn.Linear(96, 24)).to(device)
    ref[0].load_state_dict(mixer.key_interaction.state_dict())
    ref[2].load_state_dict(mixer.value_interaction.state_dict())
    x = torch.randn(3, 7, 24, device=device)
    torch.testing.assert_close(mixer(x), ref(x))
    assert mixer.static_key and mixer.static_value


def test_convnext_instance_equals_timm_convnext_block(device):
    from timm.models.convnext import ConvNeXtBlock

    torch.manual_seed(0)
    C = 16
    block = ConvNeXtBlock(C, ls_init_value=None).to(device).eval()
    mixer = convnext_mixer(C).to(device).eval()
    mixer.query_proj[0].load_state_dict(block.conv_dw.state_dict())
    mixer.query_proj[2].load_state_dict(block.norm.state_dict())
    mixer.key_interaction.load_state_dict(block.mlp.fc1.state_dict())
    mixer.value_interaction[0].load_state_dict(block.mlp.fc2.state_dict())
    x = torch.randn(2, C, 9, 9, device=device)
    torch.testing.assert_close(x + mixer(x), block(x), rtol=1e-5, atol=1e-5)


def test_ffnified_attention_is_a_metamixer_with_the_published_slots(device):
    torch.manual_seed(0)
    C = 8
    m = FFNifiedAttention(C, kernel_size=5, small_kernel=None, query_norm=False, dw_norm=False).to(device).eval()
    assert isinstance(m, MetaMixer) and m.static_key and m.static_value
    x = torch.randn(2, C, 12, 10, device=device)
    q, k, v = m.query_proj.conv, m.key_interaction.large.conv, m.value_interaction.large.conv
    ref = F.conv2d(x, q.weight, q.bias)
    ref = F.gelu(F.conv2d(ref, k.weight, k.bias, padding=2, groups=C))
    ref = F.conv2d(ref, v.weight, v.bias, padding=2, groups=C)
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_channel_mixer_mixes_channels_not_space(device):
    torch.manual_seed(0)
    m = ChannelMixer(8, mlp_ratio=2, kernel_size=3, small_kernel=None, dw_norm=False).to(device).eval()
    x = torch.randn(1, 8, 6, 6, device=device)
    q, k, v = m.query_proj.large.conv, m.key_interaction, m.value_interaction
    ref = F.conv2d(F.gelu(F.conv2d(F.conv2d(x, q.weight, q.bias, padding=1, groups=8), k.weight, k.bias)),
                   v.weight, v.bias)
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
