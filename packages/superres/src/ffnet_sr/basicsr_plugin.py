"""BasicSR plugin: registers FFNetSR (and the L1 + FFT loss) into BasicSR's registries.

This is the ONLY module of ffnet_sr that imports ``basicsr``; import it only when BasicSR is wanted
(``import ffnet_sr`` never does). PyPI's basicsr 1.4.2 imports the long-removed
``torchvision.transforms.functional_tensor`` (BasicSR#533, fixed upstream only after the last PyPI
release), so a one-function shim is installed before the first ``import basicsr``.

Usage from BasicSR YAML: ``network_g: {type: FFNetSR, upscale: 2, num_feat: 48, num_block: 8}`` and
``pixel_opt: {type: L1FFTLoss, loss_weight: 1.0, fft_weight: 0.02}``; run BasicSR's own pipelines with
``ffnet-sr basicsr train -opt options/train/basicsr_ffnetsr_mini_x2.yml`` (or ``test``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import types


def _install_torchvision_shim() -> None:
    # NOTE: basicsr/data/degradations.py does `from torchvision.transforms.functional_tensor import
    # rgb_to_grayscale`; the function now lives in torchvision.transforms.functional.
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision: nothing to do)
    except ImportError:
        from torchvision.transforms import functional as F

        shim = types.ModuleType(name)
        shim.rgb_to_grayscale = F.rgb_to_grayscale
        sys.modules[name] = shim


_install_torchvision_shim()

import random  # noqa: E402

import torch  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils import data as tud  # noqa: E402

from .archs import FFNetSR  # noqa: E402
from .data import PairSampler, to_float  # noqa: E402
from .train import fft_l1  # noqa: E402


class L1FFTLoss(nn.Module):
    """``loss_weight * (L1(pred, gt) + fft_weight * L1(rfft2(pred), rfft2(gt)))`` (FFNet's SR loss)."""

    def __init__(self, loss_weight: float = 1.0, fft_weight: float = 0.02, reduction: str = "mean"):
        super().__init__()
        if reduction != "mean":
            raise ValueError("L1FFTLoss supports reduction='mean' only")
        self.loss_weight, self.fft_weight = loss_weight, fft_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight=None) -> torch.Tensor:
        return self.loss_weight * (nn.functional.l1_loss(pred, target) + self.fft_weight * fft_l1(pred, target))


class HRFolderOnTheFlyDataset(tud.Dataset):
    """BasicSR training dataset from HR folders only: MATLAB-bicubic LR made once at load time.

    Options: ``dataroot_gt`` (folders or dataset names, comma-separated), ``scale``, ``gt_size``,
    ``use_hflip``, ``use_rot``. Returns BasicSR's ``{'lq', 'gt', 'lq_path', 'gt_path'}`` dicts.
    """

    def __init__(self, opt: dict):
        super().__init__()
        roots = opt["dataroot_gt"]  # BasicSR's option parser insists on a string: comma-separate folders
        roots = roots if isinstance(roots, (list, tuple)) else [r.strip() for r in str(roots).split(",")]
        self.sampler = PairSampler(roots, int(opt["scale"]), int(opt["gt_size"]) // int(opt["scale"]),
                                   opt.get("use_hflip", True), opt.get("use_rot", True))

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, i: int) -> dict:
        lq, gt = self.sampler.patch(i, [random.random() for _ in range(5)])
        path = str(self.sampler.files[i])
        return {"lq": to_float(lq.contiguous()), "gt": to_float(gt.contiguous()), "lq_path": path, "gt_path": path}


def register() -> None:
    """Register our classes (idempotent: BasicSR's registry refuses duplicate names)."""
    for reg, obj in ((ARCH_REGISTRY, FFNetSR), (LOSS_REGISTRY, L1FFTLoss), (DATASET_REGISTRY, HRFolderOnTheFlyDataset)):
        if obj.__name__ not in reg:
            reg.register(obj)


register()


def build_basicsr_arch(arch_type: str, scale: int, **kwargs) -> nn.Module:
    """Instantiate any ARCH_REGISTRY arch (EDSR, SwinIR, ...) with BasicSR's ``upscale`` argument."""
    cls = ARCH_REGISTRY.get(arch_type)
    kwargs.setdefault("upscale", scale)
    return cls(**kwargs)


def prepare_options(path: str) -> str:
    """Make a BasicSR-ready temp copy of an options YAML.

    Expands ``$VARS`` (BasicSR does not), with ``$FFNET_SR_WEIGHTS`` defaulting to the package's
    shipped-weights folder, and converts a ``.safetensors`` ``pretrain_network_g`` into a temporary
    BasicSR ``.pth`` (``{'params': ...}``), since BasicSR loads weights with ``torch.load``.
    """
    from importlib import resources

    import yaml

    from .weights import PRETRAINED_DIR, load_state_dict

    os.environ.setdefault("FFNET_SR_WEIGHTS", str(resources.files("ffnet_sr") / PRETRAINED_DIR))
    with open(path) as f:
        text = os.path.expandvars(f.read())
    opt = yaml.safe_load(text)
    pre = (opt.get("path") or {}).get("pretrain_network_g")
    if pre and str(pre).endswith(".safetensors"):
        if not os.path.isfile(pre):
            raise FileNotFoundError(f"weights '{pre}' not found")
        fd, pth = tempfile.mkstemp(suffix=".pth", prefix="ffnet_sr_")
        os.close(fd)
        torch.save({"params": load_state_dict(pre)}, pth)
        opt["path"]["pretrain_network_g"] = pth
        opt["path"]["param_key_g"] = "params"
    fd, tmp = tempfile.mkstemp(suffix=".yml", prefix="ffnet_sr_")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return tmp


def main(argv: list[str] | None = None) -> None:
    """``ffnet-sr basicsr {train,test} -opt X.yml [BasicSR flags]``: BasicSR's own pipelines + our archs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "test"):
        raise SystemExit("usage: ffnet-sr basicsr {train,test} -opt OPTIONS.yml [basicsr flags]")
    mode, rest = argv[0], argv[1:]
    if "-opt" in rest:
        i = rest.index("-opt") + 1
        rest[i] = prepare_options(rest[i])
    sys.argv = [f"basicsr-{mode}"] + rest
    root = os.getcwd()  # experiments/ and results/ go under the current directory, as with BasicSR
    if mode == "train":
        from basicsr.train import train_pipeline

        train_pipeline(root)
    else:
        from basicsr.test import test_pipeline

        test_pipeline(root)
