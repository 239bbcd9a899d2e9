"""ONNX export of FFNet-3D's dense part: BEV neck + CenterPoint head.

The sparse encoder (submanifold / strided sparse 3D convs with a voxel hash map) has no ONNX
equivalent, so it is *not* exported and nothing pretends otherwise: a deployment runs the encoder
in PyTorch (``model.encoder(SparseTensor)`` -> BEV map), then this graph:

* input ``bev``: (batch, encoder.out_chs, H, W) float32, the encoder's BEV map (``to_bev`` output);
* outputs ``hm`` (class logits), ``reg``, ``height``, ``dim``, ``rot``, ``dir`` on the head grid,
  exactly the dict :func:`ffnet_3d.centerpoint.decode` takes.

Batch, H and W are dynamic. The voxel grid, ranges, classes and head layout are in the metadata.
The ONNX / ORT specifics live in :mod:`ffnet.export`.

    python -m ffnet_3d.export [CHECKPOINT] -o head.onnx [--force]    # default: the shipped checkpoint
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from ffnet.export import DEFAULT_OPSET, ExportError, export_onnx, fuse_for_export
from torch import nn

from .model import HEAD_CHANNELS

__all__ = ["DenseHead", "export_dense_head", "head_output_names", "main"]


def head_output_names(num_classes: int | None = None) -> list[str]:
    return ["hm", *HEAD_CHANNELS]


class DenseHead(nn.Module):
    """``neck -> CenterHead`` of a detector, returning the head maps as a tuple in :func:`head_output_names` order."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.neck, self.head = detector.neck, detector.head

    def forward(self, bev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.head(self.neck(bev))
        return tuple(out[k] for k in head_output_names())


def _version() -> str:
    try:
        return importlib_metadata.version("ffnet-pointcloud")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def export_dense_head(detector: nn.Module, output: str | Path, *, source: str = "", opset: int = DEFAULT_OPSET,
                      force: bool = False) -> Path:
    """Fuse the detector's neck + head and export them (see the module docstring)."""
    cfg = detector.cfg
    dense = fuse_for_export(DenseHead(detector))
    enc = detector.encoder
    _, h, w = enc.out_shape
    d = cfg.data
    meta = {
        "model_name": cfg.model.name, "task": "3d-detection dense head (BEV neck + CenterPoint head)",
        "not_included": "sparse voxel encoder (no ONNX equivalent; run it in PyTorch and feed its BEV map)",
        "bev_channels": enc.out_chs, "bev_size": [h, w], "encoder_stride": enc.stride,
        "feature_map_stride": detector.feature_map_stride, "head_size": list(detector.out_size),
        "classes": list(d.classes), "outputs": {"hm": len(d.classes), **HEAD_CHANNELS},
        "point_cloud_range": list(d.point_cloud_range), "voxel_size": list(d.voxel_size),
        "rot_encoding": "sin(2a), cos(2a) of the box axis a = yaw mod pi; dir logit picks yaw = a or a + pi",
        "source": Path(source).name if source else "", "ffnet_pointcloud_version": _version(),
        "exporter": f"torch {torch.__version__} dynamo, opset {opset}",
    }
    x = torch.randn(2, enc.out_chs, h, w)
    return export_onnx(dense, (x,), output, input_names=["bev"], output_names=head_output_names(),
                       dynamic_axes={"bev": {0: "batch", 2: ("bev_h", 8), 3: ("bev_w", 8)}}, metadata=meta,
                       opset=opset, force=force, fuse=False,
                       doc=f"FFNet-3D {cfg.model.name} dense part (BEV neck + CenterPoint head), exported by ffnet-3d")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ffnet_3d.export", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", help="weights / training state (default: the shipped checkpoint)")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    p.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 17 (default 20: native Gelu)")
    p.add_argument("--force", action="store_true", help="overwrite --output")
    a = p.parse_args(argv)
    from .checkpoint import SHIPPED_CHECKPOINT, load_model

    try:
        if Path(a.output).exists() and not a.force:
            raise ExportError(f"{a.output} exists (use --force to overwrite)")
        try:
            model, _, _ = load_model(a.checkpoint)
        except ValueError as e:
            raise ExportError(str(e).splitlines()[0]) from None
        export_dense_head(model, a.output, source=a.checkpoint or str(SHIPPED_CHECKPOINT), opset=a.opset,
                          force=a.force)
    except ExportError as e:
        print(f"ffnet-3d export: error: {e}", file=sys.stderr)
        return 2
    print(a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
