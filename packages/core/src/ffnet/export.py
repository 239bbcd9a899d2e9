"""ONNX export and ONNX Runtime inference shared by every FFNet package.

This is the one module where the quirks of ``torch.onnx``, ``onnx`` and ``onnxruntime`` live; the
domain packages (``ffnet_sr.export``, ``ffnet_ts.export``, ``ffnet_3d.export``) only wrap their model
and pick names, dynamic axes and metadata. ``onnx`` / ``onnxruntime`` / ``onnxscript`` are imported
lazily (``import ffnet`` never pulls them); install them with the ``ffnet-core[onnx]`` extra.

Choices (measured, see the root README "Deployment (ONNX)"):

* Exporter: torch's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``, the default and
  the maintained one since torch 2.9). Both it and the deprecated TorchScript exporter
  export the fused FFNet graphs exactly (< 1e-6 relative); the dynamo graph is the cleaner one
  (PixelShuffle -> one ``DepthToSpace``, no ``Constant``/``Cast``/``Tile`` chains around
  ``repeat_interleave``), its dynamic axes come from ``torch.export`` shape analysis instead of
  being asserted by name, and the TorchScript exporter warns that it is deprecated.
* Opset 20 by default: from opset 20 the exporter emits ONNX's native ``Gelu`` op. At opset 17-19 GELU
  becomes a ``Div/Erf/Add/Mul/Mul`` chain that ORT 1.32 does not fuse back, and at ``ORT_ENABLE_ALL`` its
  NCHWc layout pass then wraps every such chain in ``ReorderInput``/``ReorderOutput`` (15 reorders in
  ``ffnet_test`` vs 4 with ``Gelu``, which stays inside NCHWc and lets residual adds fuse into the convs).
  ``--opset 17`` remains available for runtimes older than ORT 1.16.
* Always the fused (re-parameterized) graph: :func:`fuse_for_export` folds a *copy* of the model and
  refuses models that cannot be folded (sparse layers, a unit whose ``reparameterize`` fails).
* One self-contained ``.onnx`` file (``external_data=False``: the dynamo exporter would otherwise put
  the weights into a side ``.onnx.data`` file that upscaler GUIs and C# apps do not look for),
  written to a temporary file and renamed, never over an existing file without ``force``.
* Metadata: ``metadata_props`` (key -> string); strings are stored as they are, everything else as
  JSON, so :func:`read_metadata` gives the values back with their types.
* Runtime: the CPU provider (PyPI's ``onnxruntime``); ``CUDAExecutionProvider`` only when the
  installed runtime offers it. GELU stays the exact (erf) GELU at every opset, so ORT matches
  eager PyTorch to float rounding.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .fileio import atomic_output

__all__ = ["ExportError", "DEFAULT_OPSET", "fuse_for_export", "export_onnx", "read_metadata", "check_onnx",
           "create_session", "OnnxRuntimeModel", "onnx_available", "ORT_OPTIMIZATION_LEVELS", "export_backbone",
           "load_backbone_state"]

DEFAULT_OPSET = 20
ORT_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class ExportError(ValueError):
    """A model or request that cannot be exported (reported by the CLIs as one line, exit code 2)."""


def onnx_available() -> bool:
    """True when ``onnx``, ``onnxruntime`` and ``onnxscript`` can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime", "onnxscript"))


def _require_onnx() -> None:
    if not onnx_available():
        raise ExportError("ONNX support needs onnx, onnxruntime and onnxscript: pip install 'ffnet-core[onnx]'")


# ---------------------------------------------------------------------------------------------- fusing
def _is_sparse(module: nn.Module) -> bool:
    return type(module).__module__.startswith(("ffnet.sparse", "spconv"))


