"""FFNetSR -> ONNX, and ONNX Runtime as an ``ffnet-sr upscale`` runtime.

The exported graph is the fused network with the layout ONNX-consuming upscalers expect:

* input ``input``: (N, 3, H, W) float32 RGB in [0, 1];
* output ``output``: (N, 3, s H, s W) float32 RGB in [0, 1] (clamped in the graph);
* N, H and W dynamic; the scale, architecture, receptive radius (the tile overlap that makes tiling
  exact) and versions are in the model's metadata.

The ONNX / ORT specifics (exporter, checker, sessions) live in :mod:`ffnet.export`.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from ffnet.export import DEFAULT_OPSET, ExportError, OnnxRuntimeModel, export_onnx, fuse_for_export
from torch import nn

__all__ = ["SRExportWrapper", "load_sr_model", "export_sr_onnx", "onnx_upscaler", "cache_dir"]


class SRExportWrapper(nn.Module):
    """The deploy contract: [0, 1] in, upscaled [0, 1] out (the clamp is what the PNG writer does anyway)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(0.0, 1.0)


def _version() -> str:
    try:
        return importlib_metadata.version("ffnet-superres")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _foreign(path: Path) -> str | None:
    """Name of the other FFNet package that wrote ``path``, if it is one of theirs."""
    if path.suffix == ".safetensors":
        from .weights import read_metadata

        md = read_metadata(path)
        if "network_g" in md:
            return None
        if md.get("format") == "ffnet_3d" or "config" in md:
            return "ffnet-3d"
        return "no ffnet-sr metadata (not an ffnet-sr weights file; pass --model for a bare state dict)"
    return None


def load_sr_model(source: str | os.PathLike | None = None, model: str | None = None,
                  scale: int | None = None) -> tuple[nn.Module, int, dict, str]:
    """(eval model, scale, network_g, description) from a training checkpoint, a weights file or shipped weights.

    Args:
        source: ``ckpt_*.pt`` written by ``ffnet-sr train``, a ``.safetensors`` written by
            ``ffnet-sr export`` / shipped in the package, or a BasicSR ``.pth`` (then ``model`` names the
            architecture). None: the shipped weights of ``model`` at ``scale``.
        model: FFNetSR variant (default ``ffnetsr_mini``).
        scale: 2, 3 or 4 (default: the checkpoint's, else 2).
    """
    from .archs import VARIANTS
    from .train import build_network
    from .weights import load_state_dict, pretrained_path, read_metadata

    if source is None:
        name = model or "ffnetsr_mini"
        scale = scale or 2
        try:
            source = pretrained_path(scale, name)
        except FileNotFoundError as e:
            raise ExportError(f"{e}; pass a checkpoint or --weights FILE") from None
        desc = f"{name} x{scale} (shipped weights)"
    else:
        desc = str(source)
    path = Path(source)
    if not path.is_file():
        raise ExportError(f"checkpoint '{path}' not found")
    other = _foreign(path) if not (model and path.suffix == ".safetensors") else None
    if other:
        raise ExportError(f"{path}: {other}" if other.startswith("no ") else f"{path} is an {other} checkpoint, "
                          "not an ffnet-sr one")
    if path.suffix == ".safetensors" and "network_g" in read_metadata(path):
        md = read_metadata(path)
        net_cfg, wscale = json.loads(md["network_g"]), int(md["scale"])
        state = load_state_dict(path)
    elif path.suffix == ".safetensors" or path.suffix == ".pth" and model:
        if not model:
            raise ExportError(f"{path} carries no architecture metadata; add --model NAME")
        key = model.lower().replace("-", "_")
        if key not in VARIANTS:
            raise ExportError(f"unknown FFNetSR variant '{model}' (known: {', '.join(VARIANTS)})")
        wscale = scale or 2
        net_cfg = {"type": "FFNetSR", **VARIANTS[key]}
        state = load_state_dict(path)
    else:
        try:
            ck = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
            raise ExportError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
        if isinstance(ck, dict) and str(ck.get("format", "")).startswith("ffnet-ts"):
            raise ExportError(f"{path} is an ffnet-ts checkpoint, not an ffnet-sr one (use `ffnet-ts export --onnx`)")
        if not isinstance(ck, dict) or "network_g" not in ck or "scale" not in ck:
            raise ExportError(f"{path} is not an ffnet-sr training checkpoint (no network_g/scale)")
        net_cfg, wscale = ck["network_g"], int(ck["scale"])
        state = ck.get("params_ema") or ck["params"]
    if net_cfg.get("type") != "FFNetSR":
        raise ExportError(f"{path}: architecture {net_cfg.get('type')!r} is not FFNetSR; only FFNetSR is exported")
    if scale and scale != wscale:
        raise ExportError(f"{path} is a x{wscale} model but -s {scale} was requested")
    net = build_network(net_cfg, wscale)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(f"{path}: weights do not match {net_cfg} ({str(e).splitlines()[1].strip()})") from None
    return net.eval(), wscale, net_cfg, desc


