"""numba CPU kernels for sparse convs: neighbour maps and the fused depthwise conv (forward + backward).

The only module of :mod:`ffnet.sparse` that imports numba; it is imported lazily (first CPU
depthwise conv or neighbour-map build), so ``import ffnet`` does not pay numba's import. Every
kernel is compiled with ``cache=True`` (the first call in a fresh environment compiles, ~seconds
per dtype; later processes load the cached machine code).

Layout the kernels share: a *neighbour map* ``nbr`` of shape ``(N_out, K)`` int32 where
``nbr[o, k]`` is the input row that kernel offset ``k`` brings to output row ``o``, or ``-1``.
This is the output-stationary form of a kernel map: every output row is produced by one thread
that walks its ``K`` neighbours in offset order, so the result does not depend on the number of
threads and no atomics are needed. The backward pass for the input features runs the same kernel
on the inverse map ``inv[i, k] = o`` (``nbr[o, k] == i``); for ``stride 1`` submanifold maps of
odd kernels ``inv[:, k] == nbr[:, K - 1 - k]``, for strided maps it is built by a scatter.

Parallelism: the kernels are serial, ``nogil`` numba functions over a row range; :func:`run_rows`
splits the rows into one contiguous block per thread (``torch.get_num_threads()``) and runs the
blocks in parallel, by one of two backends (:func:`parallel_backend`):

* ``"omp"`` (default where numba's OpenMP threading layer loads): one ``parallel=True`` wrapper per
  kernel, ``prange`` over the blocks. Measured on 2 cores beside torch: after any torch op, torch's
  OpenMP workers keep spinning on the cores for milliseconds, so a Python-thread block waits for a
  core and a 2-thread sparse conv ran as slowly as a 1-thread one (5.8 vs 5.4 ms; 2.9 ms when run
  alone); numba's OpenMP team was not held up (2.7 ms either way), and the ffnet3d backbone went from
  383 to 310 ms per KITTI frame at 2 threads. numba's other layers (``workqueue``, ``tbb``) are never
  used: ``workqueue`` next to torch's OpenMP slowed every op several-fold.
* ``"pool"`` (fallback, or ``FFNET_SPARSE_THREADS=pool``): a small Python thread pool; the calling
  thread takes the first block.

Both give bit-identical results for any thread count: every output row is computed whole by one
call, and the weight gradient is reduced over fixed chunks (a function of the problem size only).
Small problems run inline on the calling thread.

Nothing here is CPU-specific in its indexing: a numba.cuda or Triton port maps one output row (or
row block) to one program with the same loops. No such port exists yet.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, prange

__all__ = ["run_rows", "parallel_backend", "build_hash", "subm_neighbors", "dw_forward", "dw_grad_weight", "grad_weight_chunk"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Below this many multiply-adds a conv runs on the calling thread (a pool hand-off costs ~50 us).
_MIN_PARALLEL_WORK = 1 << 18
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="ffnet-sparse")
        return _POOL


_BACKEND: str | None = None
ENV_THREADS = "FFNET_SPARSE_THREADS"


def parallel_backend() -> str:
    """``"omp"`` or ``"pool"``, decided once per process (see the module docstring).

    ``omp`` needs numba's OpenMP layer (the system's ``libgomp``); it is selected unless the user set
    ``NUMBA_THREADING_LAYER`` to something else, or ``FFNET_SPARSE_THREADS=pool``.
    """
    global _BACKEND
    if _BACKEND is None:
        import numba

        want = os.environ.get(ENV_THREADS, "omp").strip().lower()
        if want not in ("omp", "pool"):
            raise ValueError(f"{ENV_THREADS} must be 'omp' or 'pool', got {want!r}")
        layer = str(numba.config.THREADING_LAYER).lower()
        ok = want == "omp" and layer in ("default", "omp", "threadsafe")  # "safe" means TBB only
        if ok:
            try:
                import numba.np.ufunc.omppool  # noqa: F401  (loads libgomp; absent on some systems)
            except Exception:  # noqa: BLE001 - any load failure means: no OpenMP layer here
                ok = False
        if ok:
            numba.config.THREADING_LAYER = "omp"
        _BACKEND = "omp" if ok else "pool"
    return _BACKEND


def run_rows(kernel, n_rows: int, args: tuple, threads: int, work: int) -> None:
    """``kernel(*args, start, stop)`` over ``[0, n_rows)``: one contiguous block per thread.

    Every row is computed by exactly one call, so the result does not depend on ``threads``.
    """
    threads = max(1, min(int(threads), n_rows))
    if threads == 1 or work < _MIN_PARALLEL_WORK:
        kernel(*args, 0, n_rows)
        return
    if parallel_backend() == "omp":
        import numba

        threads = min(threads, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(threads)
        _PARALLEL[kernel](*args, n_rows, threads)
        if numba.threading_layer() != "omp":  # another layer was launched earlier in this process
            global _BACKEND
            _BACKEND = "pool"
        return
    bounds = [n_rows * t // threads for t in range(threads + 1)]
    futures = [_pool().submit(kernel, *args, bounds[t], bounds[t + 1]) for t in range(1, threads)]
    kernel(*args, bounds[0], bounds[1])  # the calling thread takes the first block
    for f in futures:
        f.result()


# ------------------------------------------------------------------------------ neighbour maps
@njit(cache=True, nogil=True)
def build_hash(keys):
    """Open-addressing hash ``key -> row`` of unique int64 keys: ``(table_keys, table_rows, shift)``."""
    n = keys.shape[0]
    bits = 1
    while (1 << bits) < 2 * n + 2:
        bits += 1
    cap = 1 << bits
    table_keys = np.full(cap, -1, dtype=np.int64)
    table_rows = np.full(cap, -1, dtype=np.int32)
    shift = np.uint64(64 - bits)
    mask = cap - 1
    for i in range(n):
        key = keys[i]
        h = np.int64((np.uint64(key) * _GOLDEN) >> shift)
        while table_keys[h] != -1 and table_keys[h] != key:
            h = (h + 1) & mask
        if table_keys[h] == -1:  # first occurrence wins (coordinates are validated unique upstream)
            table_keys[h] = key
            table_rows[h] = i
    return table_keys, table_rows, shift


@njit(cache=True, nogil=True)
def _subm_neighbors_rows(coords, shape, offsets, table_keys, table_rows, shift, nbr, start, stop):
    kvol = offsets.shape[0]
    d, h, w = shape[0], shape[1], shape[2]
    mask = table_keys.shape[0] - 1
    for o in range(start, stop):
        b = np.int64(coords[o, 0])
        z = np.int64(coords[o, 1])
        y = np.int64(coords[o, 2])
        x = np.int64(coords[o, 3])
        for k in range(kvol):
            zz = z + offsets[k, 0]
            yy = y + offsets[k, 1]
            xx = x + offsets[k, 2]
            row = -1
            if 0 <= zz < d and 0 <= yy < h and 0 <= xx < w:
                key = ((b * d + zz) * h + yy) * w + xx
                slot = np.int64((np.uint64(key) * _GOLDEN) >> shift)
                while table_keys[slot] != -1:
                    if table_keys[slot] == key:
                        row = table_rows[slot]
                        break
                    slot = (slot + 1) & mask
            nbr[o, k] = row


def subm_neighbors(coords: np.ndarray, shape: np.ndarray, offsets: np.ndarray, keys: np.ndarray,
                   threads: int = 1) -> np.ndarray:
    """``(N, K)`` int32 submanifold neighbour map: ``nbr[o, k]`` = row at ``coords[o] + offsets[k]`` or -1.

    Args:
        coords: ``(N, 4)`` int32 ``[b, z, y, x]``.
        shape: ``(3,)`` int64 ``(D, H, W)``.
        offsets: ``(K, 3)`` int64 ``(dz, dy, dx)`` in kernel row-major order.
        keys: ``(N,)`` int64 row-major keys of ``coords``.
        threads: threads for the lookups.
    """
    table = build_hash(keys)
    nbr = np.empty((coords.shape[0], offsets.shape[0]), dtype=np.int32)
    run_rows(_subm_neighbors_rows, coords.shape[0], (coords, shape, offsets, *table, nbr), threads, nbr.size * 4)
    return nbr


# ------------------------------------------------------------------------------ depthwise conv
@njit(cache=True, nogil=True)
def _dw_forward_rows(feats, weight, nbr, out, start, stop):
    kvol = nbr.shape[1]
    chs = feats.shape[1]
    for o in range(start, stop):
        row = out[o]
        for c in range(chs):
            row[c] = 0
        for k in range(kvol):
            i = nbr[o, k]
            if i < 0:
                continue
            src = feats[i]
            wk = weight[k]
            for c in range(chs):
                row[c] += src[c] * wk[c]


def dw_forward(feats: np.ndarray, weight: np.ndarray, nbr: np.ndarray, threads: int = 1) -> np.ndarray:
    """``out[o, c] = sum_k feats[nbr[o, k], c] * weight[k, c]`` (missing neighbours skipped).

    One thread owns each output row and sums its offsets in order 0..K-1: deterministic for any
    thread count. Also the input-gradient kernel: ``grad_in = dw_forward(grad_out, weight, inverse map)``.
    """
    out = np.empty((nbr.shape[0], feats.shape[1]), dtype=feats.dtype)
    run_rows(_dw_forward_rows, nbr.shape[0], (feats, weight, nbr, out), threads, nbr.size * feats.shape[1])
    return out


@njit(cache=True, nogil=True)
def _dw_grad_weight_chunks(feats, grad_out, nbr, chunk, partial, start, stop):
    n_out, kvol = nbr.shape
    chs = feats.shape[1]
    for b in range(start, stop):
        acc = partial[b]
        for o in range(b * chunk, min(n_out, (b + 1) * chunk)):
            g = grad_out[o]
            for k in range(kvol):
                i = nbr[o, k]
                if i < 0:
                    continue
                src = feats[i]
                ak = acc[k]
                for c in range(chs):
                    ak[c] += g[c] * src[c]


@njit(cache=True, nogil=True)
def _sum_in_order(partial):
    out = np.zeros(partial.shape[1:], dtype=partial.dtype)
    for b in range(partial.shape[0]):
        out += partial[b]
    return out


def grad_weight_chunk(n_out: int) -> int:
    """Rows per weight-gradient chunk: >= 256, at most 64 chunks (bounds the partials' memory)."""
    return max(256, -(-n_out // 64))


def dw_grad_weight(feats: np.ndarray, grad_out: np.ndarray, nbr: np.ndarray, threads: int = 1) -> np.ndarray:
    """``grad_w[k, c] = sum_o grad_out[o, c] * feats[nbr[o, k], c]``, reduced deterministically.

    Output rows are split into fixed chunks (:func:`grad_weight_chunk`: a function of the problem
    size, never of the thread count); each chunk's partial sum is accumulated in row order by one
    thread, then the partials are added in chunk order.
    """
    n_out, kvol = nbr.shape
    chunk = grad_weight_chunk(n_out)
    n_chunks = max(1, -(-n_out // chunk))
    partial = np.zeros((n_chunks, kvol, feats.shape[1]), dtype=feats.dtype)
    run_rows(_dw_grad_weight_chunks, n_chunks, (feats, grad_out, nbr, chunk, partial), threads,
             nbr.size * feats.shape[1])
    return _sum_in_order(partial)


# ------------------------------------------------------------------------------ OpenMP wrappers
# One per serial kernel (a generic wrapper taking the kernel as an argument would not be cached):
# prange over ``blocks`` contiguous row blocks, each run whole by one thread.
@njit(cache=True, nogil=True, parallel=True)
def _subm_neighbors_par(coords, shape, offsets, table_keys, table_rows, shift, nbr, n_rows, blocks):
    for b in prange(blocks):
        _subm_neighbors_rows(coords, shape, offsets, table_keys, table_rows, shift, nbr,
                             n_rows * b // blocks, n_rows * (b + 1) // blocks)


@njit(cache=True, nogil=True, parallel=True)
def _dw_forward_par(feats, weight, nbr, out, n_rows, blocks):
    for b in prange(blocks):
        _dw_forward_rows(feats, weight, nbr, out, n_rows * b // blocks, n_rows * (b + 1) // blocks)


@njit(cache=True, nogil=True, parallel=True)
def _dw_grad_weight_par(feats, grad_out, nbr, chunk, partial, n_rows, blocks):
    for b in prange(blocks):
        _dw_grad_weight_chunks(feats, grad_out, nbr, chunk, partial, n_rows * b // blocks, n_rows * (b + 1) // blocks)


_PARALLEL = {
    _subm_neighbors_rows: _subm_neighbors_par,
    _dw_forward_rows: _dw_forward_par,
    _dw_grad_weight_chunks: _dw_grad_weight_par,
}
