"""The evaluation report in ``output/data/``: tables, confusion matrices, learning curves, one HTML page.

Everything here works on results the job has already computed (the ``metrics.json`` content, the
gold and predicted labels of dev/test as :func:`~hfsm.training.predictions.gold_and_pred` returns
them, and the Trainer's ``log_history``); nothing is scored again, so every number in the tables is
the one in ``metrics.json``. The only new counts are the confusion matrices.

The images are drawn by :mod:`hfsm.training.report_plots` (matplotlib, imported only when
:func:`write_report` draws): importing this module has no side effects, and serving never imports it.

Failure policy (see :func:`write_report_or_warn`): the report is a view of ``metrics.json``, which is
written and checked before it; a report that cannot be written is logged as a warning with the
reason and noted in ``output/data/report_error.txt``, and the job still succeeds with its model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION

log = logging.getLogger("hfsm.train")

SPLITS = ("dev", "test")
MATRIX_MAX = 100
"""Beyond this many classes the matrix shows the classes involved in the most errors only."""
MATRIX_SHOWN = 50
MOST_CONFUSED = 20

TEXT_REPORT = "evaluation_report.txt"
JSON_REPORT = "evaluation_report.json"
LEARNING_CURVES = "learning_curves.png"
HTML_REPORT = "report.html"
REPORT_ERROR = "report_error.txt"


def split_png_name(task: str, split: str) -> str:
    """``confusion_matrix_<split>.png``; regression has no classes: ``pred_vs_gold_<split>.png``."""
    return f"pred_vs_gold_{split}.png" if task == REGRESSION else f"confusion_matrix_{split}.png"


# ----------------------------------------------------------------------------------------------- counts


@dataclass
class Confusion:
    """Counts with gold on the rows and the prediction on the columns.

    For multilabel, each row is one label's own 2x2 matrix laid flat (columns ``COLUMNS_2X2``).
    """

    rows: list[str]
    columns: list[str]
    counts: np.ndarray
    unit: str

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "gold_rows": self.rows,
            "pred_columns": self.columns,
            "counts": self.counts.astype(int).tolist(),
        }


COLUMNS_2X2 = [
    "gold yes, pred yes (TP)",
    "gold yes, pred no (FN)",
    "gold no, pred yes (FP)",
    "gold no, pred no (TN)",
]


def entity_type(tag: str) -> str:
    """``B-PER`` and ``I-PER`` -> ``PER``; ``O`` stays ``O``."""
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def ner_types(labels: Sequence[str]) -> list[str]:
    """Entity types in label order, ``O`` last (the row that would otherwise split the entity block)."""
    types = list(dict.fromkeys(entity_type(tag) for tag in labels if tag != "O"))
    return [*types, "O"]


def confusion(
    task: str, gold: Any, pred: Any, labels: Sequence[str], threshold: float = 0.5
) -> Confusion | None:
    """The confusion counts of one split (``None`` for regression, which gets a scatter plot instead).

    NER is counted per word over entity types (B-/I- merged) plus ``O``: entity spans cannot be
    paired one to one (a predicted span may overlap two gold ones, or none), while every word has
    exactly one gold and one predicted tag. It shows which types are mistaken for which, and the
    entities missed (a type predicted ``O``) or invented (``O`` predicted as a type); boundary errors
    (B- vs I-) are what the entity-level table above it measures.
    """
    if task == NER:
        pairs = [
            (entity_type(g), entity_type(p))
            for gold_tags, pred_tags in zip(gold, pred, strict=True)
            for g, p in zip(gold_tags, pred_tags, strict=True)
        ]
        names = ner_types(labels)
        unseen = sorted({t for pair in pairs for t in pair} - set(names))  # tags outside the label set
        names = [*names[:-1], *unseen, "O"]
        index = {name: i for i, name in enumerate(names)}
        counts = np.zeros((len(names), len(names)), dtype=np.int64)
        for g, p in pairs:
            counts[index[g], index[p]] += 1
        return Confusion(names, names, counts, "word")
    if task == CLASSIF:
        if len(gold) != len(pred):
            raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
        n = len(labels)
        counts = np.zeros((n, n), dtype=np.int64)
        np.add.at(counts, (np.asarray(gold, dtype=int), np.asarray(pred, dtype=int)), 1)
        return Confusion(list(labels), list(labels), counts, "example")
    if task == MULTILABEL:
        truth = np.asarray(gold) >= 0.5
        chosen = np.asarray(pred) >= threshold
        counts = np.stack(
            [
                (truth & chosen).sum(axis=0),
                (truth & ~chosen).sum(axis=0),
                (~truth & chosen).sum(axis=0),
                (~truth & ~chosen).sum(axis=0),
            ],
            axis=1,
        ).reshape(len(labels), 4)
        return Confusion(list(labels), list(COLUMNS_2X2), counts.astype(np.int64), "example")
    if task == REGRESSION:
        return None
    raise ValueError(task)


def most_confused(matrix: Confusion, limit: int = MOST_CONFUSED) -> list[dict[str, Any]]:
    """The largest off-diagonal cells of a square matrix: the pairs worth looking at first."""
    if matrix.rows != matrix.columns:
        return []
    counts = matrix.counts.copy()
    np.fill_diagonal(counts, 0)
    order = np.argsort(-counts, axis=None, kind="stable")[:limit]
    pairs = []
    for flat in order:
        g, p = np.unravel_index(flat, counts.shape)
        if counts[g, p] == 0:
            break
        pairs.append({"gold": matrix.rows[g], "pred": matrix.columns[p], "count": int(counts[g, p])})
    return pairs


def shown_part(matrix: Confusion, limit: int = MATRIX_MAX, keep: int = MATRIX_SHOWN) -> tuple[Confusion, str]:
    """A square matrix small enough to read: all of it up to ``limit`` classes, else the ``keep``
    classes with the most errors (as gold or as prediction), with a note saying so."""
    n = len(matrix.rows)
    if matrix.rows != matrix.columns or n <= limit:
        return matrix, ""
    counts = matrix.counts
    errors = counts.sum(axis=0) + counts.sum(axis=1) - 2 * np.diag(counts)
    chosen = sorted(np.argsort(-errors, kind="stable")[:keep])
    names = [matrix.rows[i] for i in chosen]
    part = Confusion(names, names, counts[np.ix_(chosen, chosen)], matrix.unit)
    return part, f"the {keep} of {n} classes with the most errors"


# ----------------------------------------------------------------------------------------------- tables


def class_table(task: str, split_metrics: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """``(key, rows)``: the per-type (NER) or per-class table of a split, as in ``metrics.json``."""
    key = "per_type" if task == NER else "per_class"
    return key, dict(split_metrics.get(key) or {})


def summary(split_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The split's scalar metrics (no tables), in ``metrics.json``'s order."""
    return {
        k: v for k, v in split_metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
    }


