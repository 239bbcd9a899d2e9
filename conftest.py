"""Repository-wide pytest fixtures: device selection, data directory, GPU marker handling."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Device under test: $FFNET_TEST_DEVICE, else CPU (the same code paths run on CUDA)."""
    return torch.device(os.environ.get("FFNET_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the staged public test data ($FFNET_DATA_DIR); tests needing it skip without it."""
    root = os.environ.get("FFNET_DATA_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("FFNET_DATA_DIR is not set to the staged data directory")
    return Path(root)


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("timeseries_ett")``: a script from benchmarks/ imported as a module (they are not a package)."""
    import importlib.util
    import sys

    here = Path(__file__).resolve().parent / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, here / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(here))  # the scripts import their sibling ``_common`` as they do when run
        try:
            spec.loader.exec_module(mod)
        finally:
            sys.path.remove(str(here))
        return mod

    return load


@pytest.fixture(autouse=True)
def _autograd_left_on():
    """A test that leaves autograd off (a ``torch.no_grad()`` never exited, e.g. inside a suspended generator)
    errors itself, instead of breaking every later test of the process with 'does not require grad'."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("this test left autograd disabled (a torch.no_grad() that was never exited)")
