"""FFNetSR: FFNet blocks as a single-scale super-resolution body (arXiv 2406.02021, spec section 3).

Pure torch; argument names follow BasicSR (``upscale``, ``num_in_ch``, ``num_feat``, ``num_block``).

    conv3x3(3 -> C) -> n x FFNetBlock(C) -> conv3x3(C -> 3 s^2) -> + repeat_interleave(LR, s^2) -> PixelShuffle(s)

The blocks are ``ffnet.layers.FFNetBlock`` with every norm off (the official configs set norm to
null): token mixer = 1x1 conv (bias) -> DW k x k -> GELU -> DW k x k, channel mixer = DW 3x3 ->
1x1 (C -> rC) -> GELU -> 1x1 (rC -> C). The global skip repeats each LR channel s^2 times, so after
the shuffle it is a nearest-neighbour upsampling of the input and the body only learns a residual.

Variants (``VARIANTS``):
- ``ffnetsr`` / ``ffnetsr_light``: the paper's models (96 ch, 48 / 36 blocks, MLP ratio 2).
- ``ffnetsr_mini``: OURS, not the paper's. A narrow, shallow FFNetSR (48 ch, 8 blocks) whose
  training fits a CPU budget; it is the model the shipped weights belong to. It sees pixels in
  [0, 255] (``img_range=255``, as BasicSR's EDSR): with [0, 1] inputs and no norms the default init
  keeps every pre-GELU activation within |x| < 1, where GELU is almost linear, and on a short CPU
  schedule training stalled at the best *linear* filter (Set5 x2 ~35.3 dB from iteration 500 to 2400,
  loss flat; measured). With 255x larger inputs the GELUs work as non-linearities from the start.
- ``ffnetsr_mini_lk``: OURS, ``ffnetsr_mini`` with 7x7 + 3x3 re-parameterizable FFNified attention.
- ``ffnetsr_test``: tiny, for unit tests.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from ffnet.layers import FFNetBlock


class FFNetSR(nn.Module):
    """FFNetSR super-resolution network.

    Args:
        upscale: scale factor (2, 3, 4, ...).
        num_in_ch / num_out_ch: image channels (must match, for the global skip).
        num_feat: body width C.
        num_block: number of FFNet blocks.
        mlp_ratio: channel-mixer expansion.
        kernel_size: token-mixer depthwise kernel (key and value convs).
        small_kernel: parallel re-parameterizable small kernel for the token mixer (None = plain).
        cm_kernel_size: channel-mixer depthwise kernel.
        img_range: inputs are scaled by this before the network and back after (1.0 = [0, 1]).
        inference_mode: build multi-branch convs directly in their fused form.
    """

    def __init__(self, upscale: int = 2, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 96,
                 num_block: int = 36, mlp_ratio: float = 2.0, kernel_size: int = 3, small_kernel: int | None = None,
                 cm_kernel_size: int = 3, img_range: float = 1.0, inference_mode: bool = False):
        super().__init__()
        if num_in_ch != num_out_ch:
            raise ValueError("FFNetSR's global skip needs num_in_ch == num_out_ch")
        self.upscale, self.img_range = int(upscale), float(img_range)
        self.kernel_size, self.cm_kernel_size = kernel_size, cm_kernel_size
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[
            FFNetBlock(num_feat, kernel_size=kernel_size, small_kernel=small_kernel, cm_kernel_size=cm_kernel_size,
                       cm_small_kernel=None, mlp_ratio=mlp_ratio, query_norm=False, tm_dw_norm=False,
                       cm_dw_norm=False, backend="2d", inference_mode=inference_mode)
            for _ in range(num_block)
        ])
        self.conv_last = nn.Conv2d(num_feat, num_out_ch * self.upscale**2, 3, 1, 1)
        self.upsample = nn.PixelShuffle(self.upscale)

    def receptive_radius(self) -> int:
        """LR pixels of context each output pixel depends on, per side (tiling with this overlap is exact)."""
        per_block = 2 * (self.kernel_size // 2) + self.cm_kernel_size // 2
        return 1 + len(self.body) * per_block + 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # NOTE: .float() keeps the residual stream in fp32 under bf16/fp16 autocast (a no-op otherwise)
        return self.body(self.conv_first(x).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.img_range
        out = self.conv_last(self.forward_features(x)) + x.repeat_interleave(self.upscale**2, dim=1)
        return self.upsample(out) / self.img_range  # (B, C, sH, sW)


VARIANTS: dict[str, dict] = {
    "ffnetsr": dict(num_feat=96, num_block=48, mlp_ratio=2.0),
    "ffnetsr_light": dict(num_feat=96, num_block=36, mlp_ratio=2.0),
    "ffnetsr_mini": dict(num_feat=48, num_block=8, mlp_ratio=2.0, img_range=255.0),
    "ffnetsr_mini_lk": dict(num_feat=48, num_block=8, mlp_ratio=2.0, kernel_size=7, small_kernel=3, img_range=255.0),
    "ffnetsr_test": dict(num_feat=16, num_block=2, mlp_ratio=2.0),
}


def create_model(name: str, upscale: int = 2, **kwargs) -> FFNetSR:
    """Build a registered variant, e.g. ``create_model("ffnetsr_light", upscale=4)``."""
    key = name.lower().replace("-", "_")
    if key not in VARIANTS:
        raise KeyError(f"unknown FFNetSR variant '{name}' (known: {', '.join(VARIANTS)})")
    return FFNetSR(upscale=upscale, **{**VARIANTS[key], **kwargs})


def ffnetsr(upscale: int = 2, **kw) -> FFNetSR:
    return create_model("ffnetsr", upscale, **kw)


def ffnetsr_light(upscale: int = 2, **kw) -> FFNetSR:
    return create_model("ffnetsr_light", upscale, **kw)


def ffnetsr_mini(upscale: int = 2, **kw) -> FFNetSR:
    return create_model("ffnetsr_mini", upscale, **kw)
