"""Shared figure set-up and atomic saving (PNG for the README, PDF for papers)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

from sim._atomic import atomic_write  # noqa: E402


def new_figure(*, nrows: int = 1, ncols: int = 1, width: float = 5.5, height: float = 4.0):
    """A figure with a grid of axes; returns `(fig, ax)` or `(fig, axes)`."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), squeeze=True)
    return fig, axes


def save(fig, outdir: Path, name: str) -> list[Path]:
    """Write `name.png` and `name.pdf` into `outdir` atomically, then close the figure."""
    outdir = Path(outdir)
    fig.tight_layout()
    paths = []
    for fmt, kwargs in (("png", {"dpi": 130}), ("pdf", {})):
        path = outdir / f"{name}.{fmt}"
        atomic_write(path, lambda f, fmt=fmt, kwargs=kwargs: fig.savefig(f, format=fmt, **kwargs))
        paths.append(path)
    plt.close(fig)
    return paths
