"""Sparse 3D convolutions for voxel data: one tensor type, two implementations, one module API.

Two implementations sit behind every conv, chosen by ``impl="torch" | "spconv"`` (per module, per
backend or per call). The default is ``$FFNET_SPARSE_IMPL``, else ``"spconv"`` when CUDA is
available and spconv is installed, else ``"torch"``:

* ``"torch"``: pure PyTorch (int64 coordinate keys + sort + searchsorted neighbour maps,
  gather-GEMM-scatter). Runs on CPU and CUDA; autograd through plain torch ops.
* ``"spconv"``: spconv 2.3 rulebooks and kernels (``pip install ffnet-core[sparse]``; imported only
  on first use, ~9 s). Every spconv call and quirk lives in :mod:`ffnet.sparse._spconv_compat`.

Both give the same results (tested against dense ``conv3d`` and against each other), and weights use
torch's conv layout, so state dicts move between implementations and to dense ``nn.Conv3d``.

Stable API (the pointcloud package builds on these names)::

    from ffnet.sparse import (
        SparseTensor,          # SparseTensor(features (N, C) float, indices (N, 4) int32 [b, z, y, x],
                               #              spatial_shape (D, H, W), batch_size, *, check=True)
                               #   .features .indices .spatial_shape .batch_size .num_points .num_channels
                               #   .replace_feature(f) .dense() -> (B, C, D, H, W) .to(...) .detach()
                               #   SparseTensor.from_dense(x (B, C, D, H, W), mask=None)
                               #   x + y (same coordinates), x + tensor/number, x * gamma
                               #   .cache (read-only kernel-map cache, shared by same-coordinate tensors)
        to_bev,                # to_bev(x) -> (B, C * D, H, W) bird's-eye-view map
        SubMConv3d,            # SubMConv3d(in, out, kernel_size=3, groups=1, bias=True, *, impl=None)
        SparseConv3d,          # SparseConv3d(in, out, kernel_size=3, stride=2, padding=0, groups=1, bias=True, *, impl=None)
        SparseInverseConv3d,   # SparseInverseConv3d(in, out, kernel_size=3, stride=2, padding=0, groups=1, bias=True,
                               #                     *, impl=None); forward(x, ref=None)
        SparseBatchNorm,       # BatchNorm1d on features
        SparseGELU, SparseLinear, SparseLayerScale, SparseDropPath,  # feature-wise; DropPath per batch index
        FeatureWise,           # FeatureWise(any (N, C) module)
        sparse_add,            # sparse_add(x, y) == x + y
        sparse_conv3d, sparse_inverse_conv3d,  # functional forms (weight, bias, stride, padding, groups, subm, impl)
        resolve_impl,          # resolve_impl(None | "torch" | "spconv") -> the implementation that would be used
        SparseBackend,         # the "sparse3d" Backend (also ffnet.layers.get_backend("sparse3d", impl=...))
    )

Depthwise large-kernel convs (what FFNified attention needs and spconv lacks) are
``SubMConv3d(C, C * m, k, groups=C)`` for any odd ``k`` (3, 5, 7, ...) and channel multiplier ``m``;
strided ones are ``SparseConv3d(C, C * m, k, stride, k // 2, groups=C)``.

Conventions: coordinates are ``[batch, z, y, x]`` and ``dense()`` is ``(B, C, D, H, W)``, spconv's
layout. Convs are cross-correlations with ``conv3d``'s geometry. A submanifold conv keeps its
input's coordinates (and map cache); a strided conv creates new coordinates whose context
remembers the map, which :class:`SparseInverseConv3d` reuses. Kernel maps are cached per coordinate
set, keyed by ``(impl, kind, kernel, stride, padding)``, and built once per forward pass of a
network on a new input.
"""
from .conv import SparseConv3d, SparseInverseConv3d, SubMConv3d
from .functional import ENV_IMPL, IMPLS, resolve_impl, sparse_conv3d, sparse_inverse_conv3d
from .modules import (
    FeatureWise,
    SparseBatchNorm,
    SparseDropPath,
    SparseGELU,
    SparseLayerScale,
    SparseLinear,
    drop_path_per_sample,
    sparse_add,
)
from .tensor import SparseTensor, to_bev

__all__ = [
    "SparseTensor", "to_bev", "SubMConv3d", "SparseConv3d", "SparseInverseConv3d", "SparseBatchNorm", "SparseGELU",
    "SparseLinear", "SparseLayerScale", "SparseDropPath", "FeatureWise", "sparse_add", "drop_path_per_sample",
    "sparse_conv3d", "sparse_inverse_conv3d", "resolve_impl", "IMPLS", "ENV_IMPL", "SparseBackend",
]


def __getattr__(name: str):
    # Lazy: the backend imports ffnet.layers, which itself imports this package lazily.
    if name == "SparseBackend":
        from .backend import SparseBackend

        return SparseBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
