"""Weight files: safetensors with the model arguments in the metadata, plus BasicSR ``.pth`` files."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch
import torch.nn as nn

PRETRAINED_DIR = "pretrained"


def save_weights(model: nn.Module, path: str | os.PathLike, network_g: dict, scale: int, **meta) -> None:
    """Write contiguous fp32 weights + ``network_g``/``scale`` (JSON) metadata, via temp file + rename."""
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    md = {"network_g": json.dumps(network_g), "scale": str(scale), **{k: str(v) for k, v in meta.items()}}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=md)
    os.replace(tmp, path)


def read_metadata(path: str | os.PathLike) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_state_dict(path: str | os.PathLike, param_key: str | None = "params_ema") -> dict:
    """Load a state dict from .safetensors, a BasicSR .pth (``params``/``params_ema``) or our checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict):
        for key in (param_key, "params_ema", "params"):
            if key and isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def pretrained_path(scale: int, model: str = "ffnetsr_mini") -> Path:
    """Path of a weight file shipped inside the package, e.g. ``pretrained/ffnetsr_mini_x2.safetensors``."""
    p = Path(str(resources.files("ffnet_sr") / PRETRAINED_DIR / f"{model}_x{scale}.safetensors"))
    if not p.is_file():
        raise FileNotFoundError(f"no shipped weights for {model} x{scale} ({p.name})")
    return p


def load_model(weights: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, int]:
    """Build the network described in a safetensors file's metadata and load its weights."""
    from .train import build_network

    md = read_metadata(weights)
    if "network_g" not in md:
        raise ValueError(f"{weights}: no 'network_g' metadata; pass --model to say which architecture it is")
    scale = int(md["scale"])
    model = build_network(json.loads(md["network_g"]), scale)
    model.load_state_dict(load_state_dict(weights), strict=True)
    return model.to(device).eval(), scale
