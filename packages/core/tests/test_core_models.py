"""FFNet image backbones: fidelity to the published table, timm surface, re-parameterization."""
import copy

import ffnet
import pytest
import timm
import torch
from ffnet.testing import randomize_bn, rel_err
from torch import nn

# Published (official README / spec §1.7): fused params (M) and GMACs at the published resolution.
PUBLISHED = [
    ("ffnet_1", 256, 13.66, 2.98),
    ("ffnet_2", 256, 26.91, 6.00),
    ("ffnet_3", 256, 48.33, 10.15),
    ("ffnet_3", 384, 48.33, 22.83),
    ("ffnet_4", 384, 79.20, 43.12),
]
REAL = ["ffnet_1", "ffnet_2", "ffnet_3", "ffnet_4"]
TINY = ["ffnet_test", "ffnet_test_ls"]


@pytest.mark.parametrize("name,res,params_m,gmacs", PUBLISHED)
def test_fused_params_and_macs_match_published_table(name, res, params_m, gmacs):
    model = ffnet.create_model(name)
    p = ffnet.profile(model, (1, 3, res, res), fused=True)
    assert abs(p["params"] / 1e6 - params_m) / params_m < 0.005, p
    assert abs(p["macs"] / 1e9 - gmacs) / gmacs < 0.005, p
    # The train-time graph is strictly larger (extra BN and small-kernel branches).
    assert ffnet.count_params(model) > p["params"]


def test_registry_and_timm_registration():
    assert ffnet.list_models() == REAL
    assert set(TINY) <= set(ffnet.list_models(include_test=True))
    assert set(REAL) <= set(timm.list_models("ffnet*"))
    m = timm.create_model("ffnet_test", num_classes=7)
    assert isinstance(m, ffnet.models.FFNet) and m.num_classes == 7
    with pytest.raises(ValueError, match="unknown model"):
        ffnet.create_model("ffnet_9")


@pytest.mark.parametrize("name", TINY)
def test_forward_shapes_grads_and_no_nans(name, device):
    torch.manual_seed(0)
    model = ffnet.create_model(name, num_classes=5, drop_path_rate=0.1).to(device).train()
    x = torch.randn(2, 3, 64, 64, device=device)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize("name", TINY + REAL)
def test_fused_equals_unfused_and_loads_into_inference_build(name):
    torch.manual_seed(0)
    model = randomize_bn(ffnet.create_model(name)).eval()
    # Make layer scale visible (1e-6 init would hide a broken branch).
    for n, p in model.named_parameters():
        if n.endswith("gamma"):
            p.data.fill_(0.5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fused = ffnet.reparameterize_model(copy.deepcopy(model))
        assert rel_err(fused(x), ref) < 1e-5
        deploy = ffnet.create_model(name, inference_mode=True).eval()
        deploy.load_state_dict(fused.state_dict(), strict=True)
        assert rel_err(deploy(x), ref) < 1e-5
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert n_bn == 1  # only the head BN stays (it commutes with pooling; left unfused like the release)


def test_features_only_feature_info(device):
    model = ffnet.create_model("ffnet_test", features_only=True).to(device).eval()
    feats = model(torch.randn(1, 3, 64, 64, device=device))
    assert [f.shape[1] for f in feats] == [16, 32, 64, 128]
    assert [64 // f.shape[-1] for f in feats] == [4, 8, 16, 32]
    assert model.feature_info.channels() == [16, 32, 64, 128]
    assert model.feature_info.reduction() == [4, 8, 16, 32]


def test_reset_classifier_and_channels_last(device):
    model = ffnet.create_model("ffnet_test").to(device).eval()
    model.reset_classifier(3)
    x = torch.randn(1, 3, 64, 64, device=device)
    y1 = model(x)
    y2 = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert y1.shape == (1, 3)
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)


def test_grad_checkpointing_matches(device):
    torch.manual_seed(0)
    model = ffnet.create_model("ffnet_test").to(device).eval()
    x = torch.randn(1, 3, 64, 64, device=device)
    ref = model(x)
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model(x), ref)


def test_pretrained_without_weights_is_a_clear_error():
    # No model hub here: pretrained weights come from a local file via pretrained_cfg_overlay.
    model = ffnet.create_model("ffnet_test")
    import os
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        loaded = ffnet.create_model("ffnet_test", pretrained=True, pretrained_cfg_overlay=dict(file=path))
        for k, v in model.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k])
