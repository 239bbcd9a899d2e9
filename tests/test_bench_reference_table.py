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


def test_remaining_plan_counts_the_epochs_a_resume_state_still_needs(bench, monkeypatch, tmp_path):
    import json

    import torch

    cells, state = tmp_path / "cells", tmp_path / "state"
    cells.mkdir()
    state.mkdir()
    monkeypatch.setattr(bench, "CELLS_DIR", cells)
    monkeypatch.setattr(bench, "STATE_DIR", state)
    out = tmp_path / "remaining.json"
    monkeypatch.setattr(bench, "REMAINING", out)
    finished = {**_cell("ETTh1", 96, "dlinear", 0.4), "epochs_run": 5}
    (cells / "ETTh1_96_dlinear.json").write_text(json.dumps(finished))  # finished: not measured
    torch.save({"epoch": 4, "bad_epochs": 2}, state / "ETTh1_96_patchtst.bf16.pt")  # 4 of 10 epochs done
    calls = []

    def fake_measure(ds, h, m, prep, steps=1, precision="fp32"):
        calls.append((ds, h, m, precision))
        return {"dataset": ds, "horizon": h, "model": m, "batch_size": 32, "step_seconds": 1.0,
                "epoch_seconds": 600.0, "max_epochs": bench.recipe(m, ds, h)[1]["epochs"]}

    monkeypatch.setattr(bench, "measure", fake_measure)
    rows = bench.plan_remaining("bf16", ["ETTh1"], [96], ["dlinear", "patchtst", "ffnet_ts"])
    assert calls == [("ETTh1", 96, "patchtst", "bf16"), ("ETTh1", 96, "ffnet_ts", "bf16")]
    by = {r["model"]: r for r in rows}
    assert by["patchtst"]["epochs_done"] == 4 and by["patchtst"]["seconds_left_max"] == 6 * 600
    assert by["ffnet_ts"]["epochs_done"] == 0 and by["ffnet_ts"]["seconds_left_max"] == 100 * 600
    assert json.loads(out.read_text())["precision"] == "bf16"
    # the run order now uses the time left: the half-done PatchTST cell (1 h) before FFNet-TS (16.7 h)
    est = bench._load_estimates()
    assert est[("ETTh1", 96, "patchtst")] == 3600 and est[("ETTh1", 96, "ffnet_ts")] == 60000
    table = bench.remaining_table()
    assert "| ETTh1 | 96 | PatchTST | 1.00 (32) | 10.0 min | 4 / 10 | 1.0 |" in table
    assert "DLinear" not in table.split("\n\n")[0] and "**18 CPU-hours**" in table
    assert "median of 50 %" in table  # the finished DLinear cell ran 5 of its 10 epochs
    landed = {**_cell("ETTh1", 96, "patchtst", 0.4), "epochs_run": 10}
    torch.save({"epoch": 7, "bad_epochs": 0}, state / "ETTh1_96_patchtst.bf16.pt")  # the cell moved on
    assert "| ETTh1 | 96 | PatchTST | 1.00 (32) | 10.0 min | 7 / 10 | 0.5 |" in bench.remaining_table()
    (cells / "ETTh1_96_patchtst.json").write_text(json.dumps(landed))  # a cell that lands leaves the table
    assert "PatchTST" not in bench.remaining_table().split("\n\n")[0]


def test_a_cell_killed_by_a_signal_is_retried_and_an_error_is_not(bench, monkeypatch, tmp_path):
    """The OOM killer ended a cell mid-run (rc -9, 2026-12-02); it resumes from its state file, so the runner
    queues it again, up to MAX_KILLS times. A cell that exits with an error is not retried."""
    import subprocess
    import types

    cells = tmp_path / "cells"
    cells.mkdir()
    monkeypatch.setattr(bench, "CELLS_DIR", cells)
    monkeypatch.setattr(bench, "STATE_DIR", tmp_path / "state")
    monkeypatch.setattr(bench, "_load_estimates", lambda: {})
    monkeypatch.setattr(bench, "ordered_cells", lambda est: [("ETTh1", 96, "dlinear"), ("ETTh2", 96, "dlinear")])
    monkeypatch.setattr(bench, "_mem_available_gb", lambda: 100.0)
    monkeypatch.setattr(bench, "write_table", lambda: "")
    codes = {"ETTh1": [-9, -9, 0], "ETTh2": [1]}
    runs = []

    def fake_run(cmd, env=None):
        ds = cmd[cmd.index("--cell") + 1]
        runs.append(ds)
        rc = codes[ds].pop(0)
        if rc == 0:
            (cells / f"{ds}_96_dlinear.json").write_text("{}")
        return types.SimpleNamespace(returncode=rc)

    monkeypatch.setattr(subprocess, "run", fake_run)
    bench.run_grid(1, datasets=["ETTh1", "ETTh2"], horizons=[96], models=["dlinear"])
    assert runs == ["ETTh1", "ETTh1", "ETTh1", "ETTh2"]  # killed twice, then finished; the error once
    codes["ETTh1"] = [-9] * (bench.MAX_KILLS + 1)
    (cells / "ETTh1_96_dlinear.json").unlink()
    runs.clear()
    bench.run_grid(1, datasets=["ETTh1"], horizons=[96], models=["dlinear"])
    assert runs == ["ETTh1"] * (bench.MAX_KILLS + 1)  # given up after MAX_KILLS retries


