"""Atomic file output shared by the domain packages: write beside the target, then rename over it.

A reader never sees a half-written file, an interrupted write leaves the old file untouched, and the
result gets the permissions a plain ``open(path, "w")`` would give (``tempfile.mkstemp`` creates 0600).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def default_file_mode() -> int:
    """0o666 minus the process umask: the mode a newly created file normally gets."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path in ``path``'s directory; on success rename it over ``path``.

    ``suffix`` lets writers that pick the format from the extension (PIL, OpenCV, matplotlib) see
    the right one. On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure to ``path`` atomically (format from its suffix) and close the figure, also when
    writing fails. matplotlib is imported only here, by callers that already made a figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_output(path, suffix=path.suffix or ".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp:
        Path(tmp).write_bytes(data)
