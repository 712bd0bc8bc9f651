"""The evaluation report as one self-contained HTML page: its tables, and its images embedded."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from ..tasks import MULTILABEL, NER, REGRESSION
from .report import LEARNING_CURVES, number_text, split_png_name


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(number_text(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; }
td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def report_html(report: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """``report.html``: one file with everything in it (images as data URIs, no external asset)."""
    task = report["task"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Evaluation report ({html.escape(task)})</title><style>{STYLE}</style></head><body>",
        f"<h1>Evaluation report: {html.escape(task)}</h1>",
    ]
    if report.get("best_metric"):
        parts.append(f"<p>Best checkpoint chosen by dev <b>{html.escape(report['best_metric'])}</b>.</p>")
    if LEARNING_CURVES in images:
        parts += [
            "<h2>Learning curves</h2>",
            f'<img alt="learning curves" src="{_data_uri(images[LEARNING_CURVES])}">',
        ]
    for split, entry in report["splits"].items():
        parts.append(f"<h2>{html.escape(split)}</h2>")
        parts.append(_html_table(["metric", "value"], list(entry["summary"].items())))
        table = entry.get("per_type" if task == NER else "per_class")
        if table:
            first = "entity type" if task == NER else "label" if task == MULTILABEL else "class"
            rows = [[name, r["precision"], r["recall"], r["f1"], r["support"]] for name, r in table.items()]
            parts.append(_html_table([first, "precision", "recall", "f1", "support"], rows))
        name = split_png_name(task, split)
        if name in images:
            what = "predicted vs gold" if task == REGRESSION else "confusion matrix"
            parts.append(
                f'<h3>{what}</h3><img alt="{what} {html.escape(split)}" src="{_data_uri(images[name])}">'
            )
        if entry.get("most_confused"):
            rows = [[p["gold"], p["pred"], p["count"]] for p in entry["most_confused"]]
            unit = entry["confusion_matrix"]["unit"]
            parts += [f"<h3>most confused ({unit}s)</h3>", _html_table(["gold", "predicted", "count"], rows)]
    if report.get("train"):
        parts += ["<h2>train</h2>", _html_table(["metric", "value"], list(report["train"].items()))]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------- writing
