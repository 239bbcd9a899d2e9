"""Checkpoints that carry their config.

* Training state (``last.pt``): model, optimizer, scheduler, AMP scaler, epoch/step, RNG states and
  the config dict, written atomically; ``--resume`` restores all of it.
* Weights (``model.safetensors``): the model's state dict plus the config as JSON metadata; this is
  what ships in the package and what ``eval`` / ``detect`` load. ``.pt`` weights work too.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from .config import Config, config_from_dict
from .io import atomic_write_bytes

__all__ = ["save_training_state", "load_training_state", "save_weights", "load_model", "SHIPPED_CHECKPOINT"]

SHIPPED_CHECKPOINT = Path(__file__).parent / "weights" / "ffnet3d_synth_cpu.safetensors"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def save_training_state(path, model, optimizer, scheduler, scaler, epoch: int, step: int, cfg: Config,
                        extra: dict | None = None) -> None:
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "step": step,
        "config": cfg.to_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_training_state(path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def save_weights(path, model: torch.nn.Module, cfg: Config, meta: dict | None = None) -> None:
    """Weights + config; ``.safetensors`` (config in the metadata) or torch ``.pt``."""
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        md = {"config": json.dumps(cfg.to_dict()), "format": "ffnet_3d"}
        if meta:
            md["meta"] = json.dumps(meta)
        atomic_write_bytes(path, save(sd, metadata=md))
    else:
        buf = io.BytesIO()
        torch.save({"model": sd, "config": cfg.to_dict(), "meta": meta or {}}, buf)
        atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path) -> tuple[dict, Config, dict]:
    """(state_dict, config, meta) from a weights file or a training state."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
        if "config" not in md:
            raise ValueError(f"{path}: safetensors file without an ffnet_3d config")
        return load_file(str(path)), config_from_dict(json.loads(md["config"])), json.loads(md.get("meta", "{}"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a bad checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not an ffnet_3d checkpoint (needs 'model' and 'config')")
    return state["model"], config_from_dict(state["config"]), state.get("meta", state.get("extra", {}))


def load_model(path=None, device="cpu"):
    """(model in eval mode, config, meta); ``path=None`` loads the checkpoint shipped in the package."""
    from .model import build_detector

    path = SHIPPED_CHECKPOINT if path is None else path
    sd, cfg, meta = read_checkpoint(path)
    model = build_detector(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: state dict does not match the config's model "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    return model.to(device).eval(), cfg, meta


def env_rank() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment (0, 0, 1 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
