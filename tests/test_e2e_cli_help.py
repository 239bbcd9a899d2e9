"""`--help` and argparse usage errors answer without importing torch (a 3-7 s import on 2 cores); `import ffnet`
imports no timm, yet registers the FFNet models with timm in either import order."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

_CODE = """
import contextlib, io, sys
from {module} import main
for argv in (["--help"], ["{sub}", "--help"], ["--no-such-option"]):
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            main(argv)
        except SystemExit as e:
            code = e.code
    assert code == (2 if argv == ["--no-such-option"] else 0), (argv, code)
    assert "usage:" in out.getvalue() + err.getvalue(), argv
heavy = sorted(m for m in ("torch", "ffnet", "timm", "numpy", "pandas") if m in sys.modules and m != "{own}")
print(",".join(heavy) or "none")
"""


@pytest.mark.parametrize("module,sub", [("ffnet_ts.cli", "forecast"), ("ffnet_sr.cli", "upscale"),
                                        ("ffnet_3d.cli", "train"), ("ffnet.cli", "info")])
def test_help_does_not_import_torch(module, sub):
    own = module.split(".")[0]  # `ffnet`'s own package is imported, of course; `ffnet_ts` must not import it
    out = subprocess.run([sys.executable, "-c", _CODE.format(module=module, sub=sub, own=own)], check=True,
                         capture_output=True, text=True).stdout
    assert out.split()[-1] == "none"


_ORDERS = {
    # `import ffnet` imports no timm; the models register when timm is imported, in either order
    "ffnet first": "import ffnet, sys; assert 'timm' not in sys.modules; import timm",
    "timm first": "import timm; import ffnet",
    "from-import of timm first": "from timm.models import create_model; import ffnet; import timm",
    "ffnet's own factory first": "import ffnet; ffnet.create_model('ffnet_1'); import timm",
}


@pytest.mark.parametrize("order", sorted(_ORDERS))
def test_timm_create_model_works_in_either_import_order(order):
    code = _ORDERS[order] + ("; m = timm.create_model('ffnet_1', num_classes=3); print(type(m).__name__, "
                             "m.num_classes, len(timm.list_models('ffnet_*')) >= 4)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["FFNet", "3", "True"]


_LAZY_NAMES = """
import ffnet, sys
from ffnet.profile import count_params  # the submodule first: `ffnet.profile` must stay the function
from ffnet import layers, models, reparam
assert ffnet.MetaMixer is layers.MetaMixer and ffnet.models is models and ffnet.count_params is count_params
assert ffnet.profile is sys.modules["ffnet.profile"].profile, ffnet.profile
assert ffnet.reparameterize_model is reparam.reparameterize_model
from ffnet import *  # noqa: F403
assert callable(profile) and set(ffnet.__all__) <= set(dir(ffnet))  # noqa: F405
try:
    ffnet.nope
except AttributeError as e:
    assert "no attribute 'nope'" in str(e)
else:
    raise AssertionError("ffnet.nope")
print("ok")
"""


def test_ffnet_lazy_names_are_the_real_ones():
    out = subprocess.run([sys.executable, "-c", _LAZY_NAMES], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["ok"]


def test_cli_choices_match_the_training_loop():
    """The torch-free option lists the ts parser uses are the ones the training loop accepts."""
    from ffnet_ts import options, train

    assert set(options.LOSSES) == set(train._LOSS_FNS)
    for s in options.LR_SCHEDULES:
        assert train.lr_at(train.TrainConfig(lr_schedule=s, epochs=10), 5, 0, 10) > 0
    with pytest.raises(train.ConfigError):
        train.lr_at(train.TrainConfig(lr_schedule="step"), 5, 0, 10)
    cpu = torch.device("cpu")
    for p in options.PRECISIONS:
        train.check_precision(p, cpu)
    with pytest.raises(train.ConfigError):
        train.check_precision("fp16", cpu)
