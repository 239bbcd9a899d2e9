"""FFNet-3D detector: sparse FFNet encoder -> BEV -> 2D FFNet neck -> CenterPoint-style head.

FFNet (MetaMixer / FFNified attention), arXiv 2406.02021. The official 3D release is indoor
semantic segmentation whose "sparse FFNified attention" uses plain dense-channel 3x3x3
submanifold convs (spec §4.1). Here:

* ``mixer="dw"`` (default): each encoder block is core's :class:`ffnet.layers.FFNetBlock` on the
  ``sparse3d`` backend, i.e. *true* FFNified attention: 1x1 query projection, depthwise
  large-kernel (5^3 / 7^3, with a parallel 3^3 re-parameterizable branch) submanifold key and
  value convs, GELU in between, then the ConvNeXt-like channel mixer; no pre-norm (BN inside).
* ``mixer="dense3"``: the official release's block (pre-LayerNorm, Linear query projection,
  dense-channel 3^3 SubMConv3d key / value convs with BN, 3^3 conv + MLP channel mixer).
* BEV neck: core's FFNetBlock on the ``2d`` backend over two scales, upsampled and concatenated.
* Head: CenterPoint-style anchor-free heads (class heatmaps, centre offset, z, log size, sin/cos
  yaw) on the neck's output grid; targets, loss and decoding are in :mod:`ffnet_3d.centerpoint`.

The SECOND-style baseline (``name="second"``) swaps the encoder for a VoxelBackBone8x-shaped
stack (SubM 3^3 + strided sparse convs, BN, ReLU) and the neck for SECOND's plain conv RPN; the
head is the same. Both use core's ``ffnet.sparse`` convs, so the comparison shares one sparse
implementation (pure PyTorch on CPU, spconv on CUDA).
"""

from __future__ import annotations

import math

import torch
from ffnet.sparse import (
    FeatureWise,
    SparseBatchNorm,
    SparseConv3d,
    SparseGELU,
    SparseLinear,
    SparseTensor,
    SubMConv3d,
    to_bev,
)
from torch import nn

from .config import Config, ModelConfig
from .voxelize import grid_size

__all__ = ["Detector", "build_detector", "SparseFFNetEncoder", "SecondEncoder", "FFNetNeck", "SecondNeck",
           "CenterHead", "OfficialSparseFFBlock", "count_parameters"]

HEAD_CHANNELS = {"reg": 2, "height": 1, "dim": 3, "rot": 2, "dir": 1}


def _sparse_bn(c: int) -> SparseBatchNorm:
    return SparseBatchNorm(c, eps=1e-3, momentum=0.01)


class SparseReLU(nn.ReLU):
    def forward(self, x):
        return x.replace_feature(super().forward(x.features)) if isinstance(x, SparseTensor) else super().forward(x)


def _conv_out_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


# ====================================================================================== blocks
class SparseConvBNAct(nn.Sequential):
    """Sparse conv (no bias) -> BN -> activation; submanifold when ``stride == 1 and subm``."""

    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1, padding=1, *, subm=True, act="gelu", impl=None):
        if subm:
            conv = SubMConv3d(in_chs, out_chs, kernel_size, bias=False, impl=impl)
        else:
            conv = SparseConv3d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=False, impl=impl)
        layers = [conv, _sparse_bn(out_chs)]
        if act == "gelu":
            layers.append(SparseGELU())
        elif act == "relu":
            layers.append(SparseReLU())
        super().__init__(*layers)