def fuse_for_export(model: nn.Module) -> nn.Module:
    """A re-parameterized eval-mode *copy* of ``model``; raises :class:`ExportError` if it cannot be fused.

    Every unit with a ``reparameterize()`` method is folded; a unit that is still multi-branch afterwards
    (``reparam_conv`` unset), one whose folding fails, or any sparse layer (no ONNX equivalent) makes the
    model non-exportable.
    """
    from .reparam import reparameterize_model

    sparse = sorted({type(m).__name__ for m in model.modules() if _is_sparse(m)})
    if sparse:
        raise ExportError(f"{type(model).__name__} has sparse layers ({', '.join(sparse[:3])}) with no ONNX "
                          f"equivalent; export its dense part only")
    fused = copy.deepcopy(model).eval()
    try:
        reparameterize_model(fused)
    except Exception as e:  # noqa: BLE001 - any failure to fold means "cannot be fused"
        raise ExportError(f"{type(model).__name__} cannot be fused ({type(e).__name__}: {e})") from None
    left = [n for n, m in fused.named_modules() if callable(getattr(m, "reparameterize", None))
            and hasattr(m, "reparam_conv") and m.reparam_conv is None]
    if left:
        raise ExportError(f"{type(model).__name__} cannot be fused: {left[0]} is still multi-branch")
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


# --------------------------------------------------------------------------------------------- metadata
def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_metadata(model_or_path) -> dict[str, Any]:
    """``metadata_props`` of an ONNX file / ``ModelProto`` / ORT session, JSON values decoded."""
    if hasattr(model_or_path, "get_modelmeta"):  # onnxruntime.InferenceSession
        props = model_or_path.get_modelmeta().custom_metadata_map
    else:
        import onnx

        proto = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(
            str(model_or_path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
    return {k: _decode(v) for k, v in props.items()}


def check_onnx(path: str | os.PathLike) -> None:
    """``onnx.checker`` on a written file (full check, shapes included)."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


# ----------------------------------------------------------------------------------------------- export
def export_onnx(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | os.PathLike, *,
                input_names: Sequence[str], output_names: Sequence[str],
                dynamic_axes: Mapping[str, Mapping[int, str | tuple[str, int]]] | None = None,
                metadata: Mapping[str, Any] | None = None, opset: int = DEFAULT_OPSET, force: bool = False,
                fuse: bool = True, doc: str = "") -> Path:
    """Export ``model`` (fused) to a single ONNX file with metadata; returns the path.

    Args:
        model: the module; it is copied, put in eval mode and fused (``fuse=False`` only for wrappers
            whose inner model was fused by :func:`fuse_for_export` already).
        example_inputs: positional example inputs (their sizes must not be 0 or 1 on dynamic axes:
            ``torch.export`` specializes those).
        path: output ``.onnx`` file.
        input_names / output_names: graph input / output names.
        dynamic_axes: ``{input_name: {axis: dim_name or (dim_name, min_size)}}``; every other axis is static.
        metadata: stored in ``metadata_props`` (see :func:`read_metadata`).
        opset: ONNX opset (>= 17).
        force: overwrite an existing ``path``.
        doc: the graph's doc string.
    """
    _require_onnx()
    import onnx

    path = Path(path)
    if path.exists() and not force:
        raise ExportError(f"{path} exists (use --force to overwrite)")
    if opset < 17:
        raise ExportError(f"opset {opset} is too old; FFNet graphs need opset >= 17")
    if fuse:
        model = fuse_for_export(model)
    model = model.eval()
    dims: dict[str, torch.export.Dim] = {}
    shapes = []
    for name in input_names:
        spec = {}
        for axis, d in (dynamic_axes or {}).get(name, {}).items():
            dname, lo = (d, 2) if isinstance(d, str) else d
            if dname not in dims:
                dims[dname] = torch.export.Dim(dname, min=lo)
            spec[axis] = dims[dname]
        shapes.append(spec or None)
    # NOTE: importing the exporter logs a "triton not found" warning (GPU flop counting) on CPU-only installs.
    logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
    try:
        # NOTE: the dynamo exporter reports its progress with print(); keep CLI stdout clean.
        with torch.no_grad(), warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, tuple(example_inputs), None, dynamo=True, opset_version=opset,
                                        input_names=list(input_names), output_names=list(output_names),
                                        dynamic_shapes=tuple(shapes), external_data=False, optimize=True,
                                        verbose=False)
    except Exception as e:  # noqa: BLE001 - torch.export raises many types; one line for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExportError(f"torch.onnx export of {type(model).__name__} failed ({type(e).__name__}: {first})") from e
    proto = program.model_proto
    from . import __version__

    proto.producer_name, proto.producer_version = "ffnet", __version__
    proto.doc_string = doc or proto.doc_string
    md = {"ffnet_core_version": __version__, **(metadata or {})}
    del proto.metadata_props[:]
    for k, v in md.items():
        proto.metadata_props.add(key=str(k), value=_encode(v))
    onnx.checker.check_model(proto, full_check=True)
    with atomic_output(path, suffix=".onnx") as tmp:
        onnx.save_model(proto, tmp)
    return path


# ---------------------------------------------------------------------------------------------- runtime
def create_session(path: str | os.PathLike, threads: int | None = None, optimization: str = "all",
                   providers: Sequence[str] | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU provider (CUDA first when the runtime offers it).

    Args:
        path: ``.onnx`` file.
        threads: intra-op threads (None or 0: ORT's default, one per physical core).
        optimization: graph optimization level, one of ``disable``, ``basic``, ``extended``, ``all``.
            ``all`` adds the NCHWc layout transforms; see the README for when ``extended`` is faster.
        providers: explicit execution providers (default: CUDA if available, then CPU).
    """
    _require_onnx()
    import onnxruntime as ort

    if optimization not in ORT_OPTIMIZATION_LEVELS:
        raise ExportError(f"unknown ORT optimization level {optimization!r}; choose {', '.join(ORT_OPTIMIZATION_LEVELS)}")
    if not Path(path).is_file():
        raise ExportError(f"{path}: no such ONNX file")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    so.log_severity_level = 3  # warnings about unused initializers etc. are noise for users
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(str(path), so, providers=list(providers))
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for unreadable files
        raise ExportError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else 'invalid model'})") from None


