"""Model factory: ``create_model`` / ``list_models`` over the families of ffnet-core (timm-backed)."""
from __future__ import annotations

import fnmatch

import timm
from torch import nn

from .models import FFNET_VARIANTS

__all__ = ["create_model", "list_models"]


def list_models(pattern: str = "*", include_test: bool = False) -> list[str]:
    """Names of the models this package provides (``ffnet_1``..``ffnet_4``; tiny test variants on request)."""
    names = [n for n in FFNET_VARIANTS if include_test or "test" not in n]
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Builds a model by name; keyword arguments go to timm's ``create_model`` / the model constructor.

    Examples: ``create_model("ffnet_1", num_classes=10)``, ``create_model("ffnet_2", features_only=True)``,
    ``create_model("ffnet_1", inference_mode=True)`` (fused deploy graph),
    ``create_model("ffnet_1", pretrained=True, pretrained_cfg_overlay=dict(file="w.safetensors"))``.
    """
    if name not in FFNET_VARIANTS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models(include_test=True))}")
    return timm.create_model(name, **kwargs)
