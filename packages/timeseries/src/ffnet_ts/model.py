"""FFNet-TS: FFNet / MetaMixer for long-horizon multivariate forecasting.

Paper: "FFNet: MetaMixer-based Efficient Convolutional Mixer Design" (Yun, Lee, Ro; arXiv 2406.02021), the
time-series model of its official release, re-implemented from the project's spec (§2), not from its code.

Pipeline for x (B, L, M): RevIN (no affine) -> per-variable patch stem (replicate-pad the end by
``patch_size - patch_stride``, Conv1d(1 -> D, patch_size, patch_stride) + BN) -> one FFNet-TS block ->
flatten head Linear(D * N -> H) shared over variables -> RevIN denormalization.

The block is two MetaMixers built from core's 1D primitives, on tensors (B, M * D, N) ordered (m, d):

* token mixer (FFNified attention over time): query = cross-variable projection (per feature d a linear map
  M -> 2M, dropout, GELU; per variable a linear map over {2m, 2m + 1} x D -> D, dropout) + BN over D shared
  by the variables; key = depthwise conv (kernel 51, biased); GELU; value = depthwise conv (kernel 51, biased).
* channel mixer: query = RepDW (kernel 51 + parallel kernel 5, each with BN: core's RepDWConv); key =
  BN over D shared by the variables + per-variable Linear D -> r * D + dropout; GELU; value = a
  cross-variable linear map (for every feature d: r hidden channels x M variables -> M) + dropout.

Each mixer is added residually (no layer scale, no drop path). ``ffnet.reparameterize_model`` folds the RepDW
pair, the stem BN and both shared BNs, so the deployed graph is convs and GELUs only. The convs come from
core's dense 1D backend with CPU fast paths (:mod:`ffnet_ts.fastconv`: same parameters, same results; on CPU
the block's activations are stored channel-major and dropout masks come from random bytes).

Differences from the official release (deliberate): modules that the official forward never calls (the
stride-2 downsamplers, time-feature embedding, multi-scale convs, decomposition, per-variable heads) are not
built, so the parameter count is that of the computation actually performed; the small-kernel merge works
in 1D (the official merge helper would fail if called).
"""

from __future__ import annotations

import torch
from ffnet.layers import MetaMixer, RepDWConv
from torch import nn

from . import fastconv
from .baselines import RevIN
from .fastconv import (
    SEQUENCE_BACKEND,
    FastDropout,
    cat_channels,
    channel_major_grad,
    is_channel_major,
    pointwise_conv,
    residual_add,
    swap_channel_groups,
    to_channel_major,
)

__all__ = ["FFNetTS", "LinearBlend", "LinearMap", "create_model", "list_models", "dataset_defaults", "MODEL_VARIANTS",
           "linear_forecast"]


# ---------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------


def linear_forecast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One linear map shared by the variables: (B, L, M) -> (B, H, M), ``weight`` (L, H), ``bias`` (H,)."""
    return (x.transpose(1, 2) @ weight + bias).transpose(1, 2)


def _bn_scale_shift(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _replace_conv(conv: nn.Conv1d, weight: torch.Tensor, bias: torch.Tensor) -> None:
    conv.weight = nn.Parameter(weight.detach().clone())
    conv.bias = nn.Parameter(bias.detach().clone())


class VariableBatchNorm(nn.Module):
    """BatchNorm over the D features of a (B, M * D, N) tensor, statistics shared over B, M and N."""

    def __init__(self, dim: int, n_vars: int):
        super().__init__()
        self.n_vars = n_vars
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        if is_channel_major(x):  # storage (M*D, B, N): M acts as BN's batch axis, B*N as its length
            y = self.bn(x.transpose(0, 1).reshape(self.n_vars, c // self.n_vars, b * n))
            return y.view(c, b, n).transpose(0, 1)
        return self.bn(x.reshape(b * self.n_vars, c // self.n_vars, n)).reshape(b, c, n)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode (scale, shift) per (m, d) channel: y = x * scale + shift."""
        scale, shift = _bn_scale_shift(self.bn)
        return scale.repeat(self.n_vars), shift.repeat(self.n_vars)


