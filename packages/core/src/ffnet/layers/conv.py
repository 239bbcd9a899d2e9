"""Re-parameterizable convolution units: conv+BN, large+small depthwise pairs, BN+1x1 residual.

Each unit trains in a multi-branch / BN form and folds into a single biased convolution with
``reparameterize()`` (in place, idempotent, keeps device and dtype) or is built fused directly with
``inference_mode=True``, so deploy checkpoints load into a fused build.

Folding rules (all exact in eval mode, where BN uses running statistics):
  * conv -> BN:      W' = W * g/s (per output channel),   b' = beta + (b - mu) * g/s
  * BN -> 1x1 conv:  W' = W * g/s (per input channel),    b' = b + W @ (beta - mu * g/s)
  * identity:        add the identity matrix to a (C, C, 1..1) kernel
  * small kernel:    zero-pad it to the large kernel's size (both use 'same' padding, so centres align,
                     also for stride 2) and add kernels and biases
with s = sqrt(running_var + eps).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backends import Backend, get_backend

__all__ = ["ConvNorm", "RepDWConv", "ResidualBNPointwise", "fuse_conv_bn", "pad_kernel", "find_batchnorm"]


def find_batchnorm(module: nn.Module) -> nn.modules.batchnorm._BatchNorm:
    """Returns the BatchNorm inside ``module`` (the module itself, or a wrapper around one)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return m
    raise TypeError(f"{type(module).__name__} holds no BatchNorm to fold")


def _bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of an eval-mode BN: y = x * scale + shift."""
    bn = find_batchnorm(bn)
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


@torch.no_grad()
def fuse_conv_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Folds a BN that follows a conv into the conv's weight and bias."""
    scale, shift = _bn_scale_shift(bn)
    w = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
    b = shift if bias is None else bias * scale + shift
    return w, b


