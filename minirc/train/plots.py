"""Loss curves: each loss term per iteration (faint) with its moving average (bold), and the LR."""
from __future__ import annotations

import numpy as np

from minirc.train.logs import LossLog


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first points average what exists so far)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_losses(log, path=None, window: int | None = None, title: str = "Mask R-CNN training losses"):
    """Plot a :class:`LossLog` (or its records): one panel per loss, plus the learning rate.

    Returns the matplotlib figure; saves it as PNG when ``path`` is given.
    """
    import matplotlib.pyplot as plt

    log = log if isinstance(log, LossLog) else LossLog(log)
    keys = log.keys()
    n_panels = len(keys) + 1
    cols = 3
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    it = log.column("iter")
    window = window or max(1, min(50, len(log) // 10))
    for ax, key in zip(axes.flat, keys):
        y = log.column(key)
        ax.plot(it, y, color="tab:blue", alpha=0.3, lw=0.8, label="per iteration")
        ax.plot(it, moving_average(y, window), color="tab:blue", lw=1.8, label=f"mean of last {window}")
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        if len(y) and np.nanmin(y) > 0 and np.nanmax(y) / max(np.nanmin(y), 1e-12) > 30:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    ax = axes.flat[len(keys)]
    ax.plot(it, log.column("lr"), color="tab:orange")
    ax.set_title("learning rate (warm-up, then steps)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("lr")
    ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n_panels:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
