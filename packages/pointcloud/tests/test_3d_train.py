"""Training loop: it learns, checkpoints carry the config, resume continues exactly, DDP runs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from ffnet_3d.checkpoint import load_model, load_training_state, read_checkpoint
from ffnet_3d.config import config_from_dict, get_preset
from ffnet_3d.train import train


def _cfg(**train_kw):
    return config_from_dict({"train": {"log_every": 1, **train_kw}}, get_preset("tiny"))


def test_overfits_two_frames(synth_root, tmp_path):
    cfg = _cfg(epochs=20, batch_size=2, lr=5e-3, schedule="cosine", warmup_frac=0.05)
    cfg.data.rot_range = (0.0, 0.0)
    cfg.data.scale_range = (1.0, 1.0)
    cfg.data.flip_y = False
    train(cfg, synth_root, tmp_path, ids=["000000", "000001"], progress=False, threads=1)
    losses = [float(line.split(" loss ")[1].split()[0]) for line in (tmp_path / "train.log").read_text().splitlines()
              if " loss " in line]
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    model, cfg2, meta = load_model(tmp_path / "model.safetensors")
    assert cfg2.to_dict() == cfg.to_dict() and meta["steps"] == 20


def test_resume_continues_exactly(synth_root, tmp_path):
    ids = ["000000", "000001", "000002", "000003"]
    cfg = _cfg(epochs=2, batch_size=2, lr=3e-3)  # 2 steps per epoch, 4 in total
    a = train(cfg, synth_root, tmp_path / "a", ids=ids, progress=False, threads=1)
    stopped = train(cfg, synth_root, tmp_path / "b", ids=ids, progress=False, threads=1, stop_after=3)
    assert load_training_state(stopped)["step"] == 3
    b = train(cfg, synth_root, tmp_path / "b", ids=ids, progress=False, threads=1, resume=stopped)
    sd_a, _, _ = read_checkpoint(a)
    sd_b, _, meta_b = read_checkpoint(b)
    assert meta_b["steps"] == 4
    for k in sd_a:
        torch.testing.assert_close(sd_b[k], sd_a[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_ddp_with_torchrun_on_cpu(synth_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "ffnet_3d.cli", "train", "--config", "tiny", "--data", str(synth_root), "-o", str(tmp_path / "ddp"),
           "--max-steps", "2", "--threads", "1", "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert "world 2" in log and "done: 2 steps" in log
    _, _, meta = read_checkpoint(tmp_path / "ddp" / "model.safetensors")
    assert meta["world_size"] == 2
