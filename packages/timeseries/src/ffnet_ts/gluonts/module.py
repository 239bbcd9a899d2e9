"""The torch network behind ``FFNetEstimator``: FFNet-TS on gluonts' ``past_target`` / ``past_observed_values``."""

from __future__ import annotations

import torch
from gluonts.core.component import validated
from gluonts.model import Input, InputSpec
from gluonts.torch.scaler import MeanScaler
from gluonts.torch.util import weighted_average
from torch import nn

from .. import fastconv
from ..baselines import RevIN
from ..model import FFNetTS

SCALINGS = ("std", "mean", None)


def masked_norm(x: torch.Tensor, observed: torch.Tensor, eps: float = 1e-5):
    """RevIN over the observed values only: (B, L, M) -> (normalized x, (mean, std) each (B, 1, M)).

    gluonts fills missing values with a dummy (0 by default) and marks them in ``past_observed_values``; plain
    RevIN would take those zeros into the window's mean and std, and the network would see them as spikes.
    Here the statistics use observed values only and missing positions are set to the mean (0 after
    normalization). With every value observed this is exactly :class:`ffnet_ts.baselines.RevIN`.
    """
    w = observed.to(x.dtype)
    n = w.sum(1, keepdim=True).clamp_min(1.0)
    mean = (x * w).sum(1, keepdim=True) / n
    var = ((x - mean) ** 2 * w).sum(1, keepdim=True) / n
    mean, std = mean.detach(), torch.sqrt(var + eps).detach()
    return torch.where(w > 0, (x - mean) / std, torch.zeros_like(x)), (mean, std)


