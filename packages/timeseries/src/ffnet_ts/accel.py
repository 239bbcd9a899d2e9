"""CPU acceleration helpers: optional ``torch.compile`` with a safe fallback to eager, native-bf16 detection
(for ``--precision bf16``) and glibc's handling of freed activation buffers.

Inductor compiles CPU graphs to C++, so it needs a working C++ compiler. Without one (or when compilation
fails for any other reason) the model runs eagerly and one warning says why; training never fails because
of it.

Measured on this project's 2-core AMD EPYC machine (AVX2 + FMA, no AVX-512; torch 2.15, inductor's C++
backend; ``benchmarks/timeseries_ett.py --speed 20 --threads 1|2 --compile``, other jobs paused, 2026-12-01):
the compiled FFNet-TS training step is 2.3x / 2.0x *slower* than eager (855 vs 379 ms at 1 thread, 458 vs
234 ms at 2) after 9-23 s of compilation: inductor's kernels lose to the hand-laid-out fast path of
:mod:`ffnet_ts.fastconv`, so the forecasting CLI trains eagerly. (An earlier "3 % faster" reading had timed the
eager fallback: compilation was failing on the fast dropout, since fixed and tested.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import shutil
import warnings

import torch
from torch import nn

__all__ = ["cxx_compiler", "maybe_compile", "cpuinfo", "cpu_bf16_native", "keep_freed_memory"]


def cxx_compiler() -> str | None:
    """Path of the C++ compiler inductor would use, or None when there is none."""
    try:
        from torch._inductor import config as inductor_config

        cxx = inductor_config.cpp.cxx
        candidates = [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c]
    except Exception:  # noqa: BLE001 - an inductor-less torch build simply has no compile path
        return None
    for c in [*candidates, "g++", "c++", "clang++"]:
        path = shutil.which(c)
        if path:
            return path
    return None


def maybe_compile(model: nn.Module, enabled: bool = True, *, device: torch.device | str = "cpu") -> nn.Module:
    """``torch.compile(model)`` when asked and possible; otherwise ``model`` itself, with one warning.

    The returned module shares its parameters with ``model``; keep ``model`` for state dicts and checkpoints.
    """
    if not enabled:
        return model
    if not hasattr(torch, "compile"):
        warnings.warn("torch.compile is not available in this torch build; running eagerly", stacklevel=2)
        return model
    if torch.device(device).type == "cpu" and cxx_compiler() is None:
        warnings.warn("torch.compile needs a C++ compiler on CPU and none was found (g++/c++/clang++); "
                      "running eagerly", stacklevel=2)
        return model
    try:
        compiled = torch.compile(model)
    except Exception as e:  # noqa: BLE001 - compile is an optimization, never a reason to fail
        warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); running eagerly", stacklevel=2)
        return model
    return _CompiledOrEager(model, compiled)


class _CompiledOrEager(nn.Module):
    """Calls the compiled module; if compilation fails on the first call, warns once and stays eager.

    ``torch.compile`` is lazy: a missing or broken toolchain only shows up when the first batch is traced.
    """

    def __init__(self, model: nn.Module, compiled):
        super().__init__()
        self.model = model
        self._compiled = compiled
        self._checked = False

    def forward(self, *args, **kwargs):
        if self._compiled is None:
            return self.model(*args, **kwargs)
        if self._checked:
            return self._compiled(*args, **kwargs)
        try:
            out = self._compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"torch.compile failed on the first call ({type(e).__name__}: {str(e)[:200]}); "
                          "running eagerly", stacklevel=2)
            self._compiled = None
            return self.model(*args, **kwargs)
        self._checked = True
        return out


def cpuinfo(path: str = "/proc/cpuinfo") -> dict | None:
    """The first CPU's ``model name`` and ``flags`` from /proc/cpuinfo (None where there is no such file).

    The one reader of that file: the bf16 check below and the benchmarks' environment records use it."""
    info: dict = {"model": None, "flags": set()}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and info["model"] is None:
                    info["model"] = value.strip()
                elif key == "flags":
                    info["flags"] = set(value.split())
                    break
    except OSError:
        return None
    return info