class OfficialSparseFFBlock(nn.Module):
    """The official release's sparse FFBlock (dense-channel 3^3 SubMConv3d), re-implemented from spec §4.1.

    ``f = f + dp(BN(SubM3(GELU(BN(SubM3(Linear(LN(f))))))))``;
    ``f = f + dp(MLP(BN(SubM3(LN(f)))))`` with MLP = Linear(C -> rC) -> GELU -> Linear(rC -> C).
    DropPath here is per sample (batch index), like core's, not per point as in the official code.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, impl: str | None = None):
        super().__init__()
        from ffnet.sparse import SparseDropPath

        hidden = int(round(dim * mlp_ratio))
        self.norm1 = FeatureWise(nn.LayerNorm(dim))
        self.token_mixer = nn.Sequential(
            SparseLinear(dim, dim),
            SubMConv3d(dim, dim, 3, impl=impl), _sparse_bn(dim), SparseGELU(),
            SubMConv3d(dim, dim, 3, impl=impl), _sparse_bn(dim),
        )
        self.norm2 = FeatureWise(nn.LayerNorm(dim))
        self.channel_mixer = nn.Sequential(
            SubMConv3d(dim, dim, 3, impl=impl), _sparse_bn(dim),
            SparseLinear(dim, hidden), SparseGELU(), SparseLinear(hidden, dim),
        )
        self.drop_path = SparseDropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = x + self.drop_path(self.token_mixer(self.norm1(x)))
        x = x + self.drop_path(self.channel_mixer(self.norm2(x)))
        return x


# ===================================================================================== encoders
class SparseFFNetEncoder(nn.Module):
    """Sparse FFNet encoder: stem -> 4 stages (strides 1, 2, 4, 8) -> z-compressing conv -> BEV.

    Args:
        in_chs: voxel feature channels.
        sparse_shape: ``(D, H, W)`` of the voxel grid.
        stem_chs: channels of the 3^3 submanifold stem.
        dims: channels per stage.
        depths: blocks per stage.
        kernel_sizes: token-mixer depthwise kernel per stage (``mixer="dw"``).
        cm_kernel_size: channel-mixer depthwise kernel.
        mlp_ratio: channel-mixer expansion.
        mixer: ``"dw"`` (depthwise large-kernel FFNified attention) or ``"dense3"`` (official block).
        drop_path_rate: stochastic depth, linearly spaced over all blocks.
        bev_chs: output channels of the z-compressing conv (BEV channels = bev_chs x remaining D).
        impl: sparse implementation (``"torch"`` / ``"spconv"`` / None).
    """

    def __init__(self, in_chs, sparse_shape, stem_chs=16, dims=(16, 32, 64, 64), depths=(1, 2, 2, 2),
                 kernel_sizes=(3, 3, 5, 7), cm_kernel_size=3, mlp_ratio=2.0, mixer="dw", drop_path_rate=0.0,
                 bev_chs=128, impl=None):
        super().__init__()
        from ffnet.layers import FFNetBlock, get_backend

        if mixer not in ("dw", "dense3"):
            raise ValueError(f"mixer must be 'dw' or 'dense3', got {mixer!r}")
        backend = get_backend("sparse3d", impl=impl)
        self.sparse_shape = tuple(int(s) for s in sparse_shape)
        self.stem = SparseConvBNAct(in_chs, stem_chs, 3, act="gelu", impl=impl)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.downsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev = stem_chs
        d, h, w = self.sparse_shape
        k_i = 0
        for i, (dim, depth, ks) in enumerate(zip(dims, depths, kernel_sizes)):
            if i == 0:
                self.downsamples.append(SparseConvBNAct(prev, dim, 3, act="gelu", impl=impl) if prev != dim
                                        else nn.Identity())
            else:  # FFNet's downsampler has no activation; here a strided dense-channel sparse conv + BN
                self.downsamples.append(SparseConvBNAct(prev, dim, 3, stride=2, padding=1, subm=False, act=None,
                                                        impl=impl))
                d, h, w = (_conv_out_size(n, 3, 2, 1) for n in (d, h, w))
            blocks = []
            for _ in range(depth):
                if mixer == "dw":
                    blocks.append(FFNetBlock(
                        dim, kernel_size=ks, small_kernel=3 if ks > 3 else None, cm_kernel_size=cm_kernel_size,
                        cm_small_kernel=3 if cm_kernel_size > 3 else None, mlp_ratio=mlp_ratio,
                        drop_path=dpr[k_i], backend=backend))
                else:
                    blocks.append(OfficialSparseFFBlock(dim, mlp_ratio, dpr[k_i], impl=impl))
                k_i += 1
            self.stages.append(nn.Sequential(*blocks))
            prev = dim
        # compress height like SECOND's conv_out: kernel (3, 1, 1), stride (2, 1, 1), no padding
        self.conv_out = nn.Sequential(
            SparseConv3d(prev, bev_chs, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False, impl=impl),
            _sparse_bn(bev_chs), SparseGELU())
        d = _conv_out_size(d, 3, 2, 0)
        if d < 1:
            raise ValueError(f"voxel grid too shallow in z for the encoder: {self.sparse_shape}")
        self.out_shape = (d, h, w)
        self.out_chs = bev_chs * d
        self.stride = 2 ** (len(dims) - 1)

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        x = self.stem(x)
        for down, stage in zip(self.downsamples, self.stages):
            x = stage(down(x))
        return self.conv_out(x)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return to_bev(self.forward_features(x))  # (B, bev_chs * D', H / 8, W / 8)


class SecondEncoder(nn.Module):
    """SECOND / OpenPCDet ``VoxelBackBone8x``-shaped sparse encoder (BN + ReLU, dense-channel 3^3).

    conv_input SubM(in -> c0); conv1: 1 x SubM(c0); conv2..4: SpConv(stride 2) + 2 x SubM;
    conv_out: SpConv (3, 1, 1) / (2, 1, 1) -> ``bev_chs``. ``dims`` = channels of conv1..conv4.
    """

    def __init__(self, in_chs, sparse_shape, stem_chs=16, dims=(16, 32, 64, 64), bev_chs=128, impl=None, **_):
        super().__init__()
        self.sparse_shape = tuple(int(s) for s in sparse_shape)
        d, h, w = self.sparse_shape
        self.stem = SparseConvBNAct(in_chs, stem_chs, 3, act="relu", impl=impl)
        self.stages = nn.ModuleList()
        prev = stem_chs
        for i, dim in enumerate(dims):
            layers = []
            if i == 0:
                layers.append(SparseConvBNAct(prev, dim, 3, act="relu", impl=impl))
            else:
                # VoxelBackBone8x: conv4 has no z padding (kept when the grid is deep enough for conv_out)
                pz = 0 if i == 3 and _conv_out_size(_conv_out_size(d, 3, 2, 0), 3, 2, 0) >= 1 else 1
                layers.append(SparseConvBNAct(prev, dim, 3, stride=2, padding=(pz, 1, 1), subm=False, act="relu",
                                              impl=impl))
                d, h, w = _conv_out_size(d, 3, 2, pz), _conv_out_size(h, 3, 2, 1), _conv_out_size(w, 3, 2, 1)
                layers += [SparseConvBNAct(dim, dim, 3, act="relu", impl=impl) for _ in range(2)]
            self.stages.append(nn.Sequential(*layers))
            prev = dim
        self.conv_out = nn.Sequential(
            SparseConv3d(prev, bev_chs, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False, impl=impl),
            _sparse_bn(bev_chs), SparseReLU())
        d = _conv_out_size(d, 3, 2, 0)
        if d < 1:
            raise ValueError(f"voxel grid too shallow in z for the encoder: {self.sparse_shape}")
        self.out_shape = (d, h, w)
        self.out_chs = bev_chs * d
        self.stride = 8

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(x)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return to_bev(self.forward_features(x))


# ======================================================================================== necks
def _conv_bn_act(in_chs, out_chs, k=3, stride=1, act: type[nn.Module] = nn.GELU):
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(out_chs, eps=1e-3, momentum=0.01), act())


def _up(in_chs, out_chs, factor, act: type[nn.Module]):
    if factor == 1:
        return _conv_bn_act(in_chs, out_chs, 1, act=act)
    return nn.Sequential(nn.ConvTranspose2d(in_chs, out_chs, factor, factor, bias=False),
                         nn.BatchNorm2d(out_chs, eps=1e-3, momentum=0.01), act())


class _TwoScaleNeck(nn.Module):
    """Shared layout: level i at stride 2^i (conv stride 2 between levels), each upsampled by
    ``up_strides[i]`` and concatenated. Output stride = BEV stride / ``up_strides[0]``."""

    def __init__(self, in_chs, dims, up_dims, up_strides, make_blocks, act):
        super().__init__()
        if not (len(dims) == len(up_dims) == len(up_strides)):
            raise ValueError("neck dims, up dims and up strides need one entry per level")
        for i, s in enumerate(up_strides):
            if s != up_strides[0] * 2 ** i:
                raise ValueError(f"neck_up_strides must double per level, got {up_strides}")
        self.levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        prev = in_chs
        for i, (dim, up_dim, up_s) in enumerate(zip(dims, up_dims, up_strides)):
            self.levels.append(nn.Sequential(_conv_bn_act(prev, dim, 3, 1 if i == 0 else 2, act=act),
                                             *make_blocks(i, dim)))
            self.ups.append(_up(dim, up_dim, up_s, act))
            prev = dim
        self.out_chs = sum(up_dims)
        self.upsample = up_strides[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for level, up in zip(self.levels, self.ups):
            x = level(x)
            outs.append(up(x))
        h = min(o.shape[-2] for o in outs)
        w = min(o.shape[-1] for o in outs)
        return torch.cat([o[..., :h, :w] for o in outs], dim=1)  # (B, sum(up_dims), H', W')


class FFNetNeck(_TwoScaleNeck):
    """2D FFNet neck: core's FFNetBlock (backend "2d") at two BEV scales."""

    def __init__(self, in_chs, dims=(128, 256), depths=(2, 2), kernel_size=7, mlp_ratio=2.0, up_dims=(128, 128),
                 up_strides=(1, 2)):
        from ffnet.layers import FFNetBlock

        def blocks(i, dim):
            return [FFNetBlock(dim, kernel_size=kernel_size, small_kernel=3 if kernel_size > 3 else None,
                               cm_kernel_size=3, cm_small_kernel=None, mlp_ratio=mlp_ratio, backend="2d")
                    for _ in range(depths[i])]

        super().__init__(in_chs, dims, up_dims, up_strides, blocks, nn.GELU)


