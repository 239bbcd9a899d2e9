"""The one module of ffnet that imports or calls spconv (``spconv-cu126==2.3.8``). Imported lazily.

``import spconv.pytorch`` takes ~9 s, so :mod:`ffnet.sparse.functional` imports this module only
when an ``impl="spconv"`` conv runs. We use three spconv entry points, all with torch tensors:
``ops.get_indice_pairs`` (rulebooks), ``ops.indice_conv`` and ``ops.indice_conv_backward``
(gather-GEMM-scatter), wrapped in our own autograd Function.

Quirks contained here (environment.md §4, anchors.md §3.4, and measured while writing this):

1. **ConvAlgo.Native on every call.** The default algorithm (MaskImplicitGemm) asks
   ``torch.cuda`` for a stream and fails without a GPU. Native runs on CPU and CUDA, and its
   rulebook (pairs per kernel offset) is what our depthwise kernel reads.
2. **No grouped conv** (spconv asserts ``groups == 1``, traveller59/spconv#588). Depthwise convs
   run spconv's rulebook through the shared gather-multiply-``index_add`` kernel
   (:func:`ffnet.sparse.functional.depthwise_conv`); other group counts become a block-diagonal weight.
3. **Half submanifold rulebooks.** Native submanifold rulebooks store only offsets ``0 .. K//2 - 1``;
   the centre is implicit and offset ``K-1-k`` is offset ``k`` with the pair rows swapped.
   :meth:`SpconvRulebook.kernel_map` expands them (and also accepts a full rulebook).
4. **Wrong CPU results with more than one thread** (upstream spconv#679; anchors.md measured errors
   up to 0.5 in ~15-20 % of runs at 2 threads). Every CPU spconv call, forward and backward, runs
   under :func:`_one_thread`, which restores the caller's thread count afterwards.
5. **Raw memory, strides ignored.** spconv reads a tensor's buffer as if it were contiguous;
   ``torch.nonzero`` returns column-major coordinates, which silently gave a garbage rulebook
   (conv error ~20 against the dense reference). Every tensor handed over is made contiguous.
6. **Weight layout.** spconv 2.x keeps ``(out, kd, kh, kw, in)`` (KRSC); we keep torch's layout
   and permute per call, so autograd maps the gradient back.
7. **Bias.** spconv fuses the bias only in inference mode; we always add it ourselves.
8. **Never** call cumm/tensorview numpy helpers (``tv.from_numpy``, ``Point2VoxelCPU3d``): they crash
   the interpreter under numpy 2 with some cumm builds.
9. The CPU-only ``spconv`` wheel (not the locked cu126 one) asks for a CUDA stream in backward;
   patched below only when that wheel is the one installed and there is no GPU.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from spconv.core import ConvAlgo
from spconv.pytorch import ops
from torch.autograd.function import once_differentiable

from .functional import _block_diagonal, depthwise_conv, is_depthwise
from .maps import KernelMap, conv_output_shape, make_map, mirrored_subm_map
from .tensor import CoordinateContext

__all__ = ["ALGO", "SpconvRulebook", "build_rulebook", "apply_conv"]

ALGO = ConvAlgo.Native

if getattr(ops, "GEMM_CPP", True) is None and not torch.cuda.is_available():
    # Quirk 9: the CPU-only wheel's Python GEMM path calls get_current_stream() unconditionally.
    ops.get_current_stream = lambda: 0


@contextmanager
def _one_thread(device: torch.device):
    """Runs the block with one intra-op thread on CPU (quirk 4: spconv#679), then restores the count."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass(eq=False)
class SpconvRulebook:
    """spconv's native rulebook: ``pairs[0, k, j] -> pairs[1, k, j]`` for ``j < pair_num[k]``."""

    pairs: torch.Tensor  # (2, K, N_in) int32
    pair_num: torch.Tensor  # (K,) int32
    num_in: int
    num_out: int
    subm: bool
    _kmap: KernelMap | None = None

    def kernel_map(self) -> KernelMap:
        """The rulebook as a :class:`~ffnet.sparse.maps.KernelMap` (built once), for the depthwise kernel."""
        if self._kmap is None:
            self._kmap = _to_kernel_map(self)
        return self._kmap


def _to_kernel_map(rb: SpconvRulebook) -> KernelMap:
    volume = rb.pairs.shape[1]
    counts = rb.pair_num.tolist()
    centre = volume // 2
    n = rb.num_in
    pairs = rb.pairs.long()
    # Quirk 3: a half submanifold rulebook has no centre pairs although the centre is connected.
    half = rb.subm and volume > 1 and n > 0 and counts[centre] == 0
    used = centre if half else volume
    valid = torch.arange(pairs.shape[2], device=pairs.device)[None] < rb.pair_num[:used, None].long()  # (K', N)
    in_idx = pairs[0, :used][valid]  # row-major: sorted by offset
    out_idx = pairs[1, :used][valid]
    if half:
        return mirrored_subm_map(in_idx, out_idx, counts[:used], n)
    return make_map(in_idx, out_idx, counts, n, rb.num_out, None)


def build_rulebook(ctx: CoordinateContext, kernel_size, *, stride=(1, 1, 1), padding=None,
                   subm: bool) -> tuple[SpconvRulebook, CoordinateContext]:
    """spconv rulebook of a submanifold or regular conv on ``ctx``, and the output coordinates."""
    n = ctx.num_points
    if subm:
        stride, padding, out_shape = (1, 1, 1), tuple(k // 2 for k in kernel_size), ctx.spatial_shape
    else:
        out_shape = conv_output_shape(ctx.spatial_shape, kernel_size, stride, padding)
    volume = int(torch.tensor(kernel_size).prod())
    device = ctx.indices.device
    if n == 0:
        # spconv does not handle empty inputs; an empty rulebook says the same.
        empty = SpconvRulebook(torch.zeros(2, volume, 0, dtype=torch.int32, device=device),
                               torch.zeros(volume, dtype=torch.int32, device=device), 0, 0, subm)
        out_ctx = ctx if subm else CoordinateContext(ctx.indices, out_shape, ctx.batch_size)
        return empty, out_ctx
    indices = ctx.indices.contiguous()  # quirk 5
    with _one_thread(device):
        out_inds, pairs, pair_num = ops.get_indice_pairs(
            indices, ctx.batch_size, list(ctx.spatial_shape), ALGO, list(kernel_size), list(stride), list(padding),
            [1, 1, 1], [0, 0, 0], subm=subm, transpose=False)
    if subm:
        return SpconvRulebook(pairs, pair_num, n, n, True), ctx
    # out_inds is a view into a larger buffer; clone so the buffer can be freed.
    out_ctx = CoordinateContext(out_inds.contiguous().clone(), out_shape, ctx.batch_size)
    return SpconvRulebook(pairs, pair_num, n, out_inds.shape[0], False), out_ctx


class _IndiceConv(torch.autograd.Function):
    """spconv's native gather-GEMM-scatter with the single-thread guard in forward and backward."""

    @staticmethod
    def forward(ctx, features, filters, pairs, pair_num, num_out: int, inverse: bool, subm: bool):
        ctx.save_for_backward(features, filters, pairs, pair_num)
        ctx.inverse, ctx.subm = inverse, subm
        with _one_thread(features.device):
            return ops.indice_conv(features, filters, pairs, pair_num, num_out, inverse, subm, algo=ALGO)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        features, filters, pairs, pair_num = ctx.saved_tensors
        with _one_thread(features.device):
            d_features, d_filters = ops.indice_conv_backward(features, filters, grad_out.contiguous(), pairs,
                                                             pair_num, ctx.inverse, ctx.subm, algo=ALGO)
        return d_features, d_filters, None, None, None, None, None


def apply_conv(features: torch.Tensor, weight: torch.Tensor, rb: SpconvRulebook, groups: int, *, subm: bool,
               inverse: bool = False) -> torch.Tensor:
    """Applies a torch-layout ``(out, in // groups, *k)`` weight through an spconv rulebook.

    ``inverse`` runs the rulebook backwards (outputs on the rulebook's input sites).
    """
    if is_depthwise(features.shape[1], groups):
        kmap = rb.kernel_map()
        return depthwise_conv(features, weight, kmap.transposed() if inverse else kmap)
    if groups > 1:
        weight = _block_diagonal(weight, groups)
    num_out = rb.num_in if inverse else rb.num_out
    if features.shape[0] == 0 or num_out == 0:
        return features.new_zeros(num_out, weight.shape[0])
    filters = weight.permute(0, 2, 3, 4, 1).contiguous()  # quirk 6: (out, kd, kh, kw, in)
    return _IndiceConv.apply(features.contiguous(), filters, rb.pairs, rb.pair_num, num_out, inverse, subm)
