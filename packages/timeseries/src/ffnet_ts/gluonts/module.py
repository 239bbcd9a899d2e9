"""The torch network behind ``FFNetEstimator``: FFNet-TS on gluonts' ``past_target`` / ``past_observed_values``."""

from __future__ import annotations

import torch
from gluonts.core.component import validated
from gluonts.model import Input, InputSpec
from torch import nn

from ..model import FFNetTS


class FFNetTSModel(nn.Module):
    """FFNet-TS for gluonts batches.

    Args:
        prediction_length: forecast horizon H.
        context_length: look-back L.
        target_dim: 1 for univariate items (target (T,)), M for multivariate items (target (M, T)).
        model_kwargs: further :class:`ffnet_ts.model.FFNetTS` arguments (dim, ffn_ratio, dropout, ...).
    """

    @validated()
    def __init__(self, prediction_length: int, context_length: int, target_dim: int = 1,
                 model_kwargs: dict | None = None) -> None:
        super().__init__()
        self.prediction_length, self.context_length, self.target_dim = prediction_length, context_length, target_dim
        self.net = FFNetTS(n_vars=target_dim, lookback=context_length, horizon=prediction_length,
                           **(model_kwargs or {}))

    def describe_inputs(self, batch_size: int = 1) -> InputSpec:
        shape = (batch_size, self.context_length) + ((self.target_dim,) if self.target_dim > 1 else ())
        return InputSpec({"past_target": Input(shape=shape, dtype=torch.float),
                          "past_observed_values": Input(shape=shape, dtype=torch.float)}, torch.zeros)

    def point_forecast(self, past_target: torch.Tensor) -> torch.Tensor:
        """(B, L) or (B, L, M) -> (B, H) or (B, H, M)."""
        x = past_target if past_target.dim() == 3 else past_target.unsqueeze(-1)  # (B, L, M)
        y = self.net(x)  # (B, H, M)
        return y if past_target.dim() == 3 else y.squeeze(-1)

    def forward(self, past_target: torch.Tensor, past_observed_values: torch.Tensor) -> torch.Tensor:
        """One "sample" per series: (B, 1, H) or (B, 1, H, M), as gluonts' sample forecasts expect."""
        return self.point_forecast(past_target).unsqueeze(1)

    def loss(self, past_target: torch.Tensor, past_observed_values: torch.Tensor, future_target: torch.Tensor,
             future_observed_values: torch.Tensor) -> torch.Tensor:
        """MSE over the observed future values (missing values, imputed by gluonts, are not scored)."""
        err = (self.point_forecast(past_target) - future_target).pow(2) * future_observed_values
        return err.sum() / future_observed_values.sum().clamp_min(1.0)