def report_json(
    task: str,
    metrics: Mapping[str, Any],
    confusions: Mapping[str, Confusion | None],
    best_metric: str | None,
    learning: Curves | None = None,
) -> dict[str, Any]:
    """``evaluation_report.json``: per split its metrics, table, confusion counts and most confused
    pairs; the train metrics; and the points of the learning curves (to redraw them elsewhere)."""
    out: dict[str, Any] = {"task": task, "best_metric": best_metric, "splits": {}}
    for split in SPLITS:
        if split not in metrics:
            continue
        key, table = class_table(task, metrics[split])
        entry: dict[str, Any] = {"summary": summary(metrics[split])}
        if task != REGRESSION:
            entry[key] = table
        matrix = confusions.get(split)
        if matrix is not None:
            entry["confusion_matrix"] = matrix.to_json()
            entry["most_confused"] = most_confused(matrix)
        out["splits"][split] = entry
    if "train" in metrics:
        out["train"] = summary(metrics["train"])
    if learning is not None:
        out["learning_curves"] = dataclasses.asdict(learning)
    return out


def dump_json(report: Mapping[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line: a 77-class matrix stays 77 lines, not 6,000.

    Only lists that the indenting spread over several lines are joined; a raw line break never occurs
    inside a JSON string, so no label is touched.
    """

    def join(match: re.Match[str]) -> str:
        text = match.group(0)
        return (
            re.sub(r"\[\s+", "[", re.sub(r"\s+\]", "]", re.sub(r"\n\s*", " ", text)))
            if "\n" in text
            else text
        )

    return re.sub(r"\[[\d\s,.eE+-]*\]", join, json.dumps(report, indent=2, ensure_ascii=False)) + "\n"


def number_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def _table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [
            str(c).ljust(w) if j == 0 else str(c).rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def report_text(report: Mapping[str, Any]) -> str:
    """``evaluation_report.txt``: the JSON report as fixed-width tables (a log-friendly read)."""
    task = report["task"]
    lines = [f"Evaluation report: task {task}"]
    if report.get("best_metric"):
        lines.append(f"best checkpoint chosen by dev {report['best_metric']}")
    for split, entry in report["splits"].items():
        lines += ["", f"== {split} =="]
        lines += [f"{name}: {number_text(value)}" for name, value in entry["summary"].items()]
        key = "per_type" if task == NER else "per_class"
        table = entry.get(key)
        if table:
            first = "entity type" if task == NER else "label" if task == MULTILABEL else "class"
            rows = [
                [name, *(number_text(row[m]) for m in ("precision", "recall", "f1")), str(row["support"])]
                for name, row in table.items()
            ]
            lines += ["", *_table_lines([first, "precision", "recall", "f1", "support"], rows)]
        if entry.get("most_confused"):
            unit = entry["confusion_matrix"]["unit"]
            lines += ["", f"most confused (gold -> predicted, {unit}s):"]
            lines += [f"  {p['gold']} -> {p['pred']}: {p['count']}" for p in entry["most_confused"]]
    if report.get("train"):
        lines += ["", "== train =="]
        lines += [f"{name}: {number_text(value)}" for name, value in report["train"].items()]
    return "\n".join(lines) + "\n"


@dataclass
class Curves:
    """What :func:`learning_curves_png` draws, taken from the Trainer's ``log_history``."""

    train_steps: list[int]
    train_loss: list[float]
    eval_steps: list[int]
    eval_loss: list[float]
    metric_steps: list[int]
    metric: list[float]
    best_step: int | None


def curves(log_history: Sequence[Mapping[str, Any]], best_metric: str | None, greater: bool = True) -> Curves:
    """Train loss per logging step, dev loss and the best-model metric per evaluation.

    The best step is the first evaluation with the best value, as the Trainer keeps it (strictly
    better replaces). A resumed job's history holds the steps before its checkpoint too.
    """
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e and "step" in e]
    key = f"eval_{best_metric.removeprefix('eval_')}" if best_metric else None
    scores = [(int(e["step"]), float(e[key])) for e in log_history if key and key in e and "step" in e]
    best_step = None
    if scores:
        best_value = (max if greater else min)(v for _, v in scores)
        best_step = next(s for s, v in scores if v == best_value)
    return Curves(
        [s for s, _ in train],
        [v for _, v in train],
        [s for s, _ in evals],
        [v for _, v in evals],
        [s for s, _ in scores],
        [v for _, v in scores],
        best_step,
    )


def write_report(
    out_dir: Path,
    task: str,
    metrics: Mapping[str, Any],
    labels: Sequence[str],
    predictions: Mapping[str, tuple[Any, Any]],
    log_history: Sequence[Mapping[str, Any]],
    best_metric: str | None = None,
    greater_is_better: bool = True,
    threshold: float = 0.5,
) -> list[Path]:
    """Write every report file into ``out_dir`` and return their paths; ``report.html`` comes last,
    so that its presence means the report is whole.

    ``predictions`` maps ``dev``/``test`` to ``(gold, pred)`` as :func:`gold_and_pred` returns them
    (multilabel: gold matrix and probabilities, cut at ``threshold``).
    """
    from .report_html import report_html
    from .report_plots import confusion_png, learning_curves_png, scatter_png

    confusions: dict[str, Confusion | None] = {}
    images: dict[str, bytes] = {}
    for split in SPLITS:
        if split not in predictions or split not in metrics:
            continue
        gold, pred = predictions[split]
        matrix = confusion(task, gold, pred, labels, threshold)
        confusions[split] = matrix
        if matrix is None:
            scores = metrics[split]
            title = (
                f"{split}: mse {number_text(scores.get('mse'))}, pearson {number_text(scores.get('pearson'))}"
            )
            images[split_png_name(task, split)] = scatter_png(gold, pred, title)
        else:
            kind = "per label (2x2)" if task == MULTILABEL else "confusion matrix"
            images[split_png_name(task, split)] = confusion_png(matrix, f"{split} {kind}")
    learning = curves(log_history, best_metric, greater_is_better)
    images[LEARNING_CURVES] = learning_curves_png(learning, best_metric)
    report = report_json(task, metrics, confusions, best_metric, learning)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in (
        (JSON_REPORT, dump_json(report)),
        (TEXT_REPORT, report_text(report)),
    ):
        (out_dir / name).write_text(content, encoding="utf-8")
        written.append(out_dir / name)
    for name, png in images.items():
        (out_dir / name).write_bytes(png)
        written.append(out_dir / name)
    (out_dir / HTML_REPORT).write_text(report_html(report, images), encoding="utf-8")
    written.append(out_dir / HTML_REPORT)
    return written


def write_report_or_warn(out_dir: Path, *args: Any, **kwargs: Any) -> bool:
    """:func:`write_report`, where a failure is a warning, not a failed job.

    The model and ``metrics.json`` are written and checked before the report; the report only
    redraws them. Failing a job that trained for hours over a chart (a missing font, a full disk
    after the model was saved) would throw away a good model, so the job succeeds, the reason is
    logged with its traceback at WARNING, and ``report_error.txt`` takes the report's place in
    ``output/data`` for whoever opens the job's output without its logs.
    """
    try:
        (out_dir / REPORT_ERROR).unlink(missing_ok=True)
        written = write_report(out_dir, *args, **kwargs)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "evaluation report not written (the model and metrics are): %s\n%s",
            reason,
            traceback.format_exc(),
        )
        try:
            (out_dir / REPORT_ERROR).write_text(
                f"evaluation report not written: {reason}\n", encoding="utf-8"
            )
        except OSError as write_error:
            log.warning("could not write %s either: %s", out_dir / REPORT_ERROR, write_error)
        return False
    log.info("evaluation report: %s", ", ".join(path.name for path in written))
    return True


