"""Training loop: runs, validates, resumes exactly, warm-starts, exports; CLI overrides; DDP via torchrun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ffnet_sr.config import apply_overrides, load_config
from ffnet_sr.train import build_network, fft_l1, load_weights, lr_at, train
from ffnet_sr.weights import load_model
from PIL import Image


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i in range(4):
        base = rng.integers(0, 256, (12, 12, 3)).astype(np.float64)
        img = np.kron(base, np.ones((6, 6, 1))) + rng.normal(0, 4, (72, 72, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return d


def tiny_cfg(hr_folder, root, **over):
    cfg = load_config(None, [
        "name=tiny", f"path.experiments_root={root}", "network_g={type: FFNetSR, num_feat: 16, num_block: 2}",
        f"datasets.train.dataroot_gt=[{hr_folder}]", "datasets.train.gt_size=32", "datasets.train.batch_size_per_gpu=4",
        f"datasets.val.dataroot={hr_folder}", "train.total_iter=8", "val.val_freq=4", "logger.print_freq=2",
        "logger.save_checkpoint_freq=4", "num_threads=1",
    ])
    return apply_overrides(cfg, [f"{k}={v}" for k, v in over.items()])


def test_train_validates_checkpoints_and_exports(hr_folder, tmp_path):
    res = train(tiny_cfg(hr_folder, tmp_path / "a"), progress=False)
    assert res["iters"] == 8 and [h["iter"] for h in res["history"]] == [4, 8]
    assert all(np.isfinite(h["psnr"]) for h in res["history"])
    log = (tmp_path / "a" / "train.log").read_text()
    assert "iter 8 loss" in log and "val iter 8" in log and "done: 8 iters" in log
    ck = torch.load(tmp_path / "a" / "ckpt_last.pt", weights_only=False)
    assert ck["iter"] == 8 and ck["network_g"]["type"] == "FFNetSR"
    from ffnet_sr.cli import main

    out = tmp_path / "w.safetensors"
    assert main(["export", str(tmp_path / "a" / "ckpt_last.pt"), str(out)]) == 0
    model, scale = load_model(out)
    assert scale == 2
    ema = build_network(ck["network_g"], 2)
    ema.load_state_dict(ck["params_ema"])
    x = torch.rand(1, 3, 9, 9)
    torch.testing.assert_close(model(x), ema.eval()(x))


@pytest.mark.parametrize("amp", [False, "bf16"])
def test_resume_continues_exactly(hr_folder, tmp_path, amp):
    straight = train(tiny_cfg(hr_folder, tmp_path / "s", **{"train.amp": amp}), progress=False)
    paused = tiny_cfg(hr_folder, tmp_path / "p", **{"train.amp": amp})
    train(paused, progress=False, until=3)  # stops mid-way (not on a checkpoint boundary)
    resumed = train(paused, resume="auto", progress=False)
    a = torch.load(tmp_path / "s" / "ckpt_last.pt", weights_only=False)
    b = torch.load(tmp_path / "p" / "ckpt_last.pt", weights_only=False)
    for key in ("params", "params_ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert straight["history"][-1]["psnr"] == resumed["history"][-1]["psnr"]


def test_warm_start_loads_body_and_skips_tail(hr_folder, tmp_path):
    train(tiny_cfg(hr_folder, tmp_path / "x2"), progress=False)
    from ffnet_sr.cli import main

    main(["export", str(tmp_path / "x2" / "ckpt_last.pt"), str(tmp_path / "x2.safetensors")])
    cfg = tiny_cfg(hr_folder, tmp_path / "x3", scale=3, **{
        "path.pretrain_network_g": str(tmp_path / "x2.safetensors"), "path.strict_load_g": False,
        "datasets.train.gt_size": 48, "train.total_iter": 2})
    train(cfg, progress=False)
    log = (tmp_path / "x3" / "train.log").read_text()
    assert "not loaded: ['conv_last.bias', 'conv_last.weight']" in log
    m2 = build_network(cfg["network_g"], 2)
    m3 = build_network(cfg["network_g"], 3)
    skipped = load_weights(m3, m2.state_dict(), strict=False)
    assert skipped == ["conv_last.bias", "conv_last.weight"]
    assert torch.equal(m3.body[0].token_mixer.query_proj.conv.weight, m2.body[0].token_mixer.query_proj.conv.weight)


def test_schedule_and_fft_loss():
    assert lr_at(0, 1e-3, 100, 1e-5, -1) == pytest.approx(1e-3)
    assert lr_at(99, 1e-3, 100, 1e-5, -1) == pytest.approx(1e-5, rel=0.05)
    assert lr_at(50, 1e-3, 100, 1e-5, -1) == pytest.approx((1e-3 + 1e-5) / 2, rel=0.02)
    assert lr_at(4, 1e-3, 100, 1e-5, 10) == pytest.approx(5e-4)
    a = torch.rand(2, 3, 8, 8)
    assert fft_l1(a, a) == 0
    # independent reference: full complex FFT magnitudes of the differences, half spectrum
    b = torch.rand(2, 3, 8, 8)
    ref = torch.view_as_real(torch.fft.fft2(a - b))[..., : 8 // 2 + 1, :].abs().mean()
    torch.testing.assert_close(fft_l1(a, b), ref)


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config("train/ffnetsr_mini_x2", ["train.total_iter=5", "datasets.train.gt_size=64", "val.val_freq=null"])
    assert cfg["train"]["total_iter"] == 5 and cfg["datasets"]["train"]["gt_size"] == 64
    assert cfg["val"]["val_freq"] is None and cfg["network_g"]["num_feat"] == 48
    edsr = load_config("train/same_budget_edsr_baseline_x2")
    assert edsr["network_g"]["type"] == "EDSR" and "mlp_ratio" not in edsr["network_g"]  # replaced, not merged
    mini = load_config("train/same_budget_ffnetsr_mini_x2")
    strip = lambda c: {k: v for k, v in c.items() if k not in ("name", "network_g")}  # noqa: E731
    assert strip(mini) == strip(edsr)  # the same-budget pair differs only in the architecture
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(None, ["nonsense"])
    with pytest.raises(FileNotFoundError, match="built-in"):
        load_config("train/nope")


def test_cli_train_bad_dataset_is_one_line_exit_2(tmp_path, capsys):
    from ffnet_sr.cli import main

    rc = main(["train", "-q", "--out", str(tmp_path / "r"), "-O", "datasets.train.dataroot_gt=[/no/such/dir]"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ffnet-sr: error:") and err.count("\n") == 1


@pytest.mark.slow
def test_ddp_torchrun_two_cpu_processes(hr_folder, tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo): runs, ranks agree, only rank 0 writes."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "ffnet_sr.cli", "train", "-q",
           "--out", str(tmp_path / "ddp"), "--device", "cpu", "-O", "network_g={type: FFNetSR, num_feat: 8, num_block: 1}",
           "-O", f"datasets.train.dataroot_gt=[{hr_folder}]", "-O", "datasets.train.gt_size=32",
           "-O", "datasets.train.batch_size_per_gpu=2", "-O", f"datasets.val.dataroot={hr_folder}",
           "-O", "train.total_iter=4", "-O", "val.val_freq=4", "-O", "logger.save_checkpoint_freq=2", "-O", "num_threads=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    # the ranks' own messages (e.g. "terminate called ...") come before torchrun's long traceback: show both
    assert r.returncode == 0, r.stderr[:1500] + "\n...\n" + r.stderr[-1500:]
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert "world=2" in log and "batch=2x2" in log and "done: 4 iters" in log
    ck = torch.load(tmp_path / "ddp" / "ckpt_last.pt", weights_only=False)
    assert len(ck["generator"]) == 2  # both ranks' sampler states, for exact resume
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, lines  # one summary: rank 1 does not print (nor export)
    summary = json.loads(lines[0])
    assert summary["iters"] == 4


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cuda_amp_training(hr_folder, tmp_path, amp):
    res = train(tiny_cfg(hr_folder, tmp_path / "g", **{"train.amp": amp, "train.total_iter": 4}), device="cuda",
                progress=False)
    assert res["iters"] == 4 and np.isfinite(res["history"][-1]["psnr"])


def test_fp16_amp_is_refused_on_cpu(hr_folder, tmp_path):
    with pytest.raises(ValueError, match="fp16 AMP needs CUDA"):
        train(tiny_cfg(hr_folder, tmp_path / "c", **{"train.amp": "fp16"}), device="cpu", progress=False)