def pad_kernel(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Zero-pads an odd ``(O, I, k, ..., k)`` kernel to ``kernel_size`` in every spatial dim."""
    k = weight.shape[-1]
    if k == kernel_size:
        return weight
    if k > kernel_size or (kernel_size - k) % 2:
        raise ValueError(f"cannot pad a {k}-kernel to {kernel_size}")
    p = (kernel_size - k) // 2
    return F.pad(weight, [p, p] * (weight.ndim - 2))


def _set_weight_bias(conv: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    conv.weight = nn.Parameter(weight.detach().clone())
    conv.bias = nn.Parameter(bias.detach().clone())


def _like(module: nn.Module, ref: torch.Tensor) -> nn.Module:
    return module.to(device=ref.device, dtype=ref.dtype)


class ConvNorm(nn.Module):
    """Conv followed by BatchNorm (conv without bias), or a plain biased conv when ``norm=False``.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        kernel_size: odd kernel size ('same' padding).
        stride: conv stride.
        groups: conv groups.
        norm: add a BatchNorm after the conv (then the conv has no bias).
        backend: ``"1d"``, ``"2d"``, ``"sparse3d"`` or a Backend.
        inference_mode: build the folded form (a biased conv, no BN).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1, *,
                 norm: bool = True, backend: str | Backend = "2d", inference_mode: bool = False):
        super().__init__()
        be = get_backend(backend)
        fold = norm and inference_mode
        self.conv = be.conv(in_chs, out_chs, kernel_size, stride=stride, groups=groups, bias=(not norm) or fold)
        self.bn = be.norm(out_chs) if norm and not fold else nn.Identity()

    def forward(self, x):
        return self.bn(self.conv(x))

    @torch.no_grad()
    def fused_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weight, bias) of the single conv this unit equals in eval mode."""
        w, b = self.conv.weight, self.conv.bias
        if isinstance(self.bn, nn.Identity):
            return w, (b if b is not None else torch.zeros(w.shape[0], device=w.device, dtype=w.dtype))
        return fuse_conv_bn(w, b, self.bn)

    def reparameterize(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        _set_weight_bias(self.conv, *self.fused_weight_bias())
        self.bn = nn.Identity()


class RepDWConv(nn.Module):
    """Depthwise conv with an optional parallel small-kernel branch (the re-parameterizable pair).

    ``out_chs`` may be a multiple of ``in_chs`` (channel multiplier, e.g. the stride-2 downsampler).
    With ``small_kernel`` each branch is a :class:`ConvNorm` and their outputs are summed; without it
    the unit is a single ConvNorm (``norm=False``: a plain biased depthwise conv).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, small_kernel: int | None = None,
                 stride: int = 1, *, norm: bool = True, backend: str | Backend = "2d",
                 inference_mode: bool = False):
        super().__init__()
        if out_chs % in_chs:
            raise ValueError(f"depthwise conv needs out_chs ({out_chs}) to be a multiple of in_chs ({in_chs})")
        if small_kernel is not None and small_kernel >= kernel_size:
            raise ValueError(f"small_kernel ({small_kernel}) must be smaller than kernel_size ({kernel_size})")
        be = get_backend(backend)
        if small_kernel is not None and stride > 1 and be.name == "sparse3d":
            # Strided sparse convs with different kernels produce different output sites.
            raise ValueError("a small-kernel branch needs stride 1 on the sparse backend")
        self.in_chs, self.out_chs, self.kernel_size, self.small_kernel = in_chs, out_chs, kernel_size, small_kernel
        self.stride = stride
        if inference_mode:
            self.reparam_conv = be.conv(in_chs, out_chs, kernel_size, stride=stride, groups=in_chs, bias=True)
            self.large = self.small = None
        else:
            self.reparam_conv = None
            self.large = ConvNorm(in_chs, out_chs, kernel_size, stride, groups=in_chs, norm=norm, backend=be)
            self.small = (ConvNorm(in_chs, out_chs, small_kernel, stride, groups=in_chs, norm=norm, backend=be)
                          if small_kernel is not None else None)
        self._backend = be  # the instance, so a fused sparse conv keeps the implementation it was built with

    def forward(self, x):
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        y = self.large(x)
        if self.small is not None:
            y = y + self.small(x)
        return y

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        w, b = self.large.fused_weight_bias()
        if self.small is not None:
            ws, bs = self.small.fused_weight_bias()
            w, b = w + pad_kernel(ws, self.kernel_size), b + bs
        conv = self._backend.conv(self.in_chs, self.out_chs, self.kernel_size, stride=self.stride,
                                               groups=self.in_chs, bias=True)
        self.reparam_conv = _like(conv, w)
        _set_weight_bias(self.reparam_conv, w, b)
        self.large = self.small = None


class ResidualBNPointwise(nn.Module):
    """``y = x + Conv1x1(BN(x))`` (pre-BN residual pointwise conv); folds into one biased 1x1 conv."""

    def __init__(self, dim: int, *, backend: str | Backend = "2d", inference_mode: bool = False):
        super().__init__()
        be = get_backend(backend)
        self.dim = dim
        self._backend = be
        if inference_mode:
            self.reparam_conv = be.pointwise(dim, dim, bias=True)
            self.norm = self.conv = None
        else:
            self.reparam_conv = None
            self.norm = be.norm(dim)
            self.conv = be.pointwise(dim, dim, bias=False)

    def forward(self, x):
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.conv(self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        scale, shift = _bn_scale_shift(self.norm)
        w = self.conv.weight  # (C, C, 1, ..., 1)
        w2d = w.flatten(1)
        b = w2d @ shift
        if self.conv.bias is not None:
            b = b + self.conv.bias
        w = w * scale.view(1, -1, *([1] * (w.ndim - 2)))
        w = w + torch.eye(self.dim, device=w.device, dtype=w.dtype).view(w.shape)
        self.reparam_conv = _like(self._backend.pointwise(self.dim, self.dim, bias=True), w)
        _set_weight_bias(self.reparam_conv, w, b)
        self.norm = self.conv = None
