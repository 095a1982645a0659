"""Shared figure set-up and atomic saving (PNG for the README, PDF for papers)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

from sim.files import atomic_write  # noqa: E402


def new_figure(*, nrows: int = 1, ncols: int = 1, width: float = 5.5, height: float = 4.0):
    """A figure with a grid of axes; returns `(fig, ax)` or `(fig, axes)`."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), squeeze=True)
    return fig, axes


def save(fig, outdir: Path, name: str, *, dpi: int = 130, bbox_inches: str | None = None) -> list[Path]:
    """Write `name.png` and `name.pdf` into `outdir` atomically, then close the figure.

    With `bbox_inches=None` the layout is tightened first; `bbox_inches="tight"` crops at save
    time instead (figures with suptitles or outside legends).
    """
    outdir = Path(outdir)
    if bbox_inches is None:
        fig.tight_layout()
    paths = []
    for fmt in ("png", "pdf"):
        path = outdir / f"{name}.{fmt}"
        kwargs = {"format": fmt, "bbox_inches": bbox_inches}
        if fmt == "png":
            kwargs["dpi"] = dpi
        atomic_write(path, lambda f, kwargs=kwargs: fig.savefig(f, **kwargs))
        paths.append(path)
    plt.close(fig)
    return paths


def encode(fig, suffix: str, *, dpi: int = 120) -> bytes:
    """`fig` encoded as `suffix` (`.png`, `.pdf`, `.svg`), then closed (for atomic writes by the caller)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=suffix.lstrip("."), dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
