"""The reference-grid benchmark keeps the README's results block in sync with its cell JSONs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("timeseries_reference")


def _cell(ds, h, model, mse):
    return dict(dataset=ds, horizon=h, model=model, mse=mse, mae=mse + 0.01)


def test_results_table_averages_only_finished_cells(bench):
    cells = {("ETTh1", 96, "ffnet_ts"): _cell("ETTh1", 96, "ffnet_ts", 0.4),
             ("ETTh1", 720, "ffnet_ts"): _cell("ETTh1", 720, "ffnet_ts", 0.5)}
    table = bench.results_table(cells)
    row = next(r for r in table.splitlines() if r.startswith("| **ETTh1 avg**"))
    assert "**0.450 / 0.460** (2/4 H)" in row  # mean of the two finished horizons, flagged as partial
    assert "missing (0/4 subsets complete)" in table.splitlines()[-1]


def test_sync_readme_replaces_only_the_marked_block(bench, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_START}\nold table\n{bench.README_END}\noutro\n")
    assert bench.sync_readme("| new | table |", 3, 80, readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{bench.README_END}\noutro\n")
    assert "old table" not in text and "| new | table |" in text and "3 of 80 cells finished." in text
    # idempotent
    assert bench.sync_readme("| new | table |", 3, 80, readme) and readme.read_text() == text


def test_sync_readme_leaves_a_file_without_markers_alone(bench, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    assert not bench.sync_readme("| t |", 1, 80, readme)
    assert readme.read_text() == "no markers here\n"
    assert not bench.sync_readme("| t |", 1, 80, tmp_path / "absent.md")


def test_the_shipped_readme_has_the_markers(bench):
    text = bench.README.read_text()
    assert text.index(bench.README_START) < text.index(bench.README_END)


def test_cell_lock_is_exclusive_and_stale_locks_are_taken_over(bench, tmp_path):
    import os
    import subprocess
    import sys

    lock = tmp_path / "cell.lock"
    lock.write_text(str(os.getppid()))  # a live process that is not us: the cell is busy
    assert not bench._acquire_lock(lock)
    assert lock.read_text() == str(os.getppid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(str(dead.pid))  # its process is gone: take the lock over
    assert bench._acquire_lock(lock) and lock.read_text() == str(os.getpid())
    lock.unlink()
    assert bench._acquire_lock(lock) and lock.read_text() == str(os.getpid())


def test_bf16_cells_are_marked_and_refused_where_bf16_is_emulated(bench, monkeypatch, tmp_path, capsys):
    fp32 = {**_cell("ETTh1", 96, "ffnet_ts", 0.4), "train_args": {"lr": 1e-4}}
    bf16 = {**_cell("ETTh1", 720, "ffnet_ts", 0.5), "train_args": {"lr": 1e-4, "precision": "bf16"}}
    table = bench.results_table({("ETTh1", 96, "ffnet_ts"): fp32, ("ETTh1", 720, "ffnet_ts"): bf16})
    rows = {r.split("|")[2].strip(): r for r in table.splitlines() if r.startswith("| ETTh1 |")}
    assert "0.400 / 0.410 |" in rows["96"] and "ᵇ" not in rows["96"]
    assert "0.500 / 0.510 ᵇ" in rows["720"]
    # a CPU without native bf16: one line, exit 2, no cell started
    from ffnet_ts import accel

    monkeypatch.setattr(accel, "cpu_bf16_native", lambda: False)
    assert bench.main(["--cell", "ETTh1", "96", "dlinear", "--precision", "bf16", "--epochs", "1",
                       "--max-windows", "40", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "native bf16" in err[0]
    assert not list(tmp_path.iterdir())
