"""Sparse 3D convolutions as functions, dispatched to the ``"torch"`` or ``"spconv"`` implementation.

Weights always use torch's conv layout ``(out, in // groups, kd, kh, kw)``, so a sparse conv and a
dense ``conv3d`` with the same weight agree on active sites, state dicts are identical for both
implementations, and re-parameterization code written for dense convs applies unchanged.

Implementations (chosen per call with ``impl``; see :func:`resolve_impl`):

* ``"torch"``: kernel maps from :mod:`ffnet.sparse.maps`, then gather-GEMM-scatter (one GEMM per
  kernel offset, one ``index_add``). Runs on any device; autograd through plain torch ops.
* ``"spconv"``: spconv's rulebooks and its gather-GEMM-scatter kernels, all behind
  :mod:`ffnet.sparse._spconv_compat`.

Depthwise convs (``groups == in_channels``, any channel multiplier) share one kernel in both
implementations (:func:`depthwise_conv`): spconv has no grouped conv, so its path feeds spconv's own
rulebook to the same kernel. On CPU (float32 / float64, numba installed) that kernel is the fused
one of :mod:`ffnet.sparse._numba_kernels` (output-stationary over a ``(N_out, K)`` neighbour map,
deterministic, no per-pair temporaries) wrapped in an autograd Function; elsewhere (CUDA, other
dtypes, ``$FFNET_SPARSE_FUSED=0``) it is the reference gather-multiply-``index_add`` in plain torch.
Other group counts are expanded to a block-diagonal dense-channel weight (exact, not fast).
"""
from __future__ import annotations

import importlib.util
import os

import torch

from .maps import (
    KernelMap,
    NeighborMap,
    build_conv_map,
    build_subm_map,
    build_subm_neighbors,
    numba_available,
    subm_map_from_neighbors,
)
from .tensor import CoordinateContext, SparseTensor, same_coordinates

__all__ = ["IMPLS", "ENV_IMPL", "ENV_FUSED", "resolve_impl", "sparse_conv3d", "sparse_inverse_conv3d",
           "dense_channel_conv", "depthwise_conv", "depthwise_conv_reference", "fused_depthwise_conv", "use_fused",
           "is_depthwise"]

IMPLS = ("torch", "spconv")
ENV_IMPL = "FFNET_SPARSE_IMPL"
ENV_FUSED = "FFNET_SPARSE_FUSED"  # "0" forces the reference depthwise kernel everywhere

# Elements of the largest temporary (pairs x channels) per step of the depthwise kernel.
_CHUNK = 1 << 22


def resolve_impl(impl: str | None = None) -> str:
    """Implementation name: ``impl`` if given, else ``$FFNET_SPARSE_IMPL``, else the default.

    The default is ``"spconv"`` when CUDA is available and spconv is installed, otherwise
    ``"torch"`` (spconv's CPU path is single-threaded here and its import costs ~9 s).
    """
    if impl is None:
        impl = os.environ.get(ENV_IMPL) or None
    if impl is None:
        has_spconv = importlib.util.find_spec("spconv") is not None
        return "spconv" if torch.cuda.is_available() and has_spconv else "torch"
    if impl not in IMPLS:
        raise ValueError(f"unknown sparse implementation {impl!r} (from argument or ${ENV_IMPL}); expected one of {IMPLS}")
    if impl == "spconv" and importlib.util.find_spec("spconv") is None:
        raise ImportError("impl='spconv' needs spconv: pip install 'ffnet-core[sparse]' (spconv-cu126==2.3.8), "
                          "or use impl='torch'")
    return impl


def _spconv():
    # Lazy: importing spconv takes ~9 s and pulls in cumm; only the spconv path pays for it.
    from . import _spconv_compat

    return _spconv_compat