class SecondNeck(_TwoScaleNeck):
    """SECOND's RPN (OpenPCDet ``BaseBEVBackbone``): plain 3x3 conv + BN + ReLU stacks."""

    def __init__(self, in_chs, dims=(128, 256), depths=(5, 5), up_dims=(256, 256), up_strides=(1, 2), **_):
        def blocks(i, dim):
            return [_conv_bn_act(dim, dim, 3, act=nn.ReLU) for _ in range(depths[i])]

        super().__init__(in_chs, dims, up_dims, up_strides, blocks, nn.ReLU)


# ========================================================================================= head
class CenterHead(nn.Module):
    """CenterPoint-style head: shared 3x3 conv, then per-task 3x3 -> 1x1 branches.

    Outputs (channels): ``hm`` (num_classes, logits), ``reg`` (2, sub-cell centre offset),
    ``height`` (1, box centre z in metres), ``dim`` (3, log of l, w, h), ``rot`` (2, sin 2a, cos 2a
    of the box axis a = yaw mod pi), ``dir`` (1, logit: yaw = a rather than a + pi).
    """

    def __init__(self, in_chs: int, num_classes: int, head_chs: int = 64, prior: float = 0.1):
        super().__init__()
        self.shared = _conv_bn_act(in_chs, head_chs, 3, act=nn.ReLU)
        self.heads = nn.ModuleDict()
        for name, out in {"hm": num_classes, **HEAD_CHANNELS}.items():
            self.heads[name] = nn.Sequential(_conv_bn_act(head_chs, head_chs, 3, act=nn.ReLU),
                                             nn.Conv2d(head_chs, out, 1))
        nn.init.constant_(self.heads["hm"][-1].bias, -math.log((1 - prior) / prior))  # -2.19

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.shared(x)
        return {name: head(x) for name, head in self.heads.items()}


