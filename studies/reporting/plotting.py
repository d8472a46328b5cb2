"""What every report figure shares: matplotlib without a display, and the finish (title, layout, atomic PNG)."""

from __future__ import annotations

import os
from pathlib import Path

from ..engine.checkpoints import save_figure_atomic


def pyplot():
    """matplotlib.pyplot on the Agg backend (reports are written without a display). An MPLBACKEND in the
    environment is overridden: a report never needs another backend, and a bad name would stop matplotlib's import."""
    os.environ["MPLBACKEND"] = "Agg"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(plt, fig, path: Path, title: str | None = None) -> bool:
    """Title, layout, the PNG written atomically, the figure closed; True (the figure was drawn)."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()) if title else None)  # room for the title
    save_figure_atomic(fig, path)
    plt.close(fig)
    return True
