"""Detector variants: shapes, gradients, re-parameterization, sparse implementations, targets <-> decode."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ffnet_3d.centerpoint import build_targets, centerpoint_loss, decode
from ffnet_3d.config import config_from_dict, get_preset
from ffnet_3d.data import KittiDetectionDataset, collate
from ffnet_3d.iou import bev_iou_numba
from ffnet_3d.model import SparseFFNetEncoder, build_detector

VARIANTS = {
    "ffnet3d_dw": {},
    "ffnet3d_dense3": {"model": {"mixer": "dense3"}},
    "second": {"model": {"name": "second", "neck_depths": [1, 1]}},
}


def tiny(variant: str):
    return config_from_dict(VARIANTS[variant], get_preset("tiny"))


@pytest.fixture(scope="module")
def batch(synth_root):
    cfg = get_preset("tiny")
    model = build_detector(cfg)
    ds = KittiDetectionDataset(synth_root, cfg, model.out_size, model.feature_map_stride, training=True)
    return collate([ds[0], ds[1]])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_backward(variant, batch, dev):
    torch.manual_seed(0)
    model = build_detector(tiny(variant)).to(dev).train()
    out = model(batch["voxels"].to(dev), batch["coords"].to(dev), batch["batch_size"])
    h, w = model.out_size
    assert out["hm"].shape == (2, 3, h, w)
    assert {k: v.shape[1] for k, v in out.items()} == {"hm": 3, "reg": 2, "height": 1, "dim": 3, "rot": 2, "dir": 1}
    assert all(torch.isfinite(v).all() for v in out.values())
    loss, parts = centerpoint_loss(out, {k: v.to(dev) for k, v in batch["targets"].items()})
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad[:5]
    assert parts["hm"] > 0 and parts["loc"] > 0


def test_dw_encoder_is_depthwise_large_kernel():
    cfg = tiny("ffnet3d_dw")
    model = build_detector(cfg)
    dw = [m for m in model.encoder.modules() if getattr(m, "groups", 1) > 1 and m.groups == m.in_channels]
    kernels = {m.kernel_size for m in dw}
    assert (5, 5, 5) in kernels and (3, 3, 3) in kernels  # tiny: stage kernels 3, 3, 3, 5 (+3^3 branch)


def test_reparameterized_model_matches_in_eval(batch):
    from ffnet import reparameterize_model

    torch.manual_seed(0)
    model = build_detector(tiny("ffnet3d_dw"))
    model.train()
    for _ in range(2):  # move BN statistics away from their init so the folding is non-trivial
        model(batch["voxels"], batch["coords"], 2)
    model.eval()
    with torch.no_grad():
        ref = model(batch["voxels"], batch["coords"], 2)
        reparameterize_model(model)
        fused = model(batch["voxels"], batch["coords"], 2)
    for k in ref:
        torch.testing.assert_close(fused[k], ref[k], atol=2e-4, rtol=1e-4)


@pytest.mark.slow
def test_torch_and_spconv_encoders_agree(batch):
    pytest.importorskip("spconv")
    from ffnet.sparse import SparseTensor

    torch.manual_seed(0)
    cfg = tiny("ffnet3d_dw")
    det = build_detector(cfg)
    m = cfg.model
    args = (m.in_chs, det.sparse_shape, m.stem_chs, m.dims, m.depths, m.kernel_sizes, m.cm_kernel_size,
            m.mlp_ratio, m.mixer, 0.0, m.bev_chs)
    enc_t = SparseFFNetEncoder(*args, impl="torch").eval()
    enc_s = SparseFFNetEncoder(*args, impl="spconv").eval()
    enc_s.load_state_dict(enc_t.state_dict())
    x = SparseTensor((batch["voxels"] - det.feat_center) / det.feat_scale, batch["coords"], det.sparse_shape, 2)
    with torch.no_grad():
        torch.testing.assert_close(enc_s(x), enc_t(x), atol=1e-4, rtol=1e-4)


def test_targets_decode_roundtrip():
    pr = (0.0, -12.8, -3.0, 25.6, 12.8, 1.0)
    vs = (0.2, 0.2, 0.2)
    stride, hw = 4, (32, 32)
    boxes = np.array([[5.3, 2.1, -0.9, 3.9, 1.6, 1.5, 0.3], [12.7, -6.2, -0.8, 0.8, 0.6, 1.7, -2.0],
                      [20.1, 8.8, -0.85, 1.8, 0.6, 1.7, 2.9]])
    labels = np.array([0, 1, 2])
    t = build_targets(boxes, labels, 3, hw, pr, vs, stride)
    assert t["mask"].sum() == 3
    assert np.isclose(t["hm"].max(axis=(1, 2)), 1.0).all()
    # a perfect head: heatmap logits from the targets, regression maps holding the targets at the peaks
    hm = torch.from_numpy(t["hm"])[None]
    out = {"hm": torch.logit(hm.clamp(1e-4, 1 - 1e-4))}
    reg = torch.zeros(1, 9, *hw)
    for k in range(3):
        iy, ix = divmod(int(t["ind"][k]), hw[1])
        reg[0, :, iy, ix] = torch.from_numpy(t["target"][k])
    out.update(reg=reg[:, 0:2], height=reg[:, 2:3], dim=reg[:, 3:6], rot=reg[:, 6:8], dir=10 * (reg[:, 8:9] - 0.5))
    det = decode(out, pr, vs, stride, score_thresh=0.5)[0]
    assert len(det["boxes"]) == 3
    order = np.argsort(det["labels"].numpy())
    got = det["boxes"].double().numpy()[order]
    np.testing.assert_allclose(got[:, :6], boxes[:, :6], atol=1e-4)
    np.testing.assert_allclose(np.cos(got[:, 6] - boxes[:, 6]), 1.0, atol=1e-6)  # direction recovered too
    assert np.diag(bev_iou_numba(got, boxes)).min() > 0.999


def test_presets_build():
    for name in ("kitti", "synth_cpu", "second_kitti", "second_synth_cpu"):
        model = build_detector(get_preset(name))
        assert model.out_size[0] > 0
    assert build_detector(get_preset("kitti")).out_size == (200, 176)  # 0.4 m cells on the KITTI grid