def forward_with_token_offset(net: FFNetTS, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``net`` (built with ``revin=False``) on a normalized window (B, L, M), with ``offset`` (B, M*D, 1), channels
    (m, d), added to every patch token after the stem -> (B, H, M). The level features' forward."""
    f = net.stem(x.transpose(1, 2)) + offset  # (B, M*D, N)
    if fastconv._fast(f):  # the broadcast add may return the batch-major layout
        f = fastconv.to_channel_major(f)
    return net.forward_head(net.blocks(f))


class FFNetTSModel(nn.Module):
    """FFNet-TS for gluonts batches: point forecasts (MSE), or a distribution per step (NLL) with ``distr_output``.

    Args:
        prediction_length: forecast horizon H.
        context_length: look-back L.
        target_dim: 1 for univariate items (target (T,)), M for multivariate items (target (M, T)).
        model_kwargs: further :class:`ffnet_ts.model.FFNetTS` arguments (dim, ffn_ratio, dropout, ...).
        distr_output: a gluonts ``DistributionOutput`` (e.g. ``StudentTOutput()``); univariate items only.
            The network's head then gives, for every step, the distribution's unconstrained arguments (H x the
            number of arguments outputs instead of H), mapped by ``distr_output.domain_map``; the window's
            RevIN mean and std become the distribution's ``loc`` and ``scale``, as gluonts' own models pass
            their scaler's. ``None``: the point forecaster (MSE).
        In both, RevIN's statistics come from the observed past values only (:func:`masked_norm`).
        model_kwargs may also hold ``scaling`` (``"std"``, the default: RevIN, as in the paper; ``"mean"``:
        gluonts' ``MeanScaler``, the window divided by its mean absolute value and not centred, as gluonts'
        DLinear and PatchTST scale by default; ``None``: the raw window; the older ``revin=False`` is
        ``None``) and ``level_features`` (default False; ours, not in
        the paper): RevIN takes each window's level and spread out of the network's view, and on globally
        standardized items that level carries information (a window far above the series' mean tends to come
        back). With ``level_features`` the window's mean and log std are embedded (a zero-initialized
        ``Linear(2, D)``) and added to the patch tokens, so the network sees them and RevIN still scales.
    """

    @validated()
    def __init__(self, prediction_length: int, context_length: int, target_dim: int = 1,
                 model_kwargs: dict | None = None, distr_output=None) -> None:
        super().__init__()
        if distr_output is not None and target_dim != 1:
            raise ValueError(f"distr_output needs univariate items (target_dim=1), got target_dim={target_dim}; "
                             "multivariate items have point forecasts (distr_output=None)")
        self.prediction_length, self.context_length, self.target_dim = prediction_length, context_length, target_dim
        self.distr_output = distr_output
        kwargs = dict(model_kwargs or {})
        # RevIN is applied here, not inside the network: over observed values only (masked_norm), and for a
        # distribution its statistics become the distribution's loc and scale instead of a denorm
        scaling = kwargs.pop("scaling", "std")
        if not kwargs.pop("revin", True):
            scaling = None
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        self.scaling = scaling
        level_features = kwargs.pop("level_features", False)
        self.arg_sizes = [1] if distr_output is None else list(distr_output.args_dim.values())
        self.net = FFNetTS(n_vars=target_dim, lookback=context_length,
                           horizon=prediction_length * sum(self.arg_sizes), **kwargs, revin=False)
        self.level_embed = None
        if level_features:
            if scaling != "std":
                raise ValueError("level_features needs revin=True (scaling='std'): it hands the network the level "
                                 "and spread that RevIN takes out of the window")
            # zero-initialized: an untrained model with level features is the model without them
            self.level_embed = nn.Linear(2, self.net.dim)
            nn.init.zeros_(self.level_embed.weight)
            nn.init.zeros_(self.level_embed.bias)

    def _net(self, x: torch.Tensor, stats) -> torch.Tensor:
        """The network on the normalized window (B, L, M) -> (B, H * A, M); with ``level_features`` the
        window's RevIN mean and log std, embedded to D features per variable, are added to every patch token."""
        if self.level_embed is None:
            return self.net(x)
        mean, std = stats  # (B, 1, M) each
        emb = self.level_embed(torch.stack([mean, torch.log(std)], dim=-1))  # (B, 1, M, D)
        return forward_with_token_offset(self.net, x, emb.reshape(x.shape[0], -1, 1))

    def describe_inputs(self, batch_size: int = 1) -> InputSpec:
        shape = (batch_size, self.context_length) + ((self.target_dim,) if self.target_dim > 1 else ())
        return InputSpec({"past_target": Input(shape=shape, dtype=torch.float),
                          "past_observed_values": Input(shape=shape, dtype=torch.float)}, torch.zeros)

    def _normalized(self, past_target: torch.Tensor, past_observed_values: torch.Tensor | None):
        """(B, L) or (B, L, M) -> (B, L, M) network input and its (mean, std), each (B, 1, M)."""
        x = past_target if past_target.dim() == 3 else past_target.unsqueeze(-1)  # (B, L, M)
        if self.scaling is None:
            return x, None
        observed = torch.ones_like(x) if past_observed_values is None else past_observed_values.view_as(x)
        if self.scaling == "mean":  # gluonts' own scaler, so the scale is what its DLinear / PatchTST would use
            scaled, loc, scale = MeanScaler(dim=1, keepdim=True)(x, observed)
            return scaled, (loc, scale)
        return masked_norm(x, observed)

    def point_forecast(self, past_target: torch.Tensor,
                       past_observed_values: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) or (B, L, M) -> (B, H) or (B, H, M)."""
        x, stats = self._normalized(past_target, past_observed_values)
        y = self._net(x, stats)  # (B, H, M)
        if stats is not None:
            y = RevIN.denorm(y, stats)
        return y if past_target.dim() == 3 else y.squeeze(-1)

    def distribution_args(self, past_target: torch.Tensor, past_observed_values: torch.Tensor | None = None):
        """(B, L) -> (distr_args, loc (B, 1), scale (B, 1)), gluonts' convention for distribution outputs."""
        x, stats = self._normalized(past_target, past_observed_values)  # (B, L, 1)
        mean, std = stats if stats is not None else (torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1]))
        raw = self._net(x, stats)[..., 0]  # (B, H * A)
        raw = raw.view(raw.shape[0], self.prediction_length, sum(self.arg_sizes))  # (B, H, A)
        args = self.distr_output.domain_map(*torch.split(raw, self.arg_sizes, dim=-1))
        return args, mean[..., 0], std[..., 0]

    def forward(self, past_target: torch.Tensor, past_observed_values: torch.Tensor):
        """Point: one "sample" per series, (B, 1, H) or (B, 1, H, M), as gluonts' sample forecasts expect.
        Distribution: ``(distr_args, loc, scale)`` for ``distr_output.forecast_generator``."""
        if self.distr_output is not None:
            return self.distribution_args(past_target, past_observed_values)
        return self.point_forecast(past_target, past_observed_values).unsqueeze(1)

    def loss(self, past_target: torch.Tensor, past_observed_values: torch.Tensor, future_target: torch.Tensor,
             future_observed_values: torch.Tensor) -> torch.Tensor:
        """Over the observed future values (missing values, imputed by gluonts, are not scored): MSE for point
        forecasts, the distribution's negative log-likelihood with ``distr_output``."""
        if self.distr_output is not None:
            args, loc, scale = self.distribution_args(past_target, past_observed_values)
            nll = self.distr_output.loss(target=future_target, distr_args=args, loc=loc, scale=scale)  # (B, H)
            return weighted_average(nll, weights=future_observed_values)
        err = (self.point_forecast(past_target, past_observed_values) - future_target).pow(2) * future_observed_values
        return err.sum() / future_observed_values.sum().clamp_min(1.0)
