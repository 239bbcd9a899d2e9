"""`--help` and argparse usage errors answer without importing torch (a 3-7 s import on 2 cores)."""

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
heavy = sorted(m for m in ("torch", "ffnet", "timm", "numpy", "pandas") if m in sys.modules)
print(",".join(heavy) or "none")
"""


@pytest.mark.parametrize("module,sub", [("ffnet_ts.cli", "forecast"), ("ffnet_sr.cli", "upscale"),
                                        ("ffnet_3d.cli", "train")])
def test_help_does_not_import_torch(module, sub):
    out = subprocess.run([sys.executable, "-c", _CODE.format(module=module, sub=sub)], check=True,
                         capture_output=True, text=True).stdout
    assert out.split()[-1] == "none"


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
