"""FFNet-TS ONNX export (raw units in and out) and ``predict --runtime onnxruntime``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from ffnet.export import ExportError, OnnxRuntimeModel, check_onnx, read_metadata
from ffnet_ts import cli
from ffnet_ts import data as D
from ffnet_ts.export import RawUnitsForecaster, export_checkpoint
from ffnet_ts.model import create_model
from ffnet_ts.train import CHECKPOINT_FORMAT

RTOL = 1e-4


def _randomize_bn(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _checkpoint(path, prep, name: str, **kw) -> torch.nn.Module:
    """A checkpoint in the format `ffnet-ts forecast` writes, with random (not trained) weights."""
    torch.manual_seed(0)
    margs = {"n_vars": prep.n_vars, "lookback": prep.lookback, "horizon": prep.horizon, **kw}
    model = create_model(name, **margs).eval()
    _randomize_bn(model)
    meta = {"model": {"name": name, "args": margs}, "data": cli._data_meta(prep)}
    torch.save({"format": CHECKPOINT_FORMAT, **meta, "state_dict": model.state_dict(), "epoch": 1, "val_mse": 0.5},
               path)
    return model


def _reference(model, prep, x_raw: np.ndarray) -> np.ndarray:
    """The torch pipeline of `ffnet-ts predict`: standardize -> model (unfused) -> scored columns -> raw."""
    x = torch.from_numpy(((x_raw - prep.mean) / prep.std).astype(np.float32))
    with torch.no_grad():
        y = model(x).numpy()[..., prep.out_idx]
    return y * prep.std[prep.out_idx] + prep.mean[prep.out_idx]


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _raw_windows(prep, n: int, seed: int = 0) -> np.ndarray:
    """n real test windows of the protocol, in raw units: (n, L, M)."""
    raw = prep.data.numpy() * prep.std + prep.mean
    start = prep.borders["test"][0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, prep.windows("test"), n) + start
    return np.stack([raw[i:i + prep.lookback] for i in idx]).astype(np.float32)


@pytest.fixture(scope="module")
def etth1(data_dir):
    return D.load(str(data_dir / "timeseries" / "ETTh1.csv"))


@pytest.fixture(scope="module")
def tiny(etth1, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ts_onnx")
    prep = D.prepare(etth1, 32, 8, "M")
    model = _checkpoint(tmp / "tiny.pt", prep, "ffnet_ts_tiny")
    return export_checkpoint(tmp / "tiny.pt", tmp / "tiny.onnx"), model, prep, tmp


def test_tiny_onnx_equals_torch_on_real_and_random_inputs(tiny):
    path, model, prep, _ = tiny
    ort_model = OnnxRuntimeModel(path, threads=1)
    real = _raw_windows(prep, 5)
    rand = (np.random.default_rng(1).normal(size=(1, prep.lookback, prep.n_vars)) * prep.std * 2 + prep.mean)
    for x in (real, rand.astype(np.float32)):  # batch 5 and 1 (the example had 2)
        out = ort_model.run(x)[0]
        ref = _reference(model, prep, x)
        assert out.shape == ref.shape == (len(x), prep.horizon, prep.n_vars)
        assert _rel(out, ref) < RTOL


def test_etth1_config_onnx_equals_torch(etth1, tmp_path):
    prep = D.prepare(etth1, 96, 96, "M")
    model = _checkpoint(tmp_path / "h96.pt", prep, "ffnet_ts", ffn_ratio=2, dropout=0.7, head_dropout=0.0)
    path = export_checkpoint(tmp_path / "h96.pt", tmp_path / "h96.onnx")
    ort_model = OnnxRuntimeModel(path, threads=1)
    for n in (3, 64):
        x = _raw_windows(prep, n, seed=n)
        assert _rel(ort_model.run(x)[0], _reference(model, prep, x)) < RTOL
    # the wrapper itself (fused model, fast CPU ops) agrees too
    wrapper = RawUnitsForecaster(model, prep.mean, prep.std, prep.out_idx)
    with torch.no_grad():
        assert _rel(wrapper(torch.from_numpy(x)).numpy(), _reference(model, prep, x)) < 1e-5


def test_ms_features_output_the_target_only(etth1, tmp_path):
    prep = D.prepare(etth1, 32, 8, "MS")
    model = _checkpoint(tmp_path / "ms.pt", prep, "ffnet_ts_tiny")
    path = export_checkpoint(tmp_path / "ms.pt", tmp_path / "ms.onnx")
    md = read_metadata(path)
    assert md["output_columns"] == ["OT"] and md["input_columns"][-1] == "OT"
    x = _raw_windows(prep, 4)
    out = OnnxRuntimeModel(path, threads=1).run(x)[0]
    assert out.shape == (4, 8, 1) and _rel(out, _reference(model, prep, x)) < RTOL


def test_checker_and_metadata_round_trip(tiny):
    path, _, prep, _ = tiny
    check_onnx(path)
    md = read_metadata(path)
    assert md["model_name"] == "ffnet_ts_tiny" and md["lookback"] == 32 and md["horizon"] == 8
    assert md["variables"] == 7 and md["input_columns"] == prep.columns and md["dataset"] == prep.series.name
    assert np.allclose(md["scaler_mean"], prep.mean) and np.allclose(md["scaler_std"], prep.std)
    assert "RevIN" in md["normalization"] and md["ffnet_timeseries_version"]


def test_cli_export_and_predict_runtime(tiny, data_dir, tmp_path, capsys, monkeypatch):
    _, _, prep, tmp = tiny
    monkeypatch.setenv("FFNET_CACHE_DIR", str(tmp_path / "cache"))
    csv = data_dir / "timeseries" / "ETTh1.csv"
    a, b, c = tmp_path / "torch.csv", tmp_path / "ort.csv", tmp_path / "onnx.csv"
    base = ["predict", "--checkpoint", str(tmp / "tiny.pt"), "--data", str(csv)]
    assert cli.main([*base, "--out", str(a), "--device", "cpu"]) == 0
    assert cli.main([*base, "--out", str(b), "--runtime", "onnxruntime"]) == 0
    out = tmp_path / "cli.onnx"
    assert cli.main(["export", "--checkpoint", str(tmp / "tiny.pt"), "--onnx", str(out)]) == 0
    assert cli.main(["predict", "--checkpoint", str(out), "--data", str(csv), "--out", str(c)]) == 0
    fa, fb, fc = (pd.read_csv(p) for p in (a, b, c))
    assert list(fa.columns) == list(fb.columns) == list(fc.columns) and (fa["date"] == fb["date"]).all()
    va, vb = fa.drop(columns="date").to_numpy(), fb.drop(columns="date").to_numpy()
    assert _rel(vb, va) < 1e-4 and np.array_equal(vb, fc.drop(columns="date").to_numpy())

    before = out.read_bytes()

    def fails(*args: str, match: str) -> None:
        capsys.readouterr()
        assert cli.main(list(args)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err

    fails("export", "--checkpoint", str(tmp / "tiny.pt"), "--onnx", str(out), match="--force")
    sr = tmp_path / "sr.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(sr), metadata={"network_g": "{}", "scale": "2"})
    fails("export", "--checkpoint", str(sr), "--onnx", str(out), "--force", match="sr.safetensors")
    fails("export", "--checkpoint", str(tmp_path / "none.pt"), "--onnx", str(out), "--force", match="not found")
    assert out.read_bytes() == before
    fails("predict", "--checkpoint", str(sr), "--data", str(csv), "--runtime", "onnxruntime", match="sr.safetensors")


def test_unfusable_model_is_refused(tiny, tmp_path, monkeypatch):
    _, _, _, tmp = tiny
    from ffnet_ts import export as E

    orig = E.fuse_for_export

    def broken(model):  # a re-param unit that cannot fold: its small kernel is larger than the large one
        unit = next(m for m in model.modules() if getattr(m, "small", None) is not None)
        unit.small.conv.weight = torch.nn.Parameter(torch.zeros(*unit.small.conv.weight.shape[:2], 99))
        return orig(model)

    monkeypatch.setattr(E, "fuse_for_export", broken)
    with pytest.raises(ExportError, match="cannot be fused"):
        export_checkpoint(tmp / "tiny.pt", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_linear_base_variant_exports_with_its_base(etth1, tmp_path):
    """ffnet_ts_lb (ours): the frozen closed-form base is a buffer of the graph; ORT == torch."""
    from ffnet_ts.reference import fit_linear

    prep = D.prepare(etth1, 32, 8, "M")
    torch.manual_seed(0)
    margs = {"n_vars": prep.n_vars, "lookback": prep.lookback, "horizon": prep.horizon, "dim": 8,
             "kernel_size": 7, "small_kernel": 3}
    model = create_model("ffnet_ts_lb", **margs).eval()
    model.set_linear_base(fit_linear(prep).weight)
    torch.nn.init.normal_(model.head.weight, std=0.02)  # a non-zero residual, as after training
    _randomize_bn(model)
    meta = {"model": {"name": "ffnet_ts_lb", "args": margs}, "data": cli._data_meta(prep)}
    torch.save({"format": CHECKPOINT_FORMAT, **meta, "state_dict": model.state_dict(), "epoch": 1, "val_mse": 0.5},
               tmp_path / "lb.pt")
    path = export_checkpoint(tmp_path / "lb.pt", tmp_path / "lb.onnx")
    x = _raw_windows(prep, 6)
    assert _rel(OnnxRuntimeModel(path, threads=1).run(x)[0], _reference(model, prep, x)) < RTOL
