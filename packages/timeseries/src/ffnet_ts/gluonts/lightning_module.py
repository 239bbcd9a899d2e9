"""Lightning wrapper of :class:`FFNetTSModel`: MSE training / validation steps and the Adam optimizer."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from gluonts.core.component import validated
from gluonts.itertools import select

from .module import FFNetTSModel


class FFNetLightningModule(pl.LightningModule):
    """Trains an :class:`FFNetTSModel` (``model_kwargs`` are its arguments) with Adam; the level-feature
    embedding (``level_features``) learns at ``level_lr`` (default: ``lr``)."""

    @validated()
    def __init__(self, model_kwargs: dict, lr: float = 1e-3, weight_decay: float = 0.0,
                 level_lr: float | None = None) -> None:
        super().__init__()
        self.model = FFNetTSModel(**model_kwargs)
        self.lr, self.weight_decay, self.level_lr = lr, weight_decay, level_lr
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
        level = [] if self.model.level_embed is None else list(self.model.level_embed.parameters())
        ids = {id(p) for p in level}
        groups = [{"params": [p for p in self.model.parameters() if id(p) not in ids]}]
        if level:
            groups.append({"params": level, "lr": self.lr if self.level_lr is None else self.level_lr})
        return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)
