"""Model-level structural re-parameterization."""
from __future__ import annotations

import copy

from torch import nn

__all__ = ["reparameterize_model"]


def reparameterize_model(model: nn.Module, inplace: bool = True) -> nn.Module:
    """Folds every re-parameterizable unit of ``model`` into its single-conv inference form.

    Calls ``reparameterize()`` on every submodule that has one (conv+BN, BN+1x1 with identity,
    large+small kernel pairs; 1D, 2D and sparse 3D). Idempotent; keeps device and dtype. Put the
    model in eval mode to compare outputs: the fused form equals the unfused one in eval.

    Args:
        model: any module.
        inplace: fuse ``model`` itself (default) or a deep copy of it.
    """
    if not inplace:
        model = copy.deepcopy(model)
    # Collect first: parents replace (and drop) their children while fusing.
    units = [m for m in model.modules() if m is not model and callable(getattr(m, "reparameterize", None))]
    if callable(getattr(model, "reparameterize", None)) and not getattr(model, "_reparam_walks_children", False):
        units.append(model)
    for m in units:
        m.reparameterize()
    return model