class OnnxRuntimeModel:
    """An ORT session behind a torch-module-like call: ``model(x: Tensor) -> Tensor`` (first output).

    Lets torch-side pipelines (tiling, batching, metrics) run the ONNX graph unchanged. Inputs are
    converted to contiguous float32 NumPy arrays; the output comes back as a CPU tensor.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, optimization: str = "all",
                 providers: Sequence[str] | None = None):
        self.path = Path(path)
        self.session = create_session(path, threads, optimization, providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = read_metadata(self.session)

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        feed = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(self.input_names, arrays)}
        return self.session.run(None, feed)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        arrays = [x.detach().float().cpu().contiguous().numpy() for x in inputs]
        return torch.from_numpy(self.run(*arrays)[0])

    def eval(self) -> OnnxRuntimeModel:  # torch-module compatibility for callers that call .eval()
        return self

    def __repr__(self) -> str:
        return f"OnnxRuntimeModel({self.path.name}, providers={self.session.get_providers()})"


# ------------------------------------------------------------------------------------- core backbones
def _foreign_checkpoint(path: Path) -> str | None:
    """Which other FFNet package wrote ``path`` (None if it looks like a plain state dict)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
        if "network_g" in md:
            return "ffnet-sr (use `ffnet-sr export --onnx`)"
        if md.get("format") == "ffnet_3d" or "config" in md:
            return "ffnet-3d (use `python -m ffnet_3d.export`)"
        return None
    return None


