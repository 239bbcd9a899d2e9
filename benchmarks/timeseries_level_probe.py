"""Probe (session 29): do the gluonts estimator's level features help FFNet-TS in the long-horizon protocol?

The reference FFNet-TS recipe for a dataset and horizon (benchmarks/timeseries_reference.recipe), capped at
``--epochs``, bf16, 1 thread, seed 2021, with or without ``--level``: the window's RevIN mean and log std are
embedded (zero-initialized Linear(2, D), output x10 so that under Adam it learns ~10x faster, as
``level_lr=1e-3`` does in ffnet_ts.gluonts) and added to the patch tokens. The probe patches the network's forward
here and does not change the package. Appends a row to results/timeseries_level_probe.jsonl.

    FFNET_DATA_DIR=../shared/data nice uv run python benchmarks/timeseries_level_probe.py [--level] --ds ETTh1 --h 96
"""
import argparse
import json
import time
from pathlib import Path

import timeseries_reference as R
import torch
from ffnet_ts import data as D
from ffnet_ts import train as T
from ffnet_ts.baselines import RevIN
from ffnet_ts.gluonts.module import forward_with_token_offset
from ffnet_ts.model import create_model
from torch import nn

OUT = Path(__file__).resolve().parent / "results" / "timeseries_level_probe.jsonl"

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--level", action="store_true")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ds", default="ETTh1")
    ap.add_argument("--h", type=int, default=96)
    ap.add_argument("--seed", type=int, default=2021)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model_args, train_args = R.recipe("ffnet_ts", a.ds, a.h)
    train_args["epochs"] = a.epochs
    prep = D.prepare(D.load(a.ds), 96, a.h)
    torch.manual_seed(a.seed)
    net = create_model("ffnet_ts", n_vars=prep.n_vars, lookback=96, horizon=a.h, **model_args)
    if a.level:
        net.level_embed = nn.Linear(2, net.dim)
        nn.init.zeros_(net.level_embed.weight)
        nn.init.zeros_(net.level_embed.bias)

        def fwd(x, self=net):
            x, stats = self.revin.norm(x)
            mean, std = stats
            emb = 10.0 * self.level_embed(torch.stack([mean, torch.log(std)], -1))  # x10: ~10x lr under Adam
            return RevIN.denorm(forward_with_token_offset(self, x, emb.reshape(x.shape[0], -1, 1)), stats)
        net.forward = fwd
    train_args["precision"] = "bf16"
    cfg = T.TrainConfig(seed=a.seed, progress=False, device="cpu", **train_args)
    t = time.perf_counter()
    res = T.fit(net, prep, cfg, log=lambda s: print(s, flush=True))
    val = T.evaluate(net, prep, "val", batch_size=512)
    test = T.evaluate(net, prep, "test", batch_size=512)
    row = dict(ds=a.ds, h=a.h, seed=a.seed, level=a.level, epochs=a.epochs, best_epoch=res.best_epoch, val_mse=val["mse"],
               test_mse=test["mse"], test_mae=test["mae"], s=round(time.perf_counter() - t))
    print(json.dumps(row), flush=True)
    with open(OUT, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
