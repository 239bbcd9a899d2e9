"""Shared helpers for the benchmark scripts: environment record, timing, result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    import torch

    return dict(python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                cuda=torch.cuda.is_available(), date=time.strftime("%Y-%m-%d %H:%M:%S"))


def interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int = 30, warmup: int = 3) -> dict:
    """Median seconds per call of each function, timed round-robin so background load hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: dict(median_s=statistics.median(v), min_s=min(v), rounds=len(v)) for k, v in times.items()}


def save(name: str, payload: dict, table: str) -> None:
    """Writes results/<name>.json and results/<name>.md (temp file + rename)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(payload, indent=2) + "\n"), (".md", table)):
        path = RESULTS / f"{name}{suffix}"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(table)
