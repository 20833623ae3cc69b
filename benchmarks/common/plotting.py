"""One Matplotlib figure written to a file (headless backend, tight layout, closed afterwards)."""
from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def figure(path: Path, *args, dpi: int = 120, **kwargs):
    """``with figure(path, ...) as (fig, axes):`` draw; on exit the figure is laid out, saved to
    ``path`` at ``dpi`` and closed. ``args`` / ``kwargs`` go to ``plt.subplots``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
