"""Headless figures for the report and the UI: matplotlib ``Figure`` objects rendered to base64 PNG."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.figure import Figure


def figure(width: float, height: float):
    """A figure with one axes, not registered with pyplot: headless, nothing global to close or to switch."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def img(alt: str, png_base64: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_base64}">'


def fmt(value, digits: int = 3) -> str:
    """A number for the report; ``n/a`` for None and NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def table(rows: list[tuple[str, str]]) -> str:
    """A two-column table of (label, value) rows, both escaped."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def null_png(null_values: list[float], observed: float, chance: float, label: str) -> str:
    fig, ax = figure(4.5, 3.5)
    ax.hist(null_values, bins=min(20, max(5, len(null_values) // 2)), color="lightgrey", edgecolor="grey")
    ax.axvline(observed, color="C3", label=f"observed {observed:.3f}")
    ax.axvline(chance, ls="--", color="black", label="chance")
    ax.set(xlabel=f"{label} of the procedure on permuted outcomes", ylabel="permutations", title="Permutation test")
    ax.legend(loc="upper left")
    return png(fig)