def tensorboard_callback(log_dir: Path) -> Any:
    """The Trainer's TensorBoard callback writing to ``log_dir`` (``output/tensorboard``), or ``None``
    with a warning where tensorboard is not installed (the job trains without it).

    transformers 5 dropped ``TrainingArguments.logging_dir``; the callback's own directory is set here
    rather than through the process-wide ``TENSORBOARD_LOGGING_DIR``. Only the process of rank 0
    opens a writer (in ``on_train_begin``). Like the report, the event files are a view of what the
    log lines and ``metrics.json`` hold: a writer that cannot be opened or written (``output/`` not
    writable, a full volume) is a warning that stops TensorBoard logging, not a failed training; an
    unwritable ``output/`` still fails the job where its real outputs are written.
    """
    try:
        from transformers.integrations import TensorBoardCallback
    except ImportError as exc:  # pragma: no cover - transformers always has it
        log.warning("TensorBoard logs not written to %s: %s", log_dir, exc)
        return None

    class GuardedTensorBoardCallback(TensorBoardCallback):
        def _stop(self, exc: Exception) -> None:
            log.warning("TensorBoard logging stopped (%s): %s: %s", log_dir, type(exc).__name__, exc)
            self._SummaryWriter = None  # the parent opens no writer without a class to make it
            self.tb_writer = None

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().on_train_begin(*args, **kwargs)
            except Exception as exc:
                self._stop(exc)

        def on_log(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().on_log(*args, **kwargs)
            except Exception as exc:
                self._stop(exc)

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().on_train_end(*args, **kwargs)
            except Exception as exc:
                self._stop(exc)

    try:
        callback = GuardedTensorBoardCallback()
    except RuntimeError as exc:  # tensorboard is not installed
        log.warning("TensorBoard logs not written to %s: %s", log_dir, exc)
        return None
    callback.logging_dir = str(log_dir)
    return callback