class CrossVariableQuery(nn.Module):
    """Token-mixer query projection: a two-layer map across variables and features, then a shared BN.

    Args:
        dim: features D per variable.
        n_vars: variables M.
        expand: expanded variables per variable (2 in the reference).
        drop1 / drop2: dropout after the first / second map (0.3 / 0.15 in the reference).
        inference_mode: build with the BN already folded into the second map.
    """

    def __init__(self, dim: int, n_vars: int, expand: int = 2, drop1: float = 0.3, drop2: float = 0.15, *,
                 inference_mode: bool = False):
        super().__init__()
        be = SEQUENCE_BACKEND
        self.dim, self.n_vars, self.expand = dim, n_vars, expand
        self.fc1 = be.conv(dim * n_vars, dim * n_vars * expand, 1, groups=dim)  # per feature d: M -> eM
        self.drop1 = FastDropout(drop1)
        self.act = be.act()
        self.fc2 = be.conv(dim * n_vars * expand, dim * n_vars, 1, groups=n_vars)  # per variable: e*D -> D
        self.drop2 = FastDropout(drop2)
        self.norm = nn.Identity() if inference_mode else VariableBatchNorm(dim, n_vars)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, d, e = self.n_vars, self.dim, self.expand
        h = swap_channel_groups(x, m, d)  # (B, D*M, N), channels (d, m)
        h = self.act(self.drop1(self.fc1(h)))  # (B, D*eM, N), channels (d, m')
        h = swap_channel_groups(h, d, e * m)  # (B, eM*D, N), channels (m', d)
        h = self.drop2(self.fc2(h))  # (B, M*D, N), channels (m, d)
        return self.norm(h)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the shared BN into ``fc2`` (exact in eval: dropout is the identity there)."""
        if isinstance(self.norm, nn.Identity):
            return
        scale, shift = self.norm.scale_shift()
        w = self.fc2.weight * scale.view(-1, 1, 1)
        b = self.fc2.bias * scale + shift
        _replace_conv(self.fc2, w, b)
        self.norm = nn.Identity()


class VariableFFNIn(nn.Module):
    """Channel-mixer keys: shared BN over D, then a per-variable Linear D -> r * D, then dropout."""

    def __init__(self, dim: int, n_vars: int, ffn_ratio: int, dropout: float, *, inference_mode: bool = False):
        super().__init__()
        self.norm = nn.Identity() if inference_mode else VariableBatchNorm(dim, n_vars)
        self.fc = SEQUENCE_BACKEND.conv(dim * n_vars, dim * n_vars * ffn_ratio, 1, groups=n_vars)
        self.drop = FastDropout(dropout)
        self.n_vars = n_vars

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc(self.norm(x)))  # (B, M*rD, N), channels (m, j)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BN into the following 1x1 conv: W' = W * scale_in, b' = b + W @ shift_in (per group)."""
        if isinstance(self.norm, nn.Identity):
            return
        scale, shift = self.norm.scale_shift()  # per input channel (m, d)
        w = self.fc.weight  # (M*rD, D, 1); group m reads input channels m*D .. (m+1)*D
        out_per_group, in_per_group = w.shape[0] // self.n_vars, w.shape[1]
        scale_in = scale.view(self.n_vars, 1, in_per_group).expand(-1, out_per_group, -1).reshape(-1, in_per_group)
        shift_in = shift.view(self.n_vars, 1, in_per_group).expand(-1, out_per_group, -1).reshape(-1, in_per_group)
        b = self.fc.bias + (w[..., 0] * shift_in).sum(1)
        _replace_conv(self.fc, w * scale_in.unsqueeze(-1), b)
        self.norm = nn.Identity()


class CrossVariableFFNOut(nn.Module):
    """Channel-mixer values: for each feature d, mix its r hidden channels of all M variables into M outputs."""

    def __init__(self, dim: int, n_vars: int, ffn_ratio: int, dropout: float = 0.15):
        super().__init__()
        self.dim, self.n_vars, self.ffn_ratio = dim, n_vars, ffn_ratio
        self.fc = SEQUENCE_BACKEND.conv(dim * ffn_ratio * n_vars, dim * n_vars, 1, groups=dim)
        self.drop = FastDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, d, j = self.n_vars, self.dim, self.dim * self.ffn_ratio
        h = swap_channel_groups(x, m, j)  # (B, rD*M, N), channels (j, m)
        h = self.fc(h)  # (B, D*M, N), channels (d, m)
        h = swap_channel_groups(h, d, m)  # (B, M*D, N), channels (m, d)
        return self.drop(h)


