"""Small helpers shared by the ffnet-ts tests (truncated real data, toy models)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn


def staged_csv(data_dir: str | Path, filename: str = "ETTh1.csv") -> Path:
    """Path of a staged dataset under ``$FFNET_DATA_DIR`` (``<dir>/timeseries/<file>`` or ``<dir>/<file>``)."""
    root = Path(data_dir)
    for p in (root / "timeseries" / filename, root / filename):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{filename} not under {root}")


def truncated_csv(src: str | Path, dst: str | Path, rows: int, columns: list[str] | None = None) -> Path:
    """Write the first ``rows`` rows (and optionally a column subset) of a CSV (for fast tests)."""
    df = pd.read_csv(src, nrows=rows)
    if columns is not None:
        df = df[["date", *columns]]
    df.to_csv(dst, index=False)
    return Path(dst)


class Persistence(nn.Module):
    """Repeats the last observed value: a parameter-free forecaster with an obvious closed form."""

    def __init__(self, horizon: int):
        super().__init__()
        self.horizon = horizon
        self.dummy = nn.Parameter(torch.zeros(()))  # so optimizers and .to() have something to hold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:, :].expand(-1, self.horizon, -1) + 0.0 * self.dummy


def ddp_worker(csv: str, out_dir: str) -> None:
    """Run by ``torchrun --nproc_per_node 2 -m ffnet_ts.testing ddp CSV OUT``: trains a tiny model with DDP and
    saves this rank's final state dict (and its world size) to ``OUT/rank<r>.pt``."""
    import os

    from . import data as D
    from . import train as T
    from .model import create_model

    torch.set_num_threads(1)
    prep = D.prepare(D.load(csv), 48, 24)
    torch.manual_seed(0)
    model = create_model("ffnet_ts_tiny", n_vars=prep.n_vars, lookback=48, horizon=24, dropout=0.3)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = T.TrainConfig(epochs=2, patience=5, batch_size=64, lr=1e-3, lr_schedule="type3", progress=False,
                        device="cpu")
    res = T.fit(model, prep, cfg, last_path=Path(out_dir) / "last.pt")
    rank = int(os.environ["RANK"])
    torch.save({"state_dict": model.state_dict(), "init": init, "world": int(os.environ["WORLD_SIZE"]),
                "history": res.history}, Path(out_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["ddp"]:
        ddp_worker(sys.argv[2], sys.argv[3])


def tiny_checkpoint(prep, path: str | Path, seed: int = 0) -> nn.Module:
    """Save an untrained ``ffnet_ts_tiny`` for ``prep`` (its data meta, cycle included) as a forecast checkpoint
    at ``path``, as ``ffnet-ts forecast`` would; returns the model (eval mode)."""
    from .cli import _data_meta
    from .model import create_model
    from .train import CHECKPOINT_FORMAT

    torch.manual_seed(seed)
    margs = {"n_vars": prep.n_vars, "lookback": prep.lookback, "horizon": prep.horizon}
    model = create_model("ffnet_ts_tiny", **margs).eval()
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"name": "ffnet_ts_tiny", "args": margs},
                "data": _data_meta(prep), "state_dict": model.state_dict(), "epoch": 1, "val_mse": 0.5}, path)
    return model

