"""FFNet-TS (and the other registered forecasters) -> ONNX, and ONNX Runtime for ``ffnet-ts predict``.

The exported graph works in the user's units: the dataset scaler (train-split mean / std of the
protocol) and RevIN are folded into it, so

* input ``history``: (batch, lookback, variables) float32 raw values, variables in the order of the
  ``input_columns`` metadata (the checkpoint's columns);
* output ``forecast``: (batch, horizon, outputs) float32 raw values of the ``output_columns`` (all
  variables for ``--features M``, the target for ``S`` / ``MS``).

A model trained with a cycle removed (``--cycle``) takes a second input ``phase``: (batch,) int64, the cycle
phase of each window's first history row (metadata ``cycle``: period, origin and step; phase =
((t - origin_ns) // step_ns) mod period). The graph subtracts the cycle from the history and adds it to the
forecast, so input and output stay raw values. With a window amplitude (``cycle.shrink`` set) the graph
also scales the cycle per window by the history's own amplitude (``data.cycle_gain``).

Batch is dynamic; lookback and variables are fixed by the model (its head and its per-variable convs).
The ONNX / ORT specifics live in :mod:`ffnet.export`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import torch
from ffnet.export import DEFAULT_OPSET, ExportError, OnnxRuntimeModel, export_onnx, fuse_for_export
from torch import nn

from .data import cycle_gain

__all__ = ["RawUnitsForecaster", "export_checkpoint", "onnx_predictor", "build_from_checkpoint", "export_cli"]


class RawUnitsForecaster(nn.Module):
    """Standardize with the dataset scaler -> forecaster (RevIN inside) -> scored columns -> raw units."""

    def __init__(self, model: nn.Module, mean, std, out_idx: list[int], cycle=None, lookback: int = 0,
                 horizon: int = 0, shrink: float | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.asarray(std), dtype=torch.float32))
        self.register_buffer("out_idx", torch.as_tensor(out_idx, dtype=torch.long))
        self.identity_out = list(out_idx) == list(range(len(mean)))
        self.has_cycle = cycle is not None
        self.shrink = shrink  # window amplitude (data.cycle_gain); None: the cycle is added as it is
        if self.has_cycle:  # (period, M) table in the standardized space; offsets of the history / forecast rows
            self.register_buffer("cycle", torch.as_tensor(np.asarray(cycle), dtype=torch.float32))
            self.register_buffer("offs_in", torch.arange(lookback))
            self.register_buffer("offs_out", torch.arange(lookback, lookback + horizon))

    def forward(self, history: torch.Tensor, phase: torch.Tensor | None = None) -> torch.Tensor:
        z = (history - self.mean) / self.std  # (B, L, M) in the units the model was trained on
        if not self.has_cycle:
            y = self.model(z)  # (B, H, M)
        else:
            period = self.cycle.shape[0]
            cx = self.cycle[torch.remainder(phase[:, None] + self.offs_in, period)]
            cy = self.cycle[torch.remainder(phase[:, None] + self.offs_out, period)]
            z = z - cx
            if self.shrink is None:
                y = self.model(z)
            else:
                g = cycle_gain(z, cx, self.shrink)
                y = self.model(z - g * cx) + g * cy
            y = y + cy
        if self.identity_out:
            return y * self.std + self.mean
        return y.index_select(-1, self.out_idx) * self.std[self.out_idx] + self.mean[self.out_idx]  # (B, H, K)


def _version() -> str:
    try:
        return importlib_metadata.version("ffnet-timeseries")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _load(path: str | os.PathLike) -> dict:
    from .train import ConfigError, load_checkpoint

    try:
        return load_checkpoint(path)
    except ConfigError as e:
        raise ExportError(str(e)) from None


def build_from_checkpoint(ckpt: dict) -> tuple[RawUnitsForecaster, dict]:
    """(raw-units wrapper around the *fused* model, ONNX metadata) from a loaded forecast checkpoint."""
    from .model import create_model

    data, mdl = ckpt["data"], ckpt["model"]
    model = create_model(mdl["name"], **mdl["args"])
    model.load_state_dict(ckpt["state_dict"])
    fused = fuse_for_export(model)
    cols = list(data["columns"])
    scored = list(data.get("scored_columns", cols))
    out_idx = [cols.index(c) for c in scored]
    cycle = data.get("cycle")
    wrapper = RawUnitsForecaster(fused, data["mean"], data["std"], out_idx,
                                 cycle=None if cycle is None else cycle["table"], lookback=int(data["lookback"]),
                                 horizon=int(data["horizon"]),
                                 shrink=None if cycle is None else cycle.get("shrink")).eval()
    meta = {
        "model_name": mdl["name"], "model_args": mdl["args"], "task": "forecasting",
        "lookback": int(data["lookback"]), "horizon": int(data["horizon"]), "variables": len(cols),
        "input_columns": cols, "output_columns": scored, "target": data.get("target"),
        "features": data.get("features"), "dataset": data.get("name"), "split": data.get("split"),
        "freq": data.get("freq"), "irregular_ok": bool(data.get("irregular_ok", False)),
        "normalization": "folded into the graph: train-split standard scaler, then RevIN; input and output "
                         "are raw values",
        "scaler_mean": [float(v) for v in data["mean"]], "scaler_std": [float(v) for v in data["std"]],
        "input_layout": "history (batch, lookback, variables) float32, raw values, columns = input_columns",
        "output_layout": "forecast (batch, horizon, len(output_columns)) float32, raw values",
        "val_mse": ckpt.get("val_mse"), "epoch": ckpt.get("epoch"), "ffnet_timeseries_version": _version(),
        "cycle": cycle,
    }
    if cycle is not None:
        meta["normalization"] += "; the cycle (input phase) is subtracted after scaling and added to the forecast"
        if cycle.get("shrink") is not None:
            meta["normalization"] += ", scaled per window by the history's own amplitude (window amplitude)"
        meta["input_layout"] += "; phase (batch,) int64 = cycle phase of the first history row"
    return wrapper, meta


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                      force: bool = False) -> Path:
    """``ffnet-ts export --onnx``: a forecast checkpoint -> fused raw-units ONNX graph with metadata."""
    from .fastconv import stock_ops

    output = Path(output)
    if output.exists() and not force:
        raise ExportError(f"{output} exists; pass --force to overwrite")
    wrapper, meta = build_from_checkpoint(_load(checkpoint))
    meta["source"] = Path(checkpoint).name
    meta["exporter"] = f"torch {torch.__version__} dynamo, opset {opset}"
    x = torch.randn(2, meta["lookback"], meta["variables"]) * torch.tensor(meta["scaler_std"]) + torch.tensor(
        meta["scaler_mean"])
    # NOTE: the CPU fast paths (Toeplitz bmm, channel-major storage) are a training-speed device for
    # eager PyTorch; the deploy graph uses the stock convs, which ORT runs natively.
    inputs, names, dyn = (x.float(),), ["history"], {"history": {0: "batch"}}
    if meta["cycle"] is not None:
        inputs, names = (x.float(), torch.tensor([3, 17])), ["history", "phase"]
        dyn["phase"] = {0: "batch"}
    with stock_ops():
        return export_onnx(wrapper, inputs, output, input_names=names, output_names=["forecast"],
                           dynamic_axes=dyn, metadata=meta, opset=opset, force=force,
                           fuse=False, doc=f"{meta['model_name']} L={meta['lookback']} H={meta['horizon']}, raw "
                                           f"units in and out, exported by ffnet-ts")


def cache_dir() -> Path:
    root = os.environ.get("FFNET_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ffnet"
    return Path(root) / "onnx"


def onnx_predictor(checkpoint: str | os.PathLike, threads: int | None = None):
    """(checkpoint-like dict with ``data`` metadata, ``run(history (L, M) raw) -> (H, M) raw``) on ORT.

    ``checkpoint`` may be an ``.onnx`` export (used as it is) or a forecast checkpoint (exported once into
    the cache, keyed by its content). Columns that the model does not forecast come back as NaN.
    """
    path = Path(checkpoint)
    if path.suffix != ".onnx":
        if not path.is_file():
            raise ExportError(f"checkpoint not found: {path}")
        _load(path)  # refuse foreign files before spending an export on them
        import onnxruntime

        h = hashlib.sha256(path.read_bytes())
        h.update(json.dumps([torch.__version__, onnxruntime.__version__, _version()]).encode())
        cached = cache_dir() / f"ffnet_ts_{h.hexdigest()[:16]}.onnx"
        if not cached.is_file():
            export_checkpoint(path, cached)
        path = cached
    ort_model = OnnxRuntimeModel(path, threads=threads)
    md = ort_model.metadata
    if md.get("task") != "forecasting":
        raise ExportError(f"{checkpoint} is not an ffnet-ts ONNX export (no forecasting metadata)")
    data = {"columns": md["input_columns"], "scored_columns": md["output_columns"], "target": md["target"],
            "lookback": md["lookback"], "horizon": md["horizon"], "irregular_ok": md.get("irregular_ok", False),
            "mean": md["scaler_mean"], "std": md["scaler_std"], "cycle": md.get("cycle")}
    pos = [md["input_columns"].index(c) for c in md["output_columns"]]

    def run(history: np.ndarray, phase: int | None = None) -> np.ndarray:
        feed = {"history": np.asarray(history, np.float32)[None]}
        if data["cycle"] is not None:
            feed["phase"] = np.array([phase], dtype=np.int64)
        y = ort_model.session.run(None, feed)[0][0]  # (H, K)
        full = np.full((y.shape[0], len(md["input_columns"])), np.nan, dtype=np.float64)
        full[:, pos] = y
        return full

    return {"data": data, "model": {"name": md["model_name"], "args": md["model_args"]}}, run


def export_cli(args) -> int:
    """``ffnet-ts export --checkpoint CKPT --onnx OUT [--force] [--opset N]``."""
    out = export_checkpoint(args.checkpoint, args.onnx, opset=args.opset, force=args.force)
    from ffnet.export import read_metadata

    md = read_metadata(out)
    print(f"wrote {out}: {md['model_name']} history (batch, {md['lookback']}, {md['variables']}) -> forecast "
          f"(batch, {md['horizon']}, {len(md['output_columns'])}), raw units", file=sys.stderr)
    return 0