def test_resume_states_can_live_in_the_repo(load_benchmark, monkeypatch, tmp_path):
    """A new machine starts without ~/.cache: the resume states live in benchmarks/state/ ($FFNET_REF_STATE_DIR
    moves them), where FFNet-TS's are committed; locks, logs, smoke states and the big baselines' states are
    ignored by git."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("FFNET_REF_STATE_DIR", str(tmp_path / "st"))
    assert load_benchmark("timeseries_reference").STATE_DIR == tmp_path / "st"
    monkeypatch.delenv("FFNET_REF_STATE_DIR")
    assert load_benchmark("timeseries_reference").STATE_DIR == root / "benchmarks" / "state" / "timeseries_reference"

    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    d = "benchmarks/state/timeseries_reference/"
    names = [d + n for n in ("ETTm2_96_ffnet_ts.bf16.pt", "ETTm2_96_ffnet_ts.bf16.gc8.pt",
                             "ETTm2_96_ffnet_ts.lock", "runF.log", "x.bf16.smoke.pt", "x.bf16.gc8.smoke.pt",
                             "ETTh1_336_patchtst.bf16.pt", "Weather_96_itransformer.pt")]
    out = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=root, capture_output=True, text=True)
    assert out.stdout.split() == names[2:]  # FFNet-TS resume states are committed, checkpointed or not


def test_grid_plot_draws_only_finished_cells_relative_to_itransformer(bench, tmp_path):
    from PIL import Image

    cells = {("ETTh1", 96, "itransformer"): _cell("ETTh1", 96, "itransformer", 0.40),
             ("ETTh1", 96, "ffnet_ts"): _cell("ETTh1", 96, "ffnet_ts", 0.38),
             ("ETTh1", 720, "ffnet_ts"): _cell("ETTh1", 720, "ffnet_ts", 0.48),  # no iTransformer cell here
             ("ETTh2", 96, "dlinear"): _cell("ETTh2", 96, "dlinear", 0.90)}
    png = tmp_path / "grid.png"
    drawn = bench.plot_grid(cells, png)
    assert drawn[("mse", "ffnet_ts", "ETTh1")] == [(96, 0.38), (720, 0.48)]
    assert drawn[("mse", "patchtst", "ETTh1")] == []
    rel = drawn[("rel", "ffnet_ts", "ETTh1")]
    assert [h for h, _ in rel] == [96] and rel[0][1] == pytest.approx(-5.0)  # 0.38 / 0.40 - 1
    assert drawn[("rel", "dlinear", "ETTh2")] == []  # nothing to compare against
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 300


def test_checkpointed_cells_are_marked_and_their_states_kept_apart(bench, tmp_path, monkeypatch):
    assert bench._state_tag("fp32") == "" and bench._state_tag("bf16") == ".bf16"
    assert bench._state_tag("bf16", 8) == ".bf16.gc8"
    cell = dict(_cell("ETTm1", 192, "ffnet_ts", 0.4), train_args={"precision": "bf16", "grad_checkpointing": 8})
    assert bench._cell(cell).endswith("ᵇᶜ") and not bench._cell(_cell("ETTm1", 192, "dlinear", 0.4)).endswith("ᶜ")
    # the plan's progress reads whichever state of the cell went furthest, checkpointed or not
    monkeypatch.setattr(bench, "STATE_DIR", tmp_path)
    torch = pytest.importorskip("torch")
    torch.save({"epoch": 3, "bad_epochs": 1}, tmp_path / "ETTm1_192_ffnet_ts.bf16.pt")
    torch.save({"epoch": 5, "bad_epochs": 0}, tmp_path / "ETTm1_192_ffnet_ts.bf16.gc8.pt")
    torch.save({"epoch": 9, "bad_epochs": 0}, tmp_path / "ETTm1_192_ffnet_ts.bf16.gc8.smoke.pt")
    torch.save({"epoch": 9, "bad_epochs": 0}, tmp_path / "ETTm1_192_ffnet_ts.pt")  # fp32: another precision
    assert bench._progress("ETTm1_192_ffnet_ts", "bf16") == (5, 0)
    assert bench._progress("ETTm1_336_ffnet_ts", "bf16") == (0, 0)
    # a checkpointed FFNet-TS cell needs less memory in the runner's check; other models are unaffected
    assert bench.memory_need_gb("ETTm1", 192, "ffnet_ts", 8) < 0.6 * bench.memory_need_gb("ETTm1", 192, "ffnet_ts")
    assert bench.memory_need_gb("Weather", 192, "patchtst", 8) == bench.memory_need_gb("Weather", 192, "patchtst")