def cpu_bf16_native() -> bool:
    """True when this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16), so CPU bf16 autocast is fast.

    Without them oneDNN emulates bf16: on the project's AMD EPYC (AVX2 only) a bf16 1024^3 matmul ran at
    0.2 GFLOP/s against 78 in fp32. On an Intel Xeon with AMX (2026-12-01) it ran at 1146 vs 142 GFLOP/s.
    """
    info = cpuinfo()
    if info is not None:
        return bool(info["flags"] & {"amx_bf16", "avx512_bf16"})
    try:  # not Linux: ask oneDNN (true on AVX-512 CPUs, which at least convert in hardware)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


_MALLOC_TUNED = False
KEEP_MEMORY_ENV = "FFNET_TS_KEEP_FREED_MEMORY"  # "0": leave glibc's allocator as it is


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed activation buffers for reuse instead of returning them to the kernel.

    By default glibc serves every allocation above 128 KiB-32 MiB (adaptive) with a fresh ``mmap`` and gives
    it back on free, so each training step page-faults its activations in again, and the kernel time spent
    mapping and zeroing those pages (and perhaps compacting memory for huge pages: not profiled) rivals the
    arithmetic. This sets, through ``mallopt``:

    * ``M_MMAP_MAX = 0``: no allocation is served by its own ``mmap``; all come from the heap, which also
      covers the activations above glibc's 32 MiB threshold cap that the reference recipes' batches produce
      (an fp32 (512, 896, 48) tensor is 88 MB). glibc still falls back to ``mmap`` if the heap cannot grow.
    * ``M_TRIM_THRESHOLD`` = -1, which glibc takes as SIZE_MAX, and ``M_MMAP_THRESHOLD`` at 32 MiB: the heap
      is never trimmed, so freed pages stay mapped and the next step reuses them without a fault. (Until session
      30 this was 2**31 - 1, the largest positive int. glibc then still trimmed whenever more than 2 GiB at the
      heap's top was free, which the reference grid's batch-2048 ETTm steps did on every step: the heap swung
      between 7 and 12 GB and the process spent 42 % of its CPU time in the kernel, faulting 8,000 pages a
      second back in.)

    Measured by ``benchmarks/timeseries_malloc.py`` (Intel Xeon VM, 2026-12-02; Weather shapes, 21 variables,
    ffn_ratio 4, bf16, 2 threads, fresh processes, settings alternated): a batch-128 step took 1.23 s with
    glibc's defaults (0.65 s of it kernel time) and 0.66 s with this; batch 256 3.68 -> 1.30 s; batch 512
    5.04 -> 2.19 s. The losses agree bit for bit (the allocator does not touch the arithmetic). The cost:
    the process keeps its peak heap plus fragmentation (peak RSS 3.2 -> 5.2 GB at batch 512; a longer loop
    levelled off at 6.3 GB). ``FFNET_TS_KEEP_FREED_MEMORY=0`` opts out. No-op off glibc.
    Returns whether it applied.

    ``import ffnet_ts`` before torch also sets torch's ``THP_MEM_ALLOC_ENABLE=1`` (2 MiB-aligned allocations
    advised to use transparent huge pages): with the heap kept, the few faults left are then 2 MiB ones (218
    instead of 6,720 minor faults per batch-256 step, one stand-alone step loop). It needs the kernel's THP
    mode ``madvise`` or ``always``.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if platform.system() != "Linux" or os.environ.get(KEEP_MEMORY_ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024) == 1
        ok = libc.mallopt(m_trim_threshold, -1) == 1 and ok  # int -1 -> size_t SIZE_MAX: never trim
        ok = libc.mallopt(m_mmap_max, 0) == 1 and ok
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = ok
    return ok
