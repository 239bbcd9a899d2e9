"""BasicSR integration: lazy import, registry, and BasicSR's own test/train pipelines running FFNetSR."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from ffnet_sr.archs import create_model
from ffnet_sr.evaluate import evaluate
from ffnet_sr.weights import save_weights
from PIL import Image

TINY = {"type": "FFNetSR", "upscale": 2, "num_feat": 16, "num_block": 2, "mlp_ratio": 2.0}


def run_basicsr(mode, yml, cwd, data_dir):
    """``ffnet-sr basicsr <mode> -opt yml`` in a fresh process (BasicSR's loggers are process-global)."""
    import os

    env = {**os.environ, "FFNET_DATA_DIR": str(data_dir)}
    subprocess.run([sys.executable, "-m", "ffnet_sr.cli", "basicsr", mode, "-opt", str(yml)], cwd=cwd, env=env,
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def plugin():
    from ffnet_sr import basicsr_plugin

    return basicsr_plugin


def test_import_ffnet_sr_does_not_import_basicsr():
    code = ("import sys, ffnet_sr, ffnet_sr.archs, ffnet_sr.train, ffnet_sr.upscale, ffnet_sr.cli, ffnet_sr.evaluate;"
            "assert 'basicsr' not in sys.modules, 'basicsr imported';"
            "assert 'torchvision.transforms.functional_tensor' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_builds_ffnetsr_equal_to_ours(plugin):
    from basicsr.archs import build_network
    from basicsr.losses import build_loss
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY

    assert "FFNetSR" in ARCH_REGISTRY and "L1FFTLoss" in LOSS_REGISTRY and "HRFolderOnTheFlyDataset" in DATASET_REGISTRY
    plugin.register()  # idempotent
    net = build_network(dict(TINY))
    ours = create_model("ffnetsr_test", 2)
    ours.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 9, 11)
    torch.testing.assert_close(net(x), ours(x))
    loss = build_loss({"type": "L1FFTLoss", "loss_weight": 1.0, "fft_weight": 0.02})
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    from ffnet_sr.train import fft_l1

    torch.testing.assert_close(loss(a, b), torch.nn.functional.l1_loss(a, b) + 0.02 * fft_l1(a, b))
    edsr = plugin.build_basicsr_arch("EDSR", scale=3, num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1)
    assert edsr(torch.rand(1, 3, 5, 5)).shape == (1, 3, 15, 15)


def test_basicsr_test_pipeline_matches_our_eval(data_dir, tmp_path):
    """BasicSR's SRModel + PairedImageDataset + metrics on our weights give our eval's numbers."""
    torch.manual_seed(0)
    model = create_model("ffnetsr_test", 2).eval()
    w = tmp_path / "tiny_x2.safetensors"
    save_weights(model, w, TINY, 2)
    opt = {
        "name": "tiny_test", "model_type": "SRModel", "scale": 2, "num_gpu": 0, "manual_seed": 0,
        "datasets": {"test_1": {"name": "Set5", "type": "PairedImageDataset",
                                "dataroot_gt": "$FFNET_DATA_DIR/superres/Set5/HR",
                                "dataroot_lq": "$FFNET_DATA_DIR/superres/Set5/LR_bicubic/X2",
                                "filename_tmpl": "{}x2", "io_backend": {"type": "disk"}}},
        "network_g": TINY, "path": {"pretrain_network_g": str(w), "strict_load_g": True},
        "val": {"save_img": False, "metrics": {
            "psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True},
            "ssim": {"type": "calculate_ssim", "crop_border": 2, "test_y_channel": True}}},
    }
    yml = tmp_path / "test.yml"
    yml.write_text(yaml.safe_dump(opt))
    run_basicsr("test", yml, tmp_path, data_dir)
    log = next((tmp_path / "results" / "tiny_test").glob("test_*.log")).read_text()
    b_psnr = float(re.search(r"# psnr: ([\d.]+)", log).group(1))
    b_ssim = float(re.search(r"# ssim: ([\d.]+)", log).group(1))
    ours = evaluate(model, data_dir / "superres" / "Set5", 2)
    assert ours["psnr"] == pytest.approx(b_psnr, abs=2e-3)
    assert ours["ssim"] == pytest.approx(b_ssim, abs=2e-4)


@pytest.mark.slow
def test_basicsr_train_pipeline_runs_ffnetsr(data_dir, tmp_path):
    rng = np.random.default_rng(0)
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(hr / f"{i}.png")
    opt = {
        "name": "tiny_train", "model_type": "SRModel", "scale": 2, "num_gpu": 0, "manual_seed": 0,
        "datasets": {
            "train": {"name": "rand", "type": "HRFolderOnTheFlyDataset", "dataroot_gt": f"{hr},{hr}", "gt_size": 32,
                      "use_hflip": True, "use_rot": True, "num_worker_per_gpu": 0, "batch_size_per_gpu": 2,
                      "dataset_enlarge_ratio": 1, "prefetch_mode": None},
            "val": {"name": "Set5", "type": "PairedImageDataset", "dataroot_gt": "$FFNET_DATA_DIR/superres/Set5/HR",
                    "dataroot_lq": "$FFNET_DATA_DIR/superres/Set5/LR_bicubic/X2", "filename_tmpl": "{}x2",
                    "io_backend": {"type": "disk"}}},
        "network_g": TINY, "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {"ema_decay": 0.999, "optim_g": {"type": "Adam", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.99]},
                  "scheduler": {"type": "CosineAnnealingRestartLR", "periods": [4], "restart_weights": [1],
                                "eta_min": 1e-5},
                  "total_iter": 4, "warmup_iter": -1,
                  "pixel_opt": {"type": "L1FFTLoss", "loss_weight": 1.0, "fft_weight": 0.02}},
        "val": {"val_freq": 4, "save_img": False,
                "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True}}},
        "logger": {"print_freq": 2, "save_checkpoint_freq": 4, "use_tb_logger": False, "wandb": None},
        "dist_params": {"backend": "gloo", "port": 29500},
    }
    yml = tmp_path / "train.yml"
    yml.write_text(yaml.safe_dump(opt))
    run_basicsr("train", yml, tmp_path, data_dir)
    root = tmp_path / "experiments" / "tiny_train"
    assert (root / "models" / "net_g_4.pth").is_file()
    state = torch.load(root / "models" / "net_g_4.pth", map_location="cpu")
    create_model("ffnetsr_test", 2).load_state_dict(state["params_ema"])
    assert re.search(r"# psnr: [\d.]+", next(root.glob("train_*.log")).read_text())