def token_mixer(dim: int, n_vars: int, kernel_size: int = 51, query_expand: int = 2,
                query_dropout: tuple[float, float] = (0.3, 0.15), *, inference_mode: bool = False) -> MetaMixer:
    """FFNified attention over patches with a cross-variable query (spec §2.2)."""
    c = dim * n_vars
    return MetaMixer(
        CrossVariableQuery(dim, n_vars, query_expand, *query_dropout, inference_mode=inference_mode),
        RepDWConv(c, c, kernel_size, norm=False, backend=SEQUENCE_BACKEND, inference_mode=inference_mode),
        SEQUENCE_BACKEND.act(),
        RepDWConv(c, c, kernel_size, norm=False, backend=SEQUENCE_BACKEND, inference_mode=inference_mode),
    )


def channel_mixer(dim: int, n_vars: int, ffn_ratio: int, dropout: float, kernel_size: int = 51,
                  small_kernel: int | None = 5, out_dropout: float = 0.15, *,
                  inference_mode: bool = False) -> MetaMixer:
    """RepDW query, per-variable keys, cross-variable values (spec §2.3)."""
    c = dim * n_vars
    return MetaMixer(
        RepDWConv(c, c, kernel_size, small_kernel, norm=True, backend=SEQUENCE_BACKEND, inference_mode=inference_mode),
        VariableFFNIn(dim, n_vars, ffn_ratio, dropout, inference_mode=inference_mode),
        SEQUENCE_BACKEND.act(),
        CrossVariableFFNOut(dim, n_vars, ffn_ratio, out_dropout),
    )


class FFNetTSBlock(nn.Module):
    def __init__(self, dim: int, n_vars: int, kernel_size: int = 51, small_kernel: int | None = 5,
                 ffn_ratio: int = 2, dropout: float = 0.7, query_expand: int = 2,
                 query_dropout: tuple[float, float] = (0.3, 0.15), out_dropout: float = 0.15, *,
                 inference_mode: bool = False):
        super().__init__()
        self.token_mixer = token_mixer(dim, n_vars, kernel_size, query_expand, query_dropout,
                                       inference_mode=inference_mode)
        self.channel_mixer = channel_mixer(dim, n_vars, ffn_ratio, dropout, kernel_size, small_kernel, out_dropout,
                                           inference_mode=inference_mode)
        self.ffn_chunks = 0  # > 1: the channel mixer's hidden layer in recomputed slices (FFNetTS.set_grad_checkpointing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = residual_add(x, self.token_mixer(x))
        if self.ffn_chunks > 1 and self.training and torch.is_grad_enabled():
            return residual_add(x, self._sliced_channel_mixer(x))
        return residual_add(x, self.channel_mixer(x))

    def _sliced_channel_mixer(self, x: torch.Tensor) -> torch.Tensor:
        """The channel mixer with its r-times-wider hidden layer computed in ``ffn_chunks`` slices of the
        features d, each under activation checkpointing: the slice for features [d0, d1) needs hidden channels
        [d0 * r, d1 * r) of every variable (the value map reads only those), so no slice sums over another's
        hidden channels and the backward keeps one slice's activations alive at a time. The BN and the
        value dropout run on the whole batch, as in the plain forward; the parameters are the same."""
        from torch.utils.checkpoint import checkpoint

        cm = self.channel_mixer
        q = cm.key_interaction.norm(cm.query_proj(x))
        d, m = cm.value_interaction.dim, cm.value_interaction.n_vars
        step = d // self.ffn_chunks
        parts = [checkpoint(self._ffn_slice, q, d0, d0 + step, use_reentrant=False, preserve_rng_state=True)
                 for d0 in range(0, d, step)]
        h = cat_channels(parts)  # (B, D*M, N), channels (d, m)
        return cm.value_interaction.drop(swap_channel_groups(h, d, m))

    def _ffn_slice(self, q: torch.Tensor, d0: int, d1: int) -> torch.Tensor:
        """Channel-mixer outputs (d, m) for features d in [d0, d1), from the normalized query ``q``."""
        cm = self.channel_mixer
        key, value = cm.key_interaction, cm.value_interaction
        m, d, r = value.n_vars, value.dim, value.ffn_ratio
        j0, j1 = d0 * r, d1 * r
        w1 = key.fc.weight.view(m, r * d, d)[:, j0:j1].reshape(m * (j1 - j0), d, 1)
        b1 = None if key.fc.bias is None else key.fc.bias.view(m, r * d)[:, j0:j1].reshape(-1)
        h = cm.activation(key.drop(pointwise_conv(q, w1, b1, m)))  # (B, M*jc, N), channels (m, j)
        h = swap_channel_groups(h, m, j1 - j0)  # channels (j, m)
        w2 = value.fc.weight.view(d, m, r * m)[d0:d1].reshape((d1 - d0) * m, r * m, 1)
        b2 = None if value.fc.bias is None else value.fc.bias.view(d, m)[d0:d1].reshape(-1)
        return pointwise_conv(h, w2, b2, d1 - d0)  # (B, (d1 - d0)*M, N), channels (d, m)