def load_backbone_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``state_dict`` / ``model`` / ``state_dict_ema`` keys)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"weights file {path} not found")
    other = _foreign_checkpoint(path)
    if other:
        raise ExportError(f"{path} is a checkpoint of {other}, not an ffnet-core backbone")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a weights file"
        raise ExportError(f"{path}: not a readable weights file ({type(e).__name__})") from None
    if isinstance(obj, dict) and obj.get("format", "").startswith("ffnet-ts"):
        raise ExportError(f"{path} is a checkpoint of ffnet-ts (use `ffnet-ts export --onnx`), not an ffnet-core "
                          f"backbone")
    if isinstance(obj, dict):
        for key in ("state_dict_ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExportError(f"{path}: no state dict found")
    return obj


def export_backbone(name: str, output: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                    img_size: int = 256, num_classes: int = 1000, features_only: bool = False, batch_size: int = 2,
                    dynamic_hw: bool = True, opset: int = DEFAULT_OPSET, force: bool = False) -> Path:
    """``ffnet export``: an ffnet-core classifier or ``features_only`` backbone -> fused ONNX.

    Input ``input`` (batch, 3, H, W) float32, normalized with the model's mean/std (stored in the
    metadata); output ``logits`` (batch, num_classes) or ``features_0..3`` (strides 4, 8, 16, 32).
    Batch is dynamic, and so are H and W (any multiple of 32, >= 32) unless ``dynamic_hw=False``.
    """
    from .factory import create_model, list_models

    if name not in list_models(include_test=True):
        raise ExportError(f"unknown model {name!r}; available: {', '.join(list_models(include_test=True))}")
    if img_size < 32 or img_size % 32:
        raise ExportError(f"--img-size must be a positive multiple of 32, got {img_size}")
    if batch_size < 2:
        raise ExportError("the example --batch-size must be >= 2 (torch.export fixes axes of size 1)")
    output = Path(output)
    if output.exists() and not force:
        raise ExportError(f"{output} exists (use --force to overwrite)")
    _require_onnx()
    state = load_backbone_state(weights) if weights else None
    fused_state = state is not None and any(".reparam_conv." in k for k in state)
    kw = dict(features_only=True) if features_only else dict(num_classes=num_classes)
    torch.manual_seed(0)
    model = create_model(name, inference_mode=fused_state, **kw)
    if state is not None:
        if features_only:  # a classifier checkpoint carries a head the feature extractor does not have
            state = {k: v for k, v in state.items() if not k.startswith(("head.", "norm."))}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # size mismatches are raised even with strict=False
            raise ExportError(f"{weights} does not match {name}: {str(e).splitlines()[1].strip()}") from None
        if missing or unexpected:
            raise ExportError(f"{weights} does not match {name}"
                              f"{'' if features_only else f' with {num_classes} classes'}: "
                              f"{len(missing)} missing keys (e.g. {list(missing)[:2]}), "
                              f"{len(unexpected)} unexpected (e.g. {list(unexpected)[:2]})")
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    x = torch.randn(batch_size, 3, img_size, img_size)
    axes = {0: "batch"}
    if dynamic_hw:
        axes.update({2: ("height", 32), 3: ("width", 32)})
    if features_only:
        info = model.feature_info
        outputs = [f"features_{i}" for i in range(len(info.channels()))]
        extra = dict(task="features", feature_channels=info.channels(), feature_reductions=info.reduction())
    else:
        outputs = ["logits"]
        extra = dict(task="classification", num_classes=num_classes)
    meta = dict(model_name=name, **extra, input_layout="NCHW float32 RGB, normalized: (x / 255 - mean) / std",
                mean=list(cfg.get("mean", (0.485, 0.456, 0.406))), std=list(cfg.get("std", (0.229, 0.224, 0.225))),
                img_size=img_size, interpolation=cfg.get("interpolation", "bicubic"),
                crop_pct=cfg.get("crop_pct", 0.9), dynamic_hw=dynamic_hw, weights=Path(weights).name if weights
                else "random init (no --weights)", exporter=f"torch {torch.__version__} dynamo, opset {opset}")
    return export_onnx(model, (x,), output, input_names=["input"], output_names=outputs,
                       dynamic_axes={"input": axes}, metadata=meta, opset=opset, force=force,
                       doc=f"FFNet {name} ({extra['task']}), fused, exported by `ffnet export`")
