"""``ffnet-sr``: upscale images, train, evaluate, export weights, run BasicSR pipelines.

Every user-facing failure prints one ``ffnet-sr: error: ...`` line and exits with code 2; in a
batch, failing images are reported and the remaining images are still processed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

DEFAULT_MODEL = "ffnetsr_mini"
PROG = "ffnet-sr"


class CLIError(Exception):
    pass


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"device '{name}' requested but CUDA is not available")
    return name


def resolve_model(model: str | None, weights: str | None, scale: int | None, device: str):
    """-> (eval-mode fused model on device, scale, description)."""
    import torch

    from .archs import create_model
    from .weights import load_model, load_state_dict, pretrained_path, read_metadata

    if weights:
        wpath = Path(weights)
        if not wpath.is_file():
            raise CLIError(f"weights file '{weights}' not found")
        meta = read_metadata(wpath) if wpath.suffix == ".safetensors" else {}
        if "network_g" in meta:
            net, wscale = load_model(wpath, device)
        else:
            if not model:
                raise CLIError(f"{weights} carries no architecture metadata; add --model NAME")
            wscale = scale or 2
            net = create_model(model, upscale=wscale)
            net.load_state_dict(load_state_dict(wpath), strict=True)
        if scale and scale != wscale:
            raise CLIError(f"{weights} is a x{wscale} model but -s {scale} was requested")
        desc = str(wpath)
    else:
        name = model or DEFAULT_MODEL
        scale = scale or 2
        try:
            path = pretrained_path(scale, name)
        except FileNotFoundError as e:
            raise CLIError(f"{e}; pass --weights FILE") from None
        net, wscale = load_model(path, device)
        desc = f"{name} x{scale} (shipped weights)"
    try:
        from ffnet import reparameterize_model

        reparameterize_model(net)
    except ImportError:
        pass
    net = net.to(device).eval()
    if str(device).startswith("cpu"):
        net = net.to(memory_format=torch.channels_last)
    return net, wscale, desc


# ----------------------------------------------------------------------------- upscale
def _expand_inputs(items: list[str]) -> list[Path]:
    from .data import IMG_EXTS

    out: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMG_EXTS)
        elif any(ch in it for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(it, recursive=True) if Path(h).is_file())
            if not hits:
                raise CLIError(f"no files match '{it}'")
            out += hits
        else:
            out.append(p)  # missing files are reported per image, so the batch continues
    if not out:
        raise CLIError("no input images")
    return out


def _output_path(src: Path, out: str | None, scale: int, many: bool) -> Path:
    default_name = f"{src.stem}_x{scale}.png"  # lossless by default, whatever the input format
    if out is None:
        return src.with_name(default_name)
    o = Path(out)
    if many or o.is_dir() or out.endswith(os.sep) or not o.suffix:
        return o / default_name
    return o


def cmd_upscale(a: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .upscale import ImageError, n_tiles, read_image, upscale_image, write_image

    if a.threads:
        torch.set_num_threads(a.threads)
    device = _device(a.device)
    inputs = _expand_inputs(a.inputs)
    many = len(inputs) > 1
    if a.output and not many and Path(a.output).suffix == "" and not Path(a.output).exists():
        Path(a.output).mkdir(parents=True, exist_ok=True)
    if a.runtime == "onnxruntime" or (a.weights or "").endswith(".onnx"):
        from ffnet.export import ExportError

        from .export import onnx_upscaler

        try:
            model, scale, desc = onnx_upscaler(a.model, a.weights, a.scale, a.threads or None)
        except ExportError as e:
            raise CLIError(str(e)) from None
        device = "cpu"  # ORT takes and returns host arrays (it runs on CUDA itself when its provider is there)
    else:
        model, scale, desc = resolve_model(a.model, a.weights, a.scale, device)
    failures = 0
    bar = tqdm(inputs, desc=f"x{scale}", unit="img", disable=a.quiet or not many, file=sys.stderr)
    for src in bar:
        try:
            dst = _output_path(src, a.output, scale, many)
            if dst.exists() and not a.force:
                raise ImageError(f"output {dst} exists (use --force to overwrite)")
            img = read_image(src)
            h, w = img.color.shape[:2]
            nt = n_tiles(h, w, a.tile)
            with tqdm(total=nt, desc=src.name, unit="tile", leave=False, file=sys.stderr,
                      disable=a.quiet or nt < 4) as tbar:
                out = upscale_image(model, img, scale, a.tile, a.tile_overlap, device, progress=tbar.update)
            write_image(dst, out, force=a.force)
            if not a.quiet:
                tqdm.write(f"{src} -> {dst} ({w}x{h} -> {w * scale}x{h * scale})", file=sys.stderr)
        except ImageError as e:
            failures += 1
            _err(f"{src}: {e}")
        except MemoryError:
            failures += 1
            _err(f"{src}: out of memory (try a smaller --tile)")
    if failures:
        _err(f"{failures} of {len(inputs)} image(s) failed")
        return 2
    return 0


# ----------------------------------------------------------------------------- train / eval / export
def cmd_train(a: argparse.Namespace) -> int:
    from .config import load_config
    from .train import train

    cfg = load_config(a.opt, a.override)
    if a.name:
        cfg["name"] = a.name
    if a.iters:
        cfg["train"]["total_iter"] = a.iters
    if a.scale:
        cfg["scale"] = a.scale
    if a.threads:
        cfg["num_threads"] = a.threads
    if a.out:
        cfg["path"]["experiments_root"] = a.out
    res = train(cfg, resume=a.resume, device=None if a.device in (None, "auto") else _device(a.device),
                progress=not a.quiet, until=a.until)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 exports and reports
        return 0
    if a.export:
        _export(res["checkpoint"], a.export, "params_ema")
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    return 0


def _export(ckpt: str, out: str, key: str, extra: dict | None = None) -> None:
    import torch

    from .train import build_network
    from .weights import save_weights

    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    net = build_network(ck["network_g"], ck["scale"])
    state = ck.get(key) or ck["params"]
    net.load_state_dict(state)
    save_weights(net, out, ck["network_g"], ck["scale"], iters=ck["iter"],
                 train_hours=f"{ck.get('elapsed', 0) / 3600:.3f}", source=Path(ckpt).name, param_key=key,
                 **(extra or {}))


def cmd_export(a: argparse.Namespace) -> int:
    if a.onnx:
        return _export_onnx(a)
    if not a.checkpoint or not a.output:
        raise CLIError("export needs CHECKPOINT OUTPUT (or --onnx OUT.onnx [CHECKPOINT])")
    if not Path(a.checkpoint).is_file():
        raise CLIError(f"checkpoint '{a.checkpoint}' not found")
    extra = {}
    for item in a.meta:
        if "=" not in item:
            raise CLIError(f"--meta '{item}' must look like key=value")
        k, v = item.split("=", 1)
        extra[k] = v
    _export(a.checkpoint, a.output, a.key, extra)
    print(a.output)
    return 0


def _export_onnx(a: argparse.Namespace) -> int:
    from ffnet.export import ExportError

    from .export import export_sr_onnx, load_sr_model

    if a.output:
        raise CLIError(f"with --onnx the output is --onnx's value; unexpected extra argument '{a.output}'")
    out = Path(a.onnx)
    if out.exists() and not a.force:
        raise CLIError(f"output {out} exists (use --force to overwrite)")
    source = a.checkpoint or a.weights
    try:
        net, scale, net_cfg, desc = load_sr_model(source, a.model, a.scale)
        export_sr_onnx(net, scale, out, net_cfg=net_cfg, source=str(source or desc), opset=a.opset, force=a.force)
    except ExportError as e:
        raise CLIError(str(e)) from None
    print(out)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    import torch

    from .evaluate import evaluate, public, save_crop_figure, write_json

    if a.threads:
        torch.set_num_threads(a.threads)
    device = _device(a.device)
    model, label = None, "Bicubic"
    scale = a.scale
    if not a.bicubic:
        model, scale, desc = resolve_model(a.model, a.weights, a.scale, device)
        label = a.label or (a.model or DEFAULT_MODEL if not a.weights else Path(a.weights).stem)
    scale = scale or 2
    res = evaluate(model, a.data, scale, device, tile=a.tile, overlap=a.tile_overlap)
    res["model"] = label
    for r in res["per_image"]:
        print(f"{r['image']:<14} PSNR {r['psnr']:.3f}  SSIM {r['ssim']:.4f}")
    print(f"{'mean':<14} PSNR {res['psnr']:.3f}  SSIM {res['ssim']:.4f}   ({label}, {a.data}, x{scale}, Y, crop {scale})")
    if a.json:
        write_json(public(res), a.json)
    if a.crop_png and model is not None:
        save_crop_figure(res, a.crop_png, scale, a.crop_image, label=label)
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from importlib import resources

    from .archs import VARIANTS, create_model
    from .weights import PRETRAINED_DIR

    for name, cfg in VARIANTS.items():
        n = sum(p.numel() for p in create_model(name, 2).parameters())
        print(f"{name:<18} {n / 1e6:6.3f}M params (x2)  {cfg}")
    shipped = sorted(p.name for p in (resources.files("ffnet_sr") / PRETRAINED_DIR).iterdir()
                     if p.name.endswith(".safetensors"))
    print("shipped weights:", ", ".join(shipped) or "none")
    return 0


# ----------------------------------------------------------------------------- parser
def _scale(v: str) -> int:
    s = int(v)
    if s not in (2, 3, 4):
        raise argparse.ArgumentTypeError("scale must be 2, 3 or 4")
    return s


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    u = sub.add_parser("upscale", help="super-resolve image files (file, folder or glob)")
    u.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    u.add_argument("-s", "--scale", type=_scale, default=None, help="2, 3 or 4 (default 2, or the weights' scale)")
    u.add_argument("-o", "--output", help="output file (one input) or folder (default: <name>_x<s>.png next to input)")
    u.add_argument("--tile", type=int, default=256, help="LR tile size, 0 = no tiling (default 256)")
    u.add_argument("--tile-overlap", type=int, default=32, help="LR context pixels per tile side (default 32)")
    u.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto (default)")
    u.add_argument("--model", help=f"architecture / shipped weights name (default {DEFAULT_MODEL})")
    u.add_argument("--weights", help="a .safetensors (or BasicSR .pth with --model) weight file")
    u.add_argument("--force", action="store_true", help="overwrite existing outputs")
    u.add_argument("--threads", type=int, default=0, help="CPU threads (default: the runtime's choice)")
    u.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                   help="torch (default) or onnxruntime (the fused graph exported once and cached; "
                        "an .onnx --weights file implies it)")
    u.add_argument("-q", "--quiet", action="store_true")
    u.set_defaults(func=cmd_upscale)

    t = sub.add_parser("train", help="train from HR folders (YAML options, BasicSR keys)")
    t.add_argument("--opt", help="options YAML or built-in name (e.g. train/ffnetsr_mini_x2)")
    t.add_argument("-O", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override an option, e.g. -O train.total_iter=1000 -O datasets.train.batch_size_per_gpu=8")
    t.add_argument("--name")
    t.add_argument("--scale", type=_scale)
    t.add_argument("--iters", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--out", help="experiment folder (default runs/superres/<name>)")
    t.add_argument("--resume", nargs="?", const="auto", help="resume from a checkpoint (default: the run's last)")
    t.add_argument("--device", default="auto")
    t.add_argument("--until", type=int, help="stop (with a checkpoint) after this iteration; --resume continues")
    t.add_argument("--export", help="also write the final EMA weights to this .safetensors")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="Y-channel PSNR/SSIM on a benchmark set")
    e.add_argument("--data", required=True, help="Set5, Set14, ... (under $FFNET_DATA_DIR/superres) or a path")
    e.add_argument("-s", "--scale", type=_scale, default=None)
    e.add_argument("--model")
    e.add_argument("--weights")
    e.add_argument("--bicubic", action="store_true", help="evaluate MATLAB bicubic upscaling instead of a model")
    e.add_argument("--json", help="write per-image and mean metrics to this JSON file")
    e.add_argument("--crop-png", help="write a bicubic | model | HR crop to this PNG")
    e.add_argument("--crop-image", help="image of the set to crop (default: the first)")
    e.add_argument("--label", help="model name in outputs")
    e.add_argument("--tile", type=int, default=0)
    e.add_argument("--tile-overlap", type=int, default=32)
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int, default=0)
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="checkpoint -> .safetensors with architecture metadata, or -> ONNX (--onnx)")
    x.add_argument("checkpoint", nargs="?", help="ffnet-sr training checkpoint (with --onnx also a .safetensors; "
                   "default with --onnx: the shipped weights)")
    x.add_argument("output", nargs="?", help=".safetensors output (without --onnx)")
    x.add_argument("--onnx", metavar="OUT.onnx", help="write the fused network as ONNX: (N,3,H,W) RGB [0,1] -> "
                   "(N,3,sH,sW) RGB [0,1], dynamic N/H/W")
    x.add_argument("--model", help="with --onnx: variant of the shipped weights / of a bare state dict")
    x.add_argument("-s", "--scale", type=_scale, default=None, help="with --onnx: scale of the shipped weights")
    x.add_argument("--weights", help="with --onnx: a .safetensors weights file instead of a checkpoint")
    x.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 17 (default 20: native Gelu)")
    x.add_argument("--force", action="store_true", help="with --onnx: overwrite OUT.onnx")
    x.add_argument("--key", default="params_ema", choices=["params_ema", "params"])
    x.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="extra metadata to store")
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("models", help="list variants and shipped weights")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("basicsr", help="run BasicSR's own train/test pipeline with FFNetSR registered",
                       add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=lambda a: _basicsr(a.rest))
    return p


def _basicsr(rest: list[str]) -> int:
    from .basicsr_plugin import main as bmain

    bmain(rest)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, FileNotFoundError, ValueError, KeyError) as e:
        msg = str(e).strip("'\"") or type(e).__name__
        _err(msg.splitlines()[0])
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
