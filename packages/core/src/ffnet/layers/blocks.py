"""FFNified attention, the ConvNeXt-like channel mixer and the FFNet block, for any conv backend.

FFNified attention (token mixer) fills the MetaMixer slots with: 1x1 query projection (+BN),
depthwise key conv (static key weights K_W in R^{d x k^d}), GELU instead of softmax, depthwise
value conv (static V_W). The channel mixer fills them in the opposite dimension: depthwise query
conv, 1x1 key weights, GELU, 1x1 value weights. Both are wrapped in residuals with optional layer
scale and per-sample drop-path. Backends: ``"1d"`` (B, C, L), ``"2d"`` (B, C, H, W) and
``"sparse3d"`` (:class:`ffnet.sparse.SparseTensor`).
"""
from __future__ import annotations

from torch import nn

from .backends import Backend, get_backend
from .conv import ConvNorm, RepDWConv
from .metamixer import MetaMixer

__all__ = ["FFNifiedAttention", "ChannelMixer", "FFNetBlock"]


class FFNifiedAttention(MetaMixer):
    """FFNified attention: 1x1 query proj -> depthwise key conv -> GELU -> depthwise value conv.

    Args:
        dim: channels.
        kernel_size: depthwise kernel of the key and value convs.
        small_kernel: parallel re-parameterizable small kernel (``None``: single conv).
        query_norm: BN after the 1x1 query projection (else the projection has a bias).
        dw_norm: BN after each depthwise conv branch (else the convs have biases).
        backend: ``"1d"``, ``"2d"``, ``"sparse3d"`` or a Backend.
        inference_mode: build the fused form.
    """

    def __init__(self, dim: int, kernel_size: int = 7, small_kernel: int | None = 3, *, query_norm: bool = True,
                 dw_norm: bool = True, backend: str | Backend = "2d", inference_mode: bool = False):
        be = get_backend(backend)
        super().__init__(
            ConvNorm(dim, dim, 1, norm=query_norm, backend=be, inference_mode=inference_mode),
            RepDWConv(dim, dim, kernel_size, small_kernel, norm=dw_norm, backend=be, inference_mode=inference_mode),
            be.act(),
            RepDWConv(dim, dim, kernel_size, small_kernel, norm=dw_norm, backend=be, inference_mode=inference_mode),
        )


class ChannelMixer(MetaMixer):
    """ConvNeXt-like channel mixer: depthwise conv -> 1x1 (dim -> hidden) -> GELU -> 1x1 (hidden -> dim)."""

    def __init__(self, dim: int, mlp_ratio: float = 3.0, kernel_size: int = 7, small_kernel: int | None = 3, *,
                 dw_norm: bool = True, backend: str | Backend = "2d", inference_mode: bool = False):
        be = get_backend(backend)
        hidden = int(round(mlp_ratio * dim))
        super().__init__(
            RepDWConv(dim, dim, kernel_size, small_kernel, norm=dw_norm, backend=be, inference_mode=inference_mode),
            be.pointwise(dim, hidden, bias=True),
            be.act(),
            be.pointwise(hidden, dim, bias=True),
        )


class FFNetBlock(nn.Module):
    """FFNet block: FFNified-attention residual, then channel-mixer residual.

    ``x = x + drop_path(ls1(token_mixer(x)))``; ``x = x + drop_path(ls2(channel_mixer(x)))``.
    There is no pre-norm: normalisation lives in the BNs inside the convs (none when disabled).
    """

    def __init__(self, dim: int, kernel_size: int = 7, small_kernel: int | None = 3, cm_kernel_size: int = 7,
                 cm_small_kernel: int | None = 3, mlp_ratio: float = 3.0, ls_init_value: float | None = None,
                 drop_path: float = 0.0, *, query_norm: bool = True, tm_dw_norm: bool = True, cm_dw_norm: bool = True,
                 backend: str | Backend = "2d", inference_mode: bool = False):
        super().__init__()
        be = get_backend(backend)
        self.token_mixer = FFNifiedAttention(dim, kernel_size, small_kernel, query_norm=query_norm, dw_norm=tm_dw_norm,
                                             backend=be, inference_mode=inference_mode)
        self.ls1 = be.layer_scale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.channel_mixer = ChannelMixer(dim, mlp_ratio, cm_kernel_size, cm_small_kernel, dw_norm=cm_dw_norm,
                                          backend=be, inference_mode=inference_mode)
        self.ls2 = be.layer_scale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.drop_path = be.drop_path(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        x = x + self.drop_path(self.ls2(self.channel_mixer(x)))
        return x