class PatchStem(nn.Module):
    """Per-variable patch embedding: replicate-pad the end, Conv1d(1 -> D, patch, stride) + BN."""

    def __init__(self, dim: int, patch_size: int, patch_stride: int, *, inference_mode: bool = False):
        super().__init__()
        self.pad = patch_size - patch_stride
        self.conv = nn.Conv1d(1, dim, patch_size, stride=patch_stride)
        self.norm = nn.Identity() if inference_mode else nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, length = x.shape
        x = x.reshape(b * m, 1, length)  # (B*M, 1, L)
        if self.pad > 0:
            x = torch.cat([x, x[..., -1:].expand(-1, -1, self.pad)], dim=-1)  # (B*M, 1, L + P - S)
        x = self.norm(self.conv(x))  # (B*M, D, N)
        x = x.reshape(b, m * x.shape[1], x.shape[2])  # (B, M*D, N), channels (m, d)
        # NOTE: on CPU the block runs channel-major (storage (M*D, B, N)); see ffnet_ts.fastconv.
        return to_channel_major(x) if fastconv._fast(x) else x

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.norm, nn.Identity):
            return
        scale, shift = _bn_scale_shift(self.norm)
        _replace_conv(self.conv, self.conv.weight * scale.view(-1, 1, 1), self.conv.bias * scale + shift)
        self.norm = nn.Identity()


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------


