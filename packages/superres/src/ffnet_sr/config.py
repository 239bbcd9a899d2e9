"""YAML options with BasicSR-style keys, merged over defaults and overridable from the CLI."""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "name": "ffnetsr",
    "model_type": "SRModel",
    "scale": 2,
    "num_gpu": "auto",  # 0 = CPU, >0 or "auto" = CUDA when available
    "num_threads": None,  # torch.set_num_threads on CPU (None = torch default)
    "manual_seed": 0,
    "datasets": {
        "train": {
            "name": "291",
            "type": "HRFolderOnTheFly",  # HR images, bicubic LR made at load time (MATLAB uint8 path)
            "dataroot_gt": ["T91", "BSD200"],
            "gt_size": 96,
            "use_hflip": True,
            "use_rot": True,
            "batch_size_per_gpu": 16,
        },
        "val": {"name": "Set5", "dataroot": "Set5"},
    },
    "network_g": {"type": "FFNetSR", "num_feat": 96, "num_block": 36, "mlp_ratio": 2.0},
    "path": {
        "experiments_root": None,  # default: runs/superres/<name>
        "pretrain_network_g": None,
        "param_key_g": "params_ema",
        "strict_load_g": True,
        "resume_state": None,
    },
    "train": {
        "ema_decay": 0.999,
        "ema_warmup": True,  # decay min(ema_decay, (1+n)/(10+n)): short runs do not keep the random init
        "optim_g": {"type": "Adam", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.99]},
        "scheduler": {"type": "CosineAnnealingRestartLR", "eta_min": 1e-5},
        "total_iter": 20000,
        "warmup_iter": -1,
        "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        "fft_opt": {"type": "FFTLoss", "loss_weight": 0.02, "reduction": "mean"},
        "amp": False,  # False | "bf16" | "fp16" (fp16 only on CUDA)
        "amp_until": 1.0,  # fraction of iterations run under AMP; the rest (low-lr tail) in fp32
    },
    "val": {"val_freq": 2000, "metrics": {"psnr": {"type": "calculate_psnr", "test_y_channel": True}}},
    "logger": {"print_freq": 100, "save_checkpoint_freq": 1000},
}


def deep_update(base: dict, upd: dict) -> dict:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def builtin_options() -> list[str]:
    root = resources.files("ffnet_sr") / "options"
    return sorted(f"{d.name}/{f.name[:-4]}" for d in root.iterdir() if d.is_dir()
                  for f in d.iterdir() if f.name.endswith(".yml"))


def find_options(name_or_path: str | os.PathLike) -> Path:
    """A YAML path, or a built-in name like ``train/ffnetsr_mini_x2`` shipped in ``ffnet_sr/options``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    stem = str(name_or_path).removesuffix(".yml")
    cand = Path(str(resources.files("ffnet_sr") / "options" / f"{stem}.yml"))
    if cand.is_file():
        return cand
    cand = Path(str(resources.files("ffnet_sr") / "options" / "train" / f"{stem}.yml"))
    if cand.is_file():
        return cand
    raise FileNotFoundError(f"options file '{name_or_path}' not found (built-in: {', '.join(builtin_options())})")


def set_by_path(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    d = cfg
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"override '{dotted}': '{k}' is not a mapping")
    d[keys[-1]] = value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML: numbers, lists, null, ...)."""
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override '{item}' must look like key.sub=value")
        k, v = item.split("=", 1)
        set_by_path(cfg, k.strip(), yaml.safe_load(v))
    return cfg


def expand_vars(obj: Any) -> Any:
    """Expand ``$VARS`` in every string (``$FFNET_SR_WEIGHTS`` defaults to the shipped-weights folder)."""
    if isinstance(obj, dict):
        return {k: expand_vars(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand_vars(v) for v in obj]
    return os.path.expandvars(obj) if isinstance(obj, str) else obj


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> dict:
    os.environ.setdefault("FFNET_SR_WEIGHTS", str(resources.files("ffnet_sr") / "pretrained"))
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        with open(find_options(path)) as f:
            user = yaml.safe_load(f) or {}
        if "network_g" in user:  # an architecture is replaced as a whole, never merged with the default's kwargs
            cfg["network_g"] = {}
        deep_update(cfg, user)
    return expand_vars(apply_overrides(cfg, overrides or []))