# --------------------------------------------------------------------------------- shared kernels
def _block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(out, in // g, *k)`` grouped weight -> equivalent ``(out, in, *k)`` dense-channel weight."""
    out_chs, in_per = weight.shape[:2]
    out_per = out_chs // groups
    full = weight.new_zeros(out_chs, in_per * groups, *weight.shape[2:])
    for g in range(groups):
        full[g * out_per:(g + 1) * out_per, g * in_per:(g + 1) * in_per] = weight[g * out_per:(g + 1) * out_per]
    return full


def dense_channel_conv(features: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Gather-GEMM-scatter: ``out[o] += features[i] @ W[k]^T`` for every pair ``(i, o, k)`` of ``kmap``.

    Args:
        features: ``(N_in, C_in)``.
        weight: ``(C_out, C_in, *kernel)`` (groups already expanded).
        kmap: the kernel map (its offsets index ``weight.reshape(C_out, C_in, -1)``).

    Returns:
        ``(N_out, C_out)``.
    """
    out_chs = weight.shape[0]
    w = weight.reshape(out_chs, weight.shape[1], -1).permute(2, 1, 0)  # (K, C_in, C_out)
    if kmap.identity_offset is not None:
        out = features @ w[kmap.identity_offset]  # the implicit centre: row i -> row i
    else:
        out = features.new_zeros(kmap.num_out, out_chs)
    if kmap.num_pairs == 0:
        return out
    gathered = torch.split(features.index_select(0, kmap.in_idx), kmap.counts)
    partial = torch.cat([g @ w[k] for k, g in enumerate(gathered) if g.shape[0]])  # (P, C_out)
    return out.index_add(0, kmap.out_idx, partial)


def depthwise_conv_reference(features: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Depthwise conv on a kernel map in plain torch: ``out[o, c*m + j] += features[i, c] * W[c*m + j, 0, k]``.

    The device-generic reference (CUDA uses it): gathers input rows and per-pair weight rows, then
    ``index_add``. Autograd through torch ops.

    Args:
        features: ``(N_in, C)``.
        weight: ``(C * m, 1, *kernel)``, torch's layout for ``groups = C`` with channel multiplier ``m``.
        kmap: the kernel map.

    Returns:
        ``(N_out, C * m)``.
    """
    chs = features.shape[1]
    out_chs = weight.shape[0]
    mult = out_chs // chs
    w = weight.reshape(chs, mult, -1).permute(2, 0, 1)  # (K, C, m): w[k, c, j] = weight[c*m + j, 0, k]
    if kmap.identity_offset is not None:
        out = (features[:, :, None] * w[kmap.identity_offset]).reshape(-1, out_chs)
    else:
        out = features.new_zeros(kmap.num_out, out_chs)
    # Chunk the pair list so the (pairs, C*m) temporaries stay bounded for large kernels.
    step = max(1, _CHUNK // max(out_chs, 1))
    for s in range(0, kmap.num_pairs, step):
        e = min(s + step, kmap.num_pairs)
        f = features.index_select(0, kmap.in_idx[s:e])  # (p, C)
        wk = w.index_select(0, kmap.offset[s:e])  # (p, C, m)
        out.index_add_(0, kmap.out_idx[s:e], (f[:, :, None] * wk).reshape(-1, out_chs))
    return out


class _FusedDepthwise(torch.autograd.Function):
    """numba depthwise conv (channel multiplier 1) on a NeighborMap; weight given as ``(K, C)``."""

    @staticmethod
    def forward(ctx, features, weight_kc, nmap: NeighborMap):
        from . import _numba_kernels as nk

        f = features.detach().contiguous()
        w = weight_kc.detach().contiguous()
        ctx.save_for_backward(f, w)
        ctx.nmap = nmap
        return torch.from_numpy(nk.dw_forward(f.numpy(), w.numpy(), nmap.nbr.numpy(), torch.get_num_threads()))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        from . import _numba_kernels as nk

        f, w = ctx.saved_tensors
        nmap: NeighborMap = ctx.nmap
        threads = torch.get_num_threads()
        g = grad_out.contiguous().numpy()
        grad_f = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_f = torch.from_numpy(nk.dw_forward(g, w.numpy(), nmap.inverse().numpy(), threads))
        if ctx.needs_input_grad[1]:
            grad_w = torch.from_numpy(nk.dw_grad_weight(f.numpy(), g, nmap.nbr.numpy(), threads))
        return grad_f, grad_w, None


def fused_depthwise_conv(features: torch.Tensor, weight: torch.Tensor, nmap: NeighborMap) -> torch.Tensor:
    """Depthwise conv with the fused numba CPU kernel (same contract as :func:`depthwise_conv_reference`).

    A channel multiplier ``m > 1`` repeats each input channel ``m`` times (autograd sums the
    repeats' gradients), so the kernel itself only handles ``m = 1``.
    """
    chs = features.shape[1]
    out_chs = weight.shape[0]
    mult = out_chs // chs
    if mult > 1:
        features = features.repeat_interleave(mult, dim=1)
    w = weight.reshape(out_chs, -1).t()  # (K, C*m): w[k, c*m + j] = weight[c*m + j, 0, k]
    return _FusedDepthwise.apply(features, w, nmap)


def use_fused(features: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`depthwise_conv` takes the fused CPU kernel for these tensors."""
    return (features.device.type == "cpu" and weight.device.type == "cpu"
            and features.dtype in (torch.float32, torch.float64) and weight.dtype == features.dtype
            and os.environ.get(ENV_FUSED, "1") != "0" and numba_available())


def depthwise_conv(features: torch.Tensor, weight: torch.Tensor, kmap: KernelMap | NeighborMap) -> torch.Tensor:
    """Depthwise conv ``out[o, c*m + j] += features[i, c] * W[c*m + j, 0, k]`` on a kernel map.

    Fused numba kernel when :func:`use_fused` (CPU, float32 / float64), else the torch reference.

    Args:
        features: ``(N_in, C)``.
        weight: ``(C * m, 1, *kernel)``, torch's layout for ``groups = C`` with channel multiplier ``m``.
        kmap: a :class:`KernelMap` or its :class:`NeighborMap` form.

    Returns:
        ``(N_out, C * m)``.
    """
    if use_fused(features, weight):
        nmap = kmap if isinstance(kmap, NeighborMap) else kmap.neighbors()
        return fused_depthwise_conv(features, weight, nmap)
    if isinstance(kmap, NeighborMap):
        raise TypeError("the reference depthwise kernel needs a KernelMap (pair lists), got a NeighborMap")
    return depthwise_conv_reference(features, weight, kmap)


def is_depthwise(in_chs: int, groups: int) -> bool:
    """Whether a conv with these groups runs on the depthwise kernel."""
    return groups == in_chs and groups > 1


# ------------------------------------------------------------------------------------ dispatching
def _add_bias(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return out if bias is None else out + bias


def _subm_neighbors(ctx: CoordinateContext, ks) -> NeighborMap:
    """Cached submanifold NeighborMap of ``ctx`` (the fused depthwise kernel's layout)."""
    return ctx.get(("torch", "subm-nbr", ks), lambda: build_subm_neighbors(ctx, ks))


def _subm_map(ctx: CoordinateContext, ks, impl: str):
    """Cached submanifold map of ``ctx`` (a KernelMap, or an spconv rulebook)."""
    if impl == "torch":
        def build():
            if ctx.indices.device.type == "cpu" and numba_available():
                # one numba hash lookup, shared with the fused depthwise convs on these coordinates
                return subm_map_from_neighbors(_subm_neighbors(ctx, ks))
            return build_subm_map(ctx, ks)

        return ctx.get(("torch", "subm", ks), build)
    sp = _spconv()
    return ctx.get(("spconv", "subm", ks), lambda: sp.build_rulebook(ctx, ks, subm=True)[0])


def _conv_map(ctx: CoordinateContext, ks, stride, padding, impl: str):
    """Cached ``(map, output context)`` of a regular conv on ``ctx``."""

    def build():
        if impl == "torch":
            fwd, out_ctx = build_conv_map(ctx, ks, stride, padding)
            inv = fwd.transposed()
        else:
            fwd, out_ctx = _spconv().build_rulebook(ctx, ks, stride=stride, padding=padding, subm=False)
            inv = fwd  # spconv runs the same rulebook with inverse=True
        # The output coordinates remember how they were made, for the inverse conv.
        out_ctx.maps[(impl, "inverse", ks, stride, padding)] = (inv, ctx)
        return fwd, out_ctx

    return ctx.get((impl, "conv", ks, stride, padding), build)


def _apply(features: torch.Tensor, weight: torch.Tensor, kmap, groups: int, impl: str, *, subm: bool,
           inverse: bool = False) -> torch.Tensor:
    if impl == "spconv":
        return _spconv().apply_conv(features, weight, kmap, groups, subm=subm, inverse=inverse)
    if is_depthwise(features.shape[1], groups):
        return depthwise_conv(features, weight, kmap)
    if groups > 1:
        weight = _block_diagonal(weight, groups)
    return dense_channel_conv(features, weight, kmap)


def _check_input(x: SparseTensor, weight: torch.Tensor, groups: int) -> None:
    if not isinstance(x, SparseTensor):
        raise TypeError(f"sparse convs take a SparseTensor, got {type(x).__name__}")
    if x.num_channels != weight.shape[1] * groups:
        raise ValueError(f"conv expects {weight.shape[1] * groups} input channels, got {x.num_channels}")


def sparse_conv3d(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                  stride=(1, 1, 1), padding=(0, 0, 0), groups: int = 1, subm: bool = False,
                  impl: str | None = None) -> SparseTensor:
    """Submanifold (``subm=True``: outputs at the input sites, 'same' padding) or regular sparse conv.

    Args:
        x: input.
        weight: ``(C_out, C_in // groups, kd, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride: regular conv stride (3 ints). Ignored for ``subm``.
        padding: regular conv zero padding (3 ints). Ignored for ``subm``.
        groups: 1, ``C_in`` (depthwise, channel multiplier allowed) or any divisor.
        subm: submanifold conv.
        impl: ``"torch"`` or ``"spconv"`` (default: :func:`resolve_impl`).

    Returns:
        Submanifold: same coordinates (and map cache) as ``x``. Regular: the output sites (the
        non-zero support of the dense conv), a new coordinate set whose context remembers the map
        for :func:`sparse_inverse_conv3d`.
    """
    impl = resolve_impl(impl)
    _check_input(x, weight, groups)
    ks = tuple(weight.shape[2:])
    if subm:
        if ks == (1, 1, 1):
            # Pointwise: no neighbours, no map.
            w = weight if groups == 1 else _block_diagonal(weight, groups)
            return x.replace_feature(_add_bias(x.features @ w.flatten(1).t(), bias))
        if impl == "torch" and is_depthwise(x.num_channels, groups) and use_fused(x.features, weight):
            kmap = _subm_neighbors(x.coords, ks)  # the pair lists are never built for these
        else:
            kmap = _subm_map(x.coords, ks, impl)
        return x.replace_feature(_add_bias(_apply(x.features, weight, kmap, groups, impl, subm=True), bias))
    stride, padding = tuple(stride), tuple(padding)
    kmap, out_ctx = _conv_map(x.coords, ks, stride, padding, impl)
    out = _apply(x.features, weight, kmap, groups, impl, subm=False)
    return SparseTensor._derive(_add_bias(out, bias), out_ctx)


def _find_inverse(x: SparseTensor, ref: SparseTensor | None, impl: str, ks, stride, padding):
    """``(map read backwards, fine coordinates)`` for an inverse conv of ``x``."""
    key = (impl, "inverse", ks, stride, padding)
    if ref is None:
        entry = x.coords.maps.get(key)
        if entry is None:
            raise ValueError(
                f"no {impl!r} map of a sparse conv with kernel {ks}, stride {stride}, padding {padding} is cached "
                "for x: apply the inverse conv to the output (or a same-coordinate derivative) of that "
                "SparseConv3d, run both with the same impl, or pass ref= (the strided conv's input)")
        return entry
    if not isinstance(ref, SparseTensor):
        raise TypeError(f"ref must be a SparseTensor, got {type(ref).__name__}")
    _, out_ctx = _conv_map(ref.coords, ks, stride, padding, impl)
    if not same_coordinates(out_ctx, x.coords):
        raise ValueError(f"x's coordinates are not the output sites of a sparse conv of ref with kernel {ks}, "
                         f"stride {stride}, padding {padding} (impl {impl!r})")
    return out_ctx.maps[key]


def sparse_inverse_conv3d(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                          stride=(2, 2, 2), padding=(0, 0, 0), groups: int = 1, impl: str | None = None,
                          ref: SparseTensor | None = None) -> SparseTensor:
    """Inverse of a regular sparse conv: maps its output sites back onto its input sites.

    Reuses the forward conv's kernel map read backwards, so the result lands exactly on the
    encoder's coordinates (and shares their map cache) and can be summed with a skip connection.
    On those sites it equals ``conv_transpose3d(x.dense(), weight.transpose(0, 1), stride, padding,
    output_padding)`` (groups=1; the weight keeps the conv layout ``(C_out, C_in // groups, *k)``).

    Args:
        x: output of ``sparse_conv3d(..., stride, padding)`` with a kernel of the same size, or a
            tensor with the same coordinates.
        weight: ``(C_out, C_in // groups, kd, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride: the forward conv's stride.
        padding: the forward conv's padding.
        groups: as in :func:`sparse_conv3d`.
        impl: must be the implementation the forward conv used.
        ref: the forward conv's input; only needed when ``x`` does not carry the map.
    """
    impl = resolve_impl(impl)
    _check_input(x, weight, groups)
    ks, stride, padding = tuple(weight.shape[2:]), tuple(stride), tuple(padding)
    kmap, fine_ctx = _find_inverse(x, ref, impl, ks, stride, padding)
    out = _apply(x.features, weight, kmap, groups, impl, subm=False, inverse=True)
    return SparseTensor._derive(_add_bias(out, bias), fine_ctx)
