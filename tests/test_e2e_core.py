"""End-to-end checks of the core package: the README commands and the import contract."""
import json
import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_ffnet_pulls_no_heavy_or_fragile_dependency():
    # `import ffnet` needs only torch/numpy/timm; spconv, gluonts, lightning, basicsr, open3d and numba
    # are imported only by the packages that need them.
    r = _run("import sys, ffnet; ffnet.create_model('ffnet_test');"
             "print([m for m in ('spconv', 'cumm', 'gluonts', 'lightning', 'basicsr', 'open3d', 'numba')"
             " if m in sys.modules])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_ffnet_info_console_script_json():
    r = subprocess.run([sys.executable, "-m", "ffnet.cli", "info", "ffnet_1", "--img-size", "256", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert round(row["params_fused"] / 1e6, 2) == 13.66 and round(row["macs_fused"] / 1e9, 2) == 2.98


def test_ffnet_info_bad_model_exits_2():
    r = subprocess.run([sys.executable, "-m", "ffnet.cli", "info", "resnet50"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
