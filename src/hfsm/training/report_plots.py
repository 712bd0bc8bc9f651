"""The evaluation report's images: confusion matrices, a regression scatter plot, learning curves.

matplotlib is imported inside the functions, and only its object-oriented API is used (``Figure``
drawn by the Agg canvas, never ``pyplot``): importing this module has no side effects and selects no
backend. :func:`hfsm.training.report.write_report` imports it only when it draws.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from .report import COLUMNS_2X2, Confusion, Curves, shown_part

DPI = 100
ANNOTATE_MAX = 30
"""Confusion matrices with more rows than this show colours only; the counts are in the JSON."""


def _figure(width_in: float, height_in: float) -> Any:
    """A matplotlib figure drawn by the Agg canvas, outside pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def confusion_figure_size(n_rows: int, n_columns: int) -> tuple[float, float]:
    """Inches: half an inch for each of the first 12 classes, 0.2 in for each further one (room for
    a count, then for a coloured cell and a 6-point name), so BANKING77's 77 classes take 19 in."""

    def side(n: int) -> float:
        return 0.5 * min(n, 12) + 0.2 * max(n - 12, 0)

    margin = 3.2  # tick labels, titles; the colour bar takes one more inch of width
    width = min(max(side(n_columns) + margin + 1.0, 5.0), 30.0)
    height = min(max(side(n_rows) + margin, 4.0), 30.0)
    return round(width, 2), round(height, 2)


def confusion_png(matrix: Confusion, title: str) -> bytes:
    """The matrix as a heatmap, coloured by the share of each gold row (so that a big ``O`` row or a
    frequent class does not wash the others out), with the counts written in when they fit."""
    part, note = shown_part(matrix)
    counts = part.counts.astype(float)
    if part.columns == COLUMNS_2X2:  # per label: normalise each half (gold yes, gold no) on its own
        halves = [counts[:, :2], counts[:, 2:]]
        shares = np.concatenate([h / np.maximum(h.sum(axis=1, keepdims=True), 1) for h in halves], axis=1)
    else:
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n_rows, n_columns = counts.shape
    figure = _figure(*confusion_figure_size(n_rows, n_columns))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.04, label="share of the gold row")
    small = max(n_rows, n_columns) > ANNOTATE_MAX
    font = 6 if small else 9
    axes.set_xticks(range(n_columns), part.columns, rotation=90, fontsize=font)
    axes.set_yticks(range(n_rows), part.rows, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(f"{title} ({part.unit}s{'; ' + note if note else ''})", fontsize=10)
    if not small:
        for (r, c), value in np.ndenumerate(part.counts):
            if value:
                colour = "white" if shares[r, c] > 0.6 else "black"
                axes.text(c, r, str(int(value)), ha="center", va="center", fontsize=font, color=colour)
    return _png(figure)


SCATTER_SIZE = (6.0, 6.0)


def scatter_png(gold: Sequence[float], pred: Sequence[float], title: str) -> bytes:
    """Regression: predicted against gold, with the diagonal a perfect model would sit on."""
    g, p = np.asarray(gold, dtype=float), np.asarray(pred, dtype=float)
    figure = _figure(*SCATTER_SIZE)
    axes = figure.add_subplot()
    axes.scatter(g, p, s=12, alpha=0.6)
    if len(g):
        low, high = float(min(g.min(), p.min())), float(max(g.max(), p.max()))
        axes.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="pred = gold")
        axes.legend(loc="upper left")
    axes.set_xlabel("gold")
    axes.set_ylabel("predicted")
    axes.set_title(title, fontsize=10)
    return _png(figure)


CURVES_SIZE = (11.0, 4.0)


def learning_curves_png(data: Curves, best_metric: str | None) -> bytes:
    """Two panels: losses (train per logging step, dev per evaluation), and the dev metric that
    picks the best checkpoint, with that checkpoint marked."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(*CURVES_SIZE)
    loss_axes, metric_axes = figure.subplots(1, 2)
    for axes in (loss_axes, metric_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if data.train_steps:
        loss_axes.plot(data.train_steps, data.train_loss, marker=".", label="train loss")
    if data.eval_steps:
        loss_axes.plot(data.eval_steps, data.eval_loss, marker="o", label="dev loss")
    if data.train_steps or data.eval_steps:
        loss_axes.legend()
    else:
        loss_axes.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=loss_axes.transAxes)
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("loss")
    loss_axes.set_title("loss")
    if data.metric_steps:
        metric_axes.plot(
            data.metric_steps, data.metric, marker="o", color="tab:green", label=f"dev {best_metric}"
        )
        if data.best_step is not None:
            value = data.metric[data.metric_steps.index(data.best_step)]
            metric_axes.plot(
                [data.best_step],
                [value],
                marker="*",
                markersize=14,
                color="tab:red",
                linestyle="",
                label=f"best checkpoint (step {data.best_step})",
            )
        metric_axes.legend()
    else:
        metric_axes.text(
            0.5, 0.5, "no dev evaluations", ha="center", va="center", transform=metric_axes.transAxes
        )
    metric_axes.set_xlabel("step")
    metric_axes.set_ylabel(best_metric or "dev metric")
    metric_axes.set_title(f"dev {best_metric}" if best_metric else "dev metric")
    return _png(figure)
