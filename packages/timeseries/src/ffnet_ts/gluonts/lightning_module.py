"""Lightning wrapper of :class:`FFNetTSModel`: MSE training / validation steps and the Adam optimizer."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from gluonts.core.component import validated
from gluonts.itertools import select

from .module import FFNetTSModel


class FFNetLightningModule(pl.LightningModule):
    """Trains an :class:`FFNetTSModel` (``model_kwargs`` are its arguments) with Adam."""

    @validated()
    def __init__(self, model_kwargs: dict, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.model = FFNetTSModel(**model_kwargs)
        self.lr, self.weight_decay = lr, weight_decay
        self.inputs = self.model.describe_inputs()

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def _loss(self, batch) -> torch.Tensor:
        return self.model.loss(**select(self.inputs, batch), future_target=batch["future_target"],
                               future_observed_values=batch["future_observed_values"])

    def training_step(self, batch, batch_idx: int):
        loss = self._loss(batch)
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int):
        loss = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
