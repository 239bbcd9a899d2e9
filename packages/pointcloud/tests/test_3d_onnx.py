"""ONNX export of FFNet-3D's dense part (BEV neck + CenterPoint head): ORT == fused PyTorch, metadata, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ffnet.export import ExportError, OnnxRuntimeModel, check_onnx, fuse_for_export, read_metadata
from ffnet_3d.centerpoint import decode
from ffnet_3d.checkpoint import load_model
from ffnet_3d.export import DenseHead, export_dense_head, head_output_names, main

RTOL = 1e-4


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, cfg, _ = load_model(None)  # the shipped checkpoint
    path = export_dense_head(model, tmp_path_factory.mktemp("head") / "head.onnx")
    return path, model, cfg, fuse_for_export(DenseHead(model))


def _compare(path, ref, x: torch.Tensor) -> list[np.ndarray]:
    outs = OnnxRuntimeModel(path, threads=1).run(x.numpy())
    with torch.no_grad():
        want = ref(x)
    assert len(outs) == len(want) == len(head_output_names())
    for o, w in zip(outs, want):
        assert o.shape == tuple(w.shape) and _rel(o, w.numpy()) < RTOL
    return outs


def test_dense_head_equals_fused_torch_two_sizes(exported):
    path, model, _, ref = exported
    c = model.encoder.out_chs
    _, h, w = model.encoder.out_shape
    g = torch.Generator().manual_seed(0)
    _compare(path, ref, torch.randn(1, c, h, w, generator=g))
    _compare(path, ref, torch.randn(3, c, h - 8, w + 5, generator=g))  # dynamic batch and grid


def test_dense_head_on_a_real_kitti_bev(exported, kitti_root):
    from ffnet.sparse import SparseTensor
    from ffnet_3d.data import prepare_points
    from ffnet_3d.voxelize import voxelize_numba

    path, model, cfg, ref = exported
    d = cfg.data
    pts = np.fromfile(kitti_root / "velodyne" / "000003.bin", dtype=np.float32).reshape(-1, 4)
    pts = prepare_points(pts, cfg, None, (375, 1242))
    vox, coords, num, _ = voxelize_numba(pts, d.voxel_size, d.point_cloud_range, d.max_points_per_voxel,
                                         d.max_voxels_test)
    feats = torch.from_numpy(vox.sum(1) / np.maximum(num, 1)[:, None].astype(np.float32))
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), torch.from_numpy(coords)], 1)
    with torch.no_grad():  # the sparse encoder runs in PyTorch; its BEV map is the graph's input
        x = SparseTensor((feats - model.feat_center) / model.feat_scale, coords, model.sparse_shape, 1)
        bev = model.encoder(x)
    outs = _compare(path, ref, bev)
    # the decoded boxes (what a user sees) are the same from either runtime
    with torch.no_grad():
        want = decode(model.forward_head(model.neck(bev)), d.point_cloud_range, d.voxel_size,
                      model.feature_map_stride)[0]
    got = decode({k: torch.from_numpy(v) for k, v in zip(head_output_names(), outs)}, d.point_cloud_range,
                 d.voxel_size, model.feature_map_stride)[0]
    assert len(got["boxes"]) == len(want["boxes"])
    assert torch.allclose(got["boxes"], want["boxes"], atol=1e-3) and torch.equal(got["labels"], want["labels"])


def test_checker_and_metadata(exported):
    path, model, cfg, _ = exported
    check_onnx(path)
    md = read_metadata(path)
    assert md["model_name"] == cfg.model.name and md["classes"] == list(cfg.data.classes)
    assert md["bev_channels"] == model.encoder.out_chs and md["feature_map_stride"] == model.feature_map_stride
    assert md["voxel_size"] == pytest.approx(list(cfg.data.voxel_size)) and "sparse voxel encoder" in md["not_included"]


def test_the_sparse_detector_is_refused_and_cli_errors(exported, tmp_path, capsys):
    path, model, _, _ = exported
    with pytest.raises(ExportError, match="sparse layers"):
        fuse_for_export(model)
    out = tmp_path / "h.onnx"
    out.write_bytes(b"keep")
    assert main(["-o", str(out)]) == 2
    assert main([str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--force" in err[0] and "missing.pt" in err[1]
    assert out.read_bytes() == b"keep" and not (tmp_path / "x.onnx").exists()
