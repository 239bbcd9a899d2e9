"""DDP under torchrun with 2 CPU processes (gloo): both ranks end with identical weights."""

from __future__ import annotations

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