class FFNetTS(nn.Module):
    """FFNet-TS forecaster: x (B, L, M) -> (B, H, M).

    Args:
        n_vars: number of input variables M.
        lookback: input length L.
        horizon: forecast length H.
        patch_size / patch_stride: patch stem (4 / 2: N = L / 2 patches).
        dim: features D per variable.
        depth: FFNet-TS blocks (1 in every reference script).
        kernel_size / small_kernel: large depthwise kernel (51) and the channel mixer's parallel small one (5).
        ffn_ratio: channel-mixer expansion r.
        dropout: channel-mixer FFN dropout.
        head_dropout: dropout after the head.
        query_expand / query_dropout / out_dropout: fixed constants of the reference (2, (0.3, 0.15), 0.15).
        revin: reversible instance normalization (no affine).
        linear_base: ours, not in the paper (variant ``ffnet_ts_lb``): add a frozen closed-form linear forecast
            (one (L + 1) x H least-squares map shared by the variables, fitted on the train windows; see
            :meth:`set_linear_base`) and let the network learn the residual, scaled by the RevIN std but
            without the RevIN mean. The head starts at zero, so an untrained model *is* the linear forecast.
        inference_mode: build the re-parameterized (fused) form.
    """

    def __init__(self, n_vars: int, lookback: int = 96, horizon: int = 96, patch_size: int = 4, patch_stride: int = 2,
                 dim: int = 64, depth: int = 1, kernel_size: int = 51, small_kernel: int | None = 5,
                 ffn_ratio: int = 2, dropout: float = 0.7, head_dropout: float = 0.0, query_expand: int = 2,
                 query_dropout: tuple[float, float] = (0.3, 0.15), out_dropout: float = 0.15, revin: bool = True,
                 linear_base: bool = False, inference_mode: bool = False):
        super().__init__()
        if lookback + patch_size - patch_stride < patch_size:
            raise ValueError(f"lookback {lookback} is shorter than a patch")
        self.n_vars, self.lookback, self.horizon, self.dim = n_vars, lookback, horizon, dim
        self.num_patches = (lookback - patch_stride) // patch_stride + 1
        self.revin = RevIN() if revin else None
        self.stem = PatchStem(dim, patch_size, patch_stride, inference_mode=inference_mode)
        self.blocks = nn.Sequential(*[
            FFNetTSBlock(dim, n_vars, kernel_size, small_kernel, ffn_ratio, dropout, query_expand,
                         tuple(query_dropout), out_dropout, inference_mode=inference_mode)
            for _ in range(depth)
        ])
        self.head = nn.Linear(dim * self.num_patches, horizon)
        self.head_drop = FastDropout(head_dropout)
        # NOTE: PyTorch's default initialization; the spec names no special init for the forecasting model.
        self.linear_base = linear_base
        if linear_base:
            # buffers, not parameters: the base is solved in closed form and stays fixed during training
            self.register_buffer("base_weight", torch.zeros(lookback, horizon))
            self.register_buffer("base_bias", torch.zeros(horizon))
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def set_grad_checkpointing(self, enable: bool = True, *, chunks: int = 8) -> None:
        """Trade compute for memory in training (timm's name for it): the channel mixer's hidden layer, r times
        wider than the block (r = 12 on ETTm and Weather), is computed in ``chunks`` feature slices that are
        recomputed in the backward pass, so its activations are held one slice at a time instead of all at
        once. Same model and parameters, same masks' distribution; the dropout masks are drawn per slice (so
        not bit-identical to the plain forward) and the extra forward of the hidden layer costs time (see the
        README). Inference and eval are unaffected."""
        if enable and (chunks < 2 or self.dim % chunks):
            raise ValueError(f"chunks must be >= 2 and divide dim {self.dim}, got {chunks}")
        for block in self.blocks:
            block.ffn_chunks = chunks if enable else 0

    @torch.no_grad()
    def set_linear_base(self, weight) -> None:
        """Install the closed-form linear map: ``weight`` (lookback + 1, horizon), last row the intercept
        (:func:`ffnet_ts.reference.fit_linear`'s layout)."""
        if not self.linear_base:
            raise ValueError("this FFNet-TS was built without linear_base=True")
        w = torch.as_tensor(weight, dtype=self.base_weight.dtype)
        if tuple(w.shape) != (self.lookback + 1, self.horizon):
            raise ValueError(f"linear base must be ({self.lookback + 1}, {self.horizon}), got {tuple(w.shape)}")
        self.base_weight.copy_(w[:-1])
        self.base_bias.copy_(w[-1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, M) normalized input -> (B, M*D, N) block features."""
        x = self.stem(x.transpose(1, 2))  # (B, M*D, N)
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = channel_major_grad(x)  # NOTE: keeps the block's backward in its forward layout (fastconv)
        x = x.reshape(b, self.n_vars, -1)  # (B, M, D*N), d-major
        return self.head_drop(self.head(x)).transpose(1, 2)  # (B, H, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = None
        if self.linear_base:
            base = linear_forecast(x, self.base_weight, self.base_bias)
        stats = None
        if self.revin is not None:
            x, stats = self.revin.norm(x)
        y = self.forward_head(self.forward_features(x))  # (B, H, M)
        if base is not None:  # residual of the linear forecast: RevIN scale only (the base carries the level)
            return base + (y * stats[1] if stats is not None else y)
        return RevIN.denorm(y, stats) if stats is not None else y


# ---------------------------------------------------------------------------------------------------------
# Variants, per-dataset defaults, factory
# ---------------------------------------------------------------------------------------------------------

MODEL_VARIANTS: dict[str, dict] = {
    # The reference configuration (spec §2.4): one block, D = 64, kernels 51 + 5, patch 4 / stride 2.
    "ffnet_ts": dict(dim=64, depth=1, kernel_size=51, small_kernel=5, patch_size=4, patch_stride=2),
    # Ours (not in the paper): the reference network learning the residual of a closed-form linear forecast.
    "ffnet_ts_lb": dict(dim=64, depth=1, kernel_size=51, small_kernel=5, patch_size=4, patch_stride=2,
                        linear_base=True),
    # Tiny variant for unit tests (seconds on CPU).
    "ffnet_ts_tiny": dict(dim=8, depth=1, kernel_size=7, small_kernel=3, patch_size=4, patch_stride=2),
}

# Per-dataset settings of the reference scripts (spec §2.4). Keys: ffn_ratio, dropout, head_dropout,
# batch_size, lr, patience; a value may be a dict {horizon: value, "default": value}.
DATASET_DEFAULTS: dict[str, dict] = {
    "ETTh1": dict(ffn_ratio=2, dropout=0.7, head_dropout=0.0, batch_size=512, lr=1e-4, patience=20),
    "ETTh2": dict(ffn_ratio=8, dropout={720: 0.85, "default": 0.8}, head_dropout={720: 0.5, "default": 0.0},
                  batch_size=512, lr=1e-4, patience=5),
    "ETTm1": dict(ffn_ratio=12, dropout=0.6, head_dropout={96: 0.0, "default": 0.1}, batch_size=2048, lr=1e-4,
                  patience=20),
    "ETTm2": dict(ffn_ratio=12, dropout={336: 0.7, "default": 0.6}, head_dropout={720: 0.1, "default": 0.2},
                  batch_size=2048, lr=1e-4, patience=20),
    "ECL": dict(ffn_ratio=12, dropout=0.9, head_dropout=0.0, batch_size=128, lr=1e-4, patience=2),
    "Traffic": dict(ffn_ratio=12, dropout=0.9, head_dropout=0.0, batch_size=128, lr=5e-5, patience=5),
    "Weather": dict(ffn_ratio=12, dropout=0.6, head_dropout=0.0, batch_size={336: 512, 720: 512, "default": 256},
                    lr=1e-4, patience={336: 10, 720: 10, "default": 5}),
    # Not in the reference scripts (Exchange, ILI, any CSV): a middle-of-the-road setting, our choice.
    "default": dict(ffn_ratio=4, dropout=0.5, head_dropout=0.0, batch_size=256, lr=1e-4, patience=10),
}


def dataset_defaults(name: str | None, horizon: int) -> dict:
    """The reference per-dataset hyper-parameters for ``name`` at ``horizon`` (flat dict)."""
    table = DATASET_DEFAULTS.get(name or "", DATASET_DEFAULTS["default"])
    return {k: (v.get(horizon, v["default"]) if isinstance(v, dict) else v) for k, v in table.items()}


def _dlinear(**kw):
    from .baselines import DLinear

    return DLinear(**kw)


def _patchtst(**kw):
    from .baselines import PatchTST

    return PatchTST(**kw)


def _itransformer(**kw):
    from .baselines import ITransformer

    return ITransformer(**kw)


_FACTORIES = {
    "ffnet_ts": lambda **kw: FFNetTS(**{**MODEL_VARIANTS["ffnet_ts"], **kw}),
    "ffnet_ts_tiny": lambda **kw: FFNetTS(**{**MODEL_VARIANTS["ffnet_ts_tiny"], **kw}),
    "ffnet_ts_lb": lambda **kw: FFNetTS(**{**MODEL_VARIANTS["ffnet_ts_lb"], **kw}),
    "dlinear": _dlinear,
    "patchtst": _patchtst,
    "itransformer": _itransformer,
}


class MeanEnsemble(nn.Module):
    """Ours: ``n`` independently trained forecasters of one kind, their forecasts averaged.

    ``ffnet-ts forecast --members`` trains the members one after another (seeds ``seed``, ``seed + 1``, ...) and
    saves them as one model, so ``predict``, ``export --onnx`` and ``evaluate`` treat an ensemble like any
    other forecaster. Averaging cannot raise the squared error above the members' mean (Jensen), on any split.
    """

    def __init__(self, member: str = "ffnet_ts", n: int = 2, **member_args):
        super().__init__()
        if member == ENSEMBLE or member not in _FACTORIES:
            raise ValueError(f"an ensemble's members must be a registered forecaster, not {member!r}")
        if n < 1:
            raise ValueError(f"an ensemble needs at least one member (got {n})")
        self.member = member
        self.members = nn.ModuleList(_FACTORIES[member](**member_args) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.members[0](x)
        for m in self.members[1:]:
            y = y + m(x)
        return y / len(self.members)


ENSEMBLE = "ensemble"  # the checkpoint name of a MeanEnsemble: args {"member": name, "n": count, **member args}


class LinearMap(nn.Module):
    """The closed-form linear forecaster as a module: ``weight`` (lookback + 1, horizon) in
    :func:`ffnet_ts.reference.fit_linear`'s layout (last row the intercept), one map shared by the variables."""

    def __init__(self, lookback: int, horizon: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(lookback + 1, horizon))

    @classmethod
    def from_weight(cls, weight) -> LinearMap:
        w = torch.as_tensor(weight, dtype=torch.float32)
        m = cls(w.shape[0] - 1, w.shape[1])
        m.weight.copy_(w)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_forecast(x, self.weight[:-1], self.weight[-1])


class LinearBlend(nn.Module):
    """Ours: ``w * forecaster(x) + (1 - w) * linear(x)``, a trained forecaster averaged with the closed-form
    linear map that the forecast table prints as its reference row (fitted on the train windows, in the space
    the forecaster sees: the series or the series minus its cycle).

    ``ffnet-ts forecast --blend auto`` chooses ``w`` on the validation windows from ``BLEND_WEIGHTS`` after
    training and saves the blend as one model, so ``predict``, ``export --onnx`` and ``evaluate`` need nothing
    new. ``w = 1`` is the forecaster alone (then no blend is saved); ``w = 0`` is the linear map alone (the
    forecaster's weights are kept but not run).

    Args:
        member: the forecaster's registered name; ``n`` > 1 makes it a :class:`MeanEnsemble` of ``n``.
        w: the forecaster's weight in [0, 1].
        member_args: the forecaster's own (``n_vars``, ``lookback``, ``horizon``, ...).
    """

    def __init__(self, member: str = "ffnet_ts", n: int = 1, w: float = 1.0, **member_args):
        super().__init__()
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"a blend weight must be in [0, 1] (got {w})")
        self.w = float(w)
        self.net = MeanEnsemble(member, n, **member_args) if n > 1 else create_model(member, **member_args)
        self.linear = LinearMap(member_args["lookback"], member_args["horizon"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self.linear(x)
        if self.w == 0.0:
            return lin
        return self.w * self.net(x) + (1.0 - self.w) * lin


BLEND = "linear_blend"  # the checkpoint name of a LinearBlend: args {"member", "n", "w", **member args}
BLEND_WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)  # --blend auto's candidates for w, the forecaster alone first


def list_models() -> list[str]:
    """The forecasters ``--model`` accepts (an ensemble is built with ``--members``, not named)."""
    return sorted(_FACTORIES)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered forecaster: ``ffnet_ts``, ``ffnet_ts_lb``, ``ffnet_ts_tiny``, ``dlinear``, ``patchtst``,
    ``itransformer``; or ``ensemble`` (:class:`MeanEnsemble`, args ``member``, ``n`` and the member's own), or
    ``linear_blend`` (:class:`LinearBlend`, args ``member``, ``n``, ``w`` and the member's own).

    All take ``n_vars``, ``lookback`` and ``horizon``; the remaining kwargs are the model's own.
    """
    if name == ENSEMBLE:
        return MeanEnsemble(**kwargs)
    if name == BLEND:
        return LinearBlend(**kwargs)
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _FACTORIES[name](**kwargs)
