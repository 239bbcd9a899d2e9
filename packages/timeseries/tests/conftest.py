"""Fixtures shared by the ffnet-timeseries tests."""

from __future__ import annotations

import pytest
import torch
from ffnet_ts.testing import staged_csv, truncated_csv


@pytest.fixture
def one_thread():
    """Bit-exact comparisons need a fixed thread count; one thread is also fastest on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_csv(data_dir, tmp_path_factory):
    """The first 600 rows of the real ETTh1 as a CSV of its own."""
    return truncated_csv(staged_csv(data_dir), tmp_path_factory.mktemp("ts") / "etth1_600.csv", 600)
