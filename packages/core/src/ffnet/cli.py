"""``ffnet`` console script: model information (parameters and MACs, train-time and fused), ONNX export."""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _info(args: argparse.Namespace) -> int:
    import torch

    from .factory import create_model, list_models
    from .profile import profile

    if args.model not in list_models(include_test=True):
        print(f"error: unknown model {args.model!r}; available: {', '.join(list_models(include_test=True))}",
              file=sys.stderr)
        return 2
    if args.img_size < 32 or args.img_size % 32:
        print(f"error: --img-size must be a positive multiple of 32, got {args.img_size}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=args.num_classes)
    shape = (1, 3, args.img_size, args.img_size)
    train, fused = profile(model, shape), profile(model, shape, fused=True)
    row = dict(model=args.model, img_size=args.img_size, num_classes=args.num_classes,
               params_train=train["params"], macs_train=train["macs"],
               params_fused=fused["params"], macs_fused=fused["macs"])
    if args.json:
        print(json.dumps(row, indent=2))
        return 0
    print(f"{args.model} @ {args.img_size}x{args.img_size}, {args.num_classes} classes")
    print(f"{'form':<8} {'params (M)':>11} {'GMACs':>8}")
    print(f"{'train':<8} {train['params'] / 1e6:>11.2f} {train['macs'] / 1e9:>8.2f}")
    print(f"{'fused':<8} {fused['params'] / 1e6:>11.2f} {fused['macs'] / 1e9:>8.2f}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from .factory import list_models

    print("\n".join(list_models(include_test=args.all)))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import ExportError, export_backbone

    try:
        path = export_backbone(args.model, args.output, weights=args.weights, img_size=args.img_size,
                               num_classes=args.num_classes, features_only=args.features_only,
                               batch_size=args.batch_size, dynamic_hw=not args.static_hw, opset=args.opset,
                               force=args.force)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ffnet", description="FFNet core tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="parameters and MACs of a model, train-time and re-parameterized")
    p.add_argument("model", help="model name, e.g. ffnet_1 (see `ffnet list`)")
    p.add_argument("--img-size", type=int, default=256, help="input resolution (default 256)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_info)
    p = sub.add_parser("list", help="available model names")
    p.add_argument("--all", action="store_true", help="include tiny test variants")
    p.set_defaults(func=_list)
    p = sub.add_parser("export", help="export the fused model to ONNX (classifier or features_only backbone)")
    p.add_argument("model", help="model name, e.g. ffnet_1 (see `ffnet list --all`)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--weights", help="state dict (.safetensors / .pth; train-time or fused) to load")
    p.add_argument("--img-size", type=int, default=256, help="example input size, multiple of 32 (default 256)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--features-only", action="store_true", help="export the backbone's 4 feature maps")
    p.add_argument("--batch-size", type=int, default=2, help="example batch size (the batch axis is dynamic)")
    p.add_argument("--static-hw", action="store_true", help="fix H and W to --img-size (default: dynamic)")
    p.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 17 (default 20: native Gelu)")
    p.add_argument("--force", action="store_true", help="overwrite --output")
    p.set_defaults(func=_export)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
