"""DDP under torchrun with 2 CPU processes (gloo): both ranks end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from ffnet_ts.testing import staged_csv, truncated_csv


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(data_dir, tmp_path):
    csv = truncated_csv(staged_csv(data_dir), tmp_path / "small.csv", 600)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ffnet_ts.testing", "ddp", str(csv), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    for k in r0["state_dict"]:  # parameters AND BN running statistics
        assert torch.equal(r0["state_dict"][k], r1["state_dict"][k]), k
    assert any(not torch.equal(r0["state_dict"][k], r0["init"][k]) for k in r0["init"])  # it trained
    assert [h["val_mse"] for h in r0["history"]] == [h["val_mse"] for h in r1["history"]]
    assert (tmp_path / "last.pt").is_file()  # written once, by rank 0


@pytest.mark.slow
def test_forecast_cli_under_torchrun_writes_once_and_leaves_the_group(data_dir, tmp_path):
    """The user-facing command under torchrun: both ranks train, rank 0 alone writes and prints, and both exit 0."""
    csv = truncated_csv(staged_csv(data_dir), tmp_path / "small.csv", 600)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ffnet_ts.cli", "forecast", "--data", str(csv), "--model", "ffnet_ts_tiny", "--lookback", "48",
           "--horizon", "24", "--epochs", "1", "--threads", "1", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[:1500] + "\n...\n" + proc.stderr[-1500:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert (out / "forecasts_H24.npz").is_file() and (out / "checkpoint_H24.pt").is_file()
    assert proc.stdout.count("wrote ") == 1  # the summary comes from rank 0 only
    assert proc.stderr.count("epoch   1") == 1  # so does the training log


def test_teardown_leaves_an_initialized_group(tmp_path):
    """teardown_distributed passes a barrier and destroys the group (here a one-process gloo group)."""
    import torch.distributed as dist
    from ffnet_ts.train import DistInfo, teardown_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        teardown_distributed(DistInfo(rank=0, world=2))
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    teardown_distributed(DistInfo())  # single process: nothing to do, no error
