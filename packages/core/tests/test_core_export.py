"""ONNX export of core backbones (``ffnet export``): ORT == fused PyTorch, dynamic axes, metadata, bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ffnet
import numpy as np
import pytest
import torch
from ffnet.export import (
    ExportError,
    OnnxRuntimeModel,
    check_onnx,
    export_backbone,
    fuse_for_export,
    read_metadata,
)

RTOL = 1e-4


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so that fusing actually changes the weights."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ffnet_test with trained-looking (train-time, unfused) weights -> weights file -> ffnet export."""
    tmp = tmp_path_factory.mktemp("core_onnx")
    torch.manual_seed(0)
    model = ffnet.create_model("ffnet_test", num_classes=10).eval()
    _randomize_bn(model)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "w.safetensors"))
    path = export_backbone("ffnet_test", tmp / "ffnet_test.onnx", weights=tmp / "w.safetensors", img_size=64,
                           num_classes=10)
    fused = ffnet.reparameterize_model(model, inplace=False).eval()
    return path, model, fused


def test_onnx_equals_fused_torch_at_two_sizes(exported):
    path, _, fused = exported
    ort_model = OnnxRuntimeModel(path, threads=1)
    for shape in [(2, 3, 64, 64), (3, 3, 96, 128)]:  # batch and H/W differ from the export example
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = fused(x).numpy()
        out = ort_model(x).numpy()
        assert out.shape == ref.shape == (shape[0], 10)
        assert _rel(out, ref) < RTOL


def test_onnx_equals_fused_torch_on_a_real_image(exported, data_dir):
    from PIL import Image

    path, unfused, fused = exported
    img = Image.open(data_dir / "superres" / "Set5" / "HR" / "butterfly.png").convert("RGB").resize((128, 96))
    meta = read_metadata(path)
    x = (np.asarray(img, np.float32) / 255 - np.array(meta["mean"], np.float32)) / np.array(meta["std"], np.float32)
    x = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        ref, ref_unfused = fused(x).numpy(), unfused(x).numpy()
    out = OnnxRuntimeModel(path, threads=1)(x).numpy()
    assert _rel(out, ref) < RTOL
    assert _rel(out, ref_unfused) < 1e-3  # and the fused graph is the trained one


def test_checker_and_metadata_round_trip(exported):
    path, _, _ = exported
    check_onnx(path)
    meta = read_metadata(path)
    assert meta["model_name"] == "ffnet_test" and meta["task"] == "classification" and meta["num_classes"] == 10
    assert meta["img_size"] == 64 and meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["ffnet_core_version"] == ffnet.__version__ and meta["dynamic_hw"] is True
    import onnx

    m = onnx.load(str(path))
    assert m.opset_import[0].version >= 17 and m.producer_name == "ffnet"
    assert not list(Path(path).parent.glob("*.data"))  # one self-contained file
    # the fused graph: no BatchNormalization left in the body (only the final BN before pooling remains,
    # which the exporter folds into Mul/Add or keeps as one node)
    assert sum(n.op_type == "BatchNormalization" for n in m.graph.node) <= 1


def test_features_only_export(tmp_path):
    path = export_backbone("ffnet_test", tmp_path / "feat.onnx", img_size=64, features_only=True)
    torch.manual_seed(0)
    model = fuse_for_export(ffnet.create_model("ffnet_test", features_only=True))
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        refs = model(x)
    outs = OnnxRuntimeModel(path, threads=1).run(x.numpy())
    assert len(outs) == len(refs) == 4
    for o, r in zip(outs, refs):
        assert o.shape == tuple(r.shape) and _rel(o, r.numpy()) < RTOL
    assert read_metadata(path)["feature_reductions"] == [4, 8, 16, 32]


def test_cli_bad_inputs_exit_2_and_overwrite_nothing(tmp_path, exported, capsys):
    from types import SimpleNamespace

    from ffnet.cli import main

    def _cli(*args: str) -> SimpleNamespace:  # in-process: a subprocess would re-import torch for every case
        capsys.readouterr()
        rc = main(["export", *args])
        return SimpleNamespace(returncode=rc, stderr=capsys.readouterr().err)

    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    r = _cli("resnet50", "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unknown model" in r.stderr
    r = _cli("ffnet_test", "-o", str(out), "--img-size", "64")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--force" in r.stderr
    assert out.read_bytes() == b"keep me"
    # a checkpoint of another package (ffnet-sr's weights format) is refused by name
    from safetensors.torch import save_file

    save_file({"conv_first.weight": torch.zeros(1)}, str(tmp_path / "sr.safetensors"),
              metadata={"network_g": "{}", "scale": "2"})
    r = _cli("ffnet_test", "-o", str(out), "--img-size", "64", "--weights", str(tmp_path / "sr.safetensors"),
             "--force")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "ffnet-sr" in r.stderr
    assert out.read_bytes() == b"keep me"
    r = _cli("ffnet_test", "-o", str(out), "--img-size", "50", "--force")
    assert r.returncode == 2 and "multiple of 32" in r.stderr
    assert out.read_bytes() == b"keep me"


def test_weights_of_another_model_are_refused(tmp_path):
    torch.save(ffnet.create_model("ffnet_test_ls").state_dict(), tmp_path / "ls.pth")
    with pytest.raises(ExportError, match="does not match ffnet_test"):
        export_backbone("ffnet_test", tmp_path / "x.onnx", weights=tmp_path / "ls.pth", img_size=64)
    assert not (tmp_path / "x.onnx").exists()


def test_models_that_cannot_be_fused_are_refused():
    from ffnet.layers import RepDWConv

    class Broken(torch.nn.Module):  # a re-param unit whose folding fails
        def __init__(self):
            super().__init__()
            self.conv = RepDWConv(4, 4, 5, 3)
            self.conv.small.conv.weight = torch.nn.Parameter(torch.zeros(4, 1, 7, 7))  # cannot pad 7 to 5

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ExportError, match="cannot be fused"):
        fuse_for_export(Broken())
    from ffnet.sparse import SubMConv3d

    with pytest.raises(ExportError, match="sparse layers"):
        fuse_for_export(torch.nn.Sequential(SubMConv3d(4, 4, 3)))


def test_import_ffnet_does_not_import_onnx():
    code = ("import sys, ffnet, ffnet.cli; ffnet.create_model('ffnet_test');"
            "print([m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_fused_deploy_weights_export_too(tmp_path, exported):
    """A state dict saved from the fused model (``reparam_conv`` keys) loads into an inference_mode build."""
    _, _, fused = exported
    torch.save(fused.state_dict(), tmp_path / "fused.pth")
    path = export_backbone("ffnet_test", tmp_path / "fused.onnx", weights=tmp_path / "fused.pth", img_size=64,
                           num_classes=10)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = fused(x).numpy()
    assert _rel(OnnxRuntimeModel(path, threads=1)(x).numpy(), ref) < RTOL