# ===================================================================================== detector
class Detector(nn.Module):
    """Voxels -> sparse encoder -> BEV -> neck -> CenterHead.

    ``forward(voxel_features (N, C), voxel_coords (N, 4) int32 [b, z, y, x], batch_size)`` returns
    the head's dict of dense maps on the output grid (``feature_map_stride`` voxels per cell).
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        m: ModelConfig = cfg.model
        d = cfg.data
        nx, ny, nz = (int(v) for v in grid_size(d.voxel_size, d.point_cloud_range))
        self.sparse_shape = (nz + 1, ny, nx)  # +1 in z, as SECOND / OpenPCDet
        pr = torch.tensor(d.point_cloud_range, dtype=torch.float32)
        self.register_buffer("feat_center", torch.cat([(pr[:3] + pr[3:]) / 2, torch.zeros(m.in_chs - 3)]),
                             persistent=False)
        self.register_buffer("feat_scale", torch.cat([(pr[3:] - pr[:3]) / 2, torch.ones(m.in_chs - 3)]),
                             persistent=False)
        if m.name == "ffnet3d":
            self.encoder = SparseFFNetEncoder(m.in_chs, self.sparse_shape, m.stem_chs, m.dims, m.depths,
                                              m.kernel_sizes, m.cm_kernel_size, m.mlp_ratio, m.mixer,
                                              m.drop_path_rate, m.bev_chs, impl=m.sparse_impl)
            self.neck = FFNetNeck(self.encoder.out_chs, m.neck_dims, m.neck_depths, m.neck_kernel_size, m.mlp_ratio,
                                  m.neck_up_dims, m.neck_up_strides)
        elif m.name == "second":
            self.encoder = SecondEncoder(m.in_chs, self.sparse_shape, m.stem_chs, m.dims, m.bev_chs,
                                         impl=m.sparse_impl)
            self.neck = SecondNeck(self.encoder.out_chs, m.neck_dims, m.neck_depths, m.neck_up_dims,
                                   m.neck_up_strides)
        else:
            raise ValueError(f"unknown model name {m.name!r} (expected 'ffnet3d' or 'second')")
        self.head = CenterHead(self.neck.out_chs, len(d.classes), m.head_chs)
        if self.encoder.stride % self.neck.upsample:
            raise ValueError("neck upsampling must divide the encoder stride")
        self.feature_map_stride = self.encoder.stride // self.neck.upsample
        # reduction in voxels of the grid (timm's feature_info convention)
        self.feature_info = [dict(num_chs=self.encoder.out_chs, reduction=self.encoder.stride, module="encoder"),
                             dict(num_chs=self.neck.out_chs, reduction=self.feature_map_stride, module="neck")]
        self.out_size = (  # (H, W) of the head maps
            math.ceil(ny / self.encoder.stride) * self.neck.upsample,
            math.ceil(nx / self.encoder.stride) * self.neck.upsample,
        )

    def forward_features(self, voxel_features, voxel_coords, batch_size: int) -> torch.Tensor:
        feats = (voxel_features - self.feat_center) / self.feat_scale  # xyz roughly in [-1, 1]
        x = SparseTensor(feats, voxel_coords.int(), self.sparse_shape, batch_size)
        return self.neck(self.encoder(x))

    def forward_head(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(x)

    def forward(self, voxel_features, voxel_coords, batch_size: int) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(voxel_features, voxel_coords, batch_size))


def build_detector(cfg: Config) -> Detector:
    return Detector(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
