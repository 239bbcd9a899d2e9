"""Parameter and MAC counting (torch's own FLOP counter; MACs = FLOPs / 2)."""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from .reparam import reparameterize_model

__all__ = ["profile", "count_params"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def profile(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 256, 256), *, fused: bool = False,
            device: str | torch.device = "meta") -> dict:
    """Counts parameters and multiply-accumulates of one forward pass.

    MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls, attention);
    element-wise ops (BN, GELU, adds) are not counted, as in the published tables.

    Args:
        model: the model (left untouched).
        input_shape: shape of the dummy input, batch included.
        fused: profile the re-parameterized copy instead.
        device: where to run the counting forward; the default "meta" computes shapes only (instant).

    Returns:
        ``dict(params=..., macs=..., input_shape=..., fused=...)``.
    """
    m = copy.deepcopy(model).to(device).eval()
    if fused:
        reparameterize_model(m)
    # NOTE: importing the counter warns that triton is absent (this workspace drops triton, a GPU-only
    # compiler); that only matters for triton kernels, which a MAC count of eager ops never meets.
    logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        m(torch.zeros(input_shape, device=device))
    return dict(params=count_params(m), macs=counter.get_total_flops() // 2, input_shape=tuple(input_shape),
                fused=fused)