def _variant_name(net_cfg: dict) -> str:
    from .archs import VARIANTS

    cfg = {k: v for k, v in net_cfg.items() if k not in ("type", "upscale")}
    for name, v in VARIANTS.items():
        full = {**dict(mlp_ratio=2.0, kernel_size=3, small_kernel=None, cm_kernel_size=3, img_range=1.0), **v}
        if all(full.get(k) == cfg.get(k, full.get(k)) for k in set(full) | set(cfg)):
            return name
    return "ffnetsr_custom"


def export_sr_onnx(net: nn.Module, scale: int, output: str | os.PathLike, *, net_cfg: dict, source: str = "",
                   opset: int = DEFAULT_OPSET, force: bool = False, extra: dict | None = None) -> Path:
    """Fuse ``net`` and write the deploy graph (see the module docstring) with its metadata."""
    fused = fuse_for_export(net)
    wrapper = SRExportWrapper(fused).eval()
    radius = fused.receptive_radius() if hasattr(fused, "receptive_radius") else None
    meta = {
        "model_name": _variant_name(net_cfg), "task": "super-resolution", "scale": int(scale),
        "network_g": net_cfg, "input_layout": "NCHW float32 RGB in [0, 1]",
        "output_layout": "NCHW float32 RGB in [0, 1], (N, 3, scale*H, scale*W)",
        "normalization": "none: pixels / 255 (8-bit) or / 65535 (16-bit); the graph applies the model's img_range",
        "receptive_radius": radius, "tile_overlap_for_exact_tiling": radius,
        "source": Path(source).name if source else "", "ffnet_superres_version": _version(),
        "exporter": f"torch {torch.__version__} dynamo, opset {opset}", **(extra or {}),
    }
    x = torch.rand(2, 3, 24, 20)
    return export_onnx(wrapper, (x,), output, input_names=["input"], output_names=["output"],
                       dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}}, metadata=meta, opset=opset,
                       force=force, fuse=False, doc=f"FFNetSR x{scale}: RGB [0,1] -> RGB [0,1], exported by ffnet-sr")


def cache_dir() -> Path:
    """Where ``upscale --runtime onnxruntime`` keeps graphs it exported ($FFNET_CACHE_DIR or ~/.cache/ffnet)."""
    root = os.environ.get("FFNET_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ffnet"
    return Path(root) / "onnx"


def onnx_upscaler(model: str | None, weights: str | None, scale: int | None,
                  threads: int | None = None) -> tuple[OnnxRuntimeModel, int, str]:
    """An ORT-backed model for :func:`ffnet_sr.upscale.tiled_upscale`: (model, scale, description).

    ``weights`` may be an ``.onnx`` file (used as it is); otherwise the torch weights (or the shipped
    ones) are exported once into :func:`cache_dir`, keyed by the weights' content and the exporter versions.
    """
    if weights and Path(weights).suffix == ".onnx":
        ort_model = OnnxRuntimeModel(weights, threads=threads)
        md = ort_model.metadata
        if md.get("task") != "super-resolution" or "scale" not in md:
            raise ExportError(f"{weights} is not an FFNetSR ONNX export (no super-resolution metadata)")
        if scale and scale != int(md["scale"]):
            raise ExportError(f"{weights} is a x{md['scale']} model but -s {scale} was requested")
        return ort_model, int(md["scale"]), f"{weights} (onnxruntime)"
    net, wscale, net_cfg, desc = load_sr_model(weights, model, scale)
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    import onnxruntime

    h.update(json.dumps([net_cfg, wscale, torch.__version__, onnxruntime.__version__, _version()]).encode())
    path = cache_dir() / f"ffnetsr_x{wscale}_{h.hexdigest()[:16]}.onnx"
    if not path.is_file():
        export_sr_onnx(net, wscale, path, net_cfg=net_cfg, source=desc)
    return OnnxRuntimeModel(path, threads=threads), wscale, f"{desc} (onnxruntime, {path.name})"
