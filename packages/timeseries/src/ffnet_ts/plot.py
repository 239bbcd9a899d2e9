"""PNG of a few test windows of the target variable: history, truth and forecast (original units)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_windows(path: str | Path, prep, predictions: np.ndarray, *, n_windows: int = 3, title: str = "") -> None:
    """Plot ``n_windows`` evenly spaced test windows of the target; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ffnet.fileio import save_figure

    target = prep.columns.index(prep.series.target)
    score_col = prep.out_idx.index(target) if target in prep.out_idx else len(prep.out_idx) - 1
    mean, std = prep.mean[target], prep.std[target]
    start, n = prep.borders["test"][0], len(predictions)
    data = prep.data[:, target].numpy() * std + mean
    picks = np.linspace(0, n - 1, min(n_windows, n)).round().astype(int)
    fig, axes = plt.subplots(len(picks), 1, figsize=(10, 2.6 * len(picks)), squeeze=False)
    L, H = prep.lookback, prep.horizon
    for ax, i in zip(axes[:, 0], picks):
        s = start + i
        t_hist, t_fut = np.arange(-L, 0), np.arange(0, H)
        ax.plot(t_hist, data[s:s + L], color="0.4", lw=1, label="history")
        ax.plot(t_fut, data[s + L:s + L + H], color="C0", lw=1.2, label="truth")
        ax.plot(t_fut, predictions[i, :, score_col] * std + mean, color="C3", lw=1.2, label="forecast")
        date = prep.series.dates[s + L] if s + L < len(prep.series.dates) else ""
        ax.set_title(f"test window {i} (forecast starts {date})", fontsize=9)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_ylabel(prep.series.target)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("steps relative to the forecast start")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
