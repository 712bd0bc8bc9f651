"""Task metrics from per-example predictions: seqeval for NER, plain numpy for the rest.

Each scorer returns ``(summary, detail)``: ``summary`` is flat numbers (what the Trainer logs and
picks the best model by), ``detail`` adds per-class tables for ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


SEQEVAL_MODES = ("default", "strict")


def strict_entities(sequences: Sequence[Sequence[str]]) -> Iterator[tuple[str, int, int, int]]:
    """IOB2 entities as seqeval's strict mode finds them: ``(type, sequence, start, end)``, end exclusive.

    An entity is a ``B-X`` and the ``I-X`` that directly follow it; an ``I-`` that does not continue an
    entity of its type starts none (the default mode starts one there, as conlleval does). Tags are
    ``O``, ``B-X`` or ``I-X``: the labels come from data checked to be IOB2.
    """
    for index, tags in enumerate(sequences):
        start, kind = -1, ""
        for position, tag in enumerate(tags):
            if start >= 0 and not (tag.startswith("I-") and tag[2:] == kind):
                yield kind, index, start, position
                start = -1
            if tag.startswith("B-"):
                start, kind = position, tag[2:]
        if start >= 0:
            yield kind, index, start, len(tags)


def score_ner(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], mode: str = "default"
) -> tuple[dict, dict]:
    """seqeval's entity-level scores, from one entity extraction per side.

    ``mode="default"`` is seqeval's default (conlleval) mode; ``"strict"`` is
    ``mode="strict", scheme=IOB2``: an entity counts only when its ``B-``/``I-`` tags are exactly
    right on both sides, so an orphan ``I-`` (in gold or prediction) is no entity.

    Calling seqeval's ``precision_score``, ``recall_score``, ``f1_score`` and ``classification_report``
    extracts every entity again for each number: over a second per evaluation of CoNLL-2003 dev (the
    strict mode's token objects are slower still). The entities are the same spans, so the numbers are
    identical (tested against seqeval in both modes).
    """
    if mode not in SEQEVAL_MODES:
        raise ValueError(f"seqeval mode {mode!r} is not one of {', '.join(SEQEVAL_MODES)}")
    from seqeval.metrics.sequence_labeling import get_entities

    gold_l, pred_l = [list(g) for g in gold], [list(p) for p in pred]
    spans_gold: dict[str, set[tuple[int, ...]]] = {}
    spans_pred: dict[str, set[tuple[int, ...]]] = {}
    for spans, sequences in ((spans_gold, gold_l), (spans_pred, pred_l)):
        if mode == "strict":
            for name, index, start, end in strict_entities(sequences):
                spans.setdefault(name, set()).add((index, start, end))
        else:
            for name, start, end in get_entities(sequences):
                spans.setdefault(name, set()).add((start, end))
    per_type = {}
    totals = np.zeros(3)
    for name in sorted(spans_gold.keys() | spans_pred.keys()):
        true, predicted = spans_gold.get(name, set()), spans_pred.get(name, set())
        tp = len(true & predicted)
        counts = np.array([tp, len(predicted) - tp, len(true) - tp], dtype=float)
        totals += counts
        precision, recall, f1 = _prf(*counts)
        per_type[name] = {"precision": precision, "recall": recall, "f1": f1, "support": len(true)}
    precision, recall, f1 = _prf(*totals)
    tags = [
        (g, p) for g_seq, p_seq in zip(gold_l, pred_l, strict=True) for g, p in zip(g_seq, p_seq, strict=True)
    ]
    accuracy = sum(g == p for g, p in tags) / len(tags) if tags else 0.0
    summary = {"precision": precision, "recall": recall, "f1": f1, "accuracy": float(accuracy)}
    return summary, {**summary, "seqeval_mode": mode, "per_type": per_type}


def score_classif(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> tuple[dict, dict]:
    g, p = np.asarray(gold), np.asarray(pred)
    per_class, f1s = {}, []
    for index, name in enumerate(labels):
        tp = float(np.sum((p == index) & (g == index)))
        fp = float(np.sum((p == index) & (g != index)))
        fn = float(np.sum((p != index) & (g == index)))
        precision, recall, f1 = _prf(tp, fp, fn)
        support = int(np.sum(g == index))
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support or tp + fp:
            f1s.append(f1)
    accuracy = float(np.mean(g == p)) if len(g) else 0.0
    summary = {
        "accuracy": accuracy,
        "f1_macro": float(np.mean(f1s)) if f1s else 0.0,
        "f1_micro": accuracy,
    }  # single-label: micro P = micro R = accuracy
    return summary, {**summary, "per_class": per_class}


def score_multilabel(
    gold: np.ndarray, probs: np.ndarray, labels: Sequence[str], threshold: float
) -> tuple[dict, dict]:
    chosen = probs >= threshold
    truth = gold >= 0.5
    tp = (chosen & truth).sum(axis=0).astype(float)
    fp = (chosen & ~truth).sum(axis=0).astype(float)
    fn = (~chosen & truth).sum(axis=0).astype(float)
    _, _, f1_micro = _prf(tp.sum(), fp.sum(), fn.sum())
    per_class, f1s = {}, []
    for index, name in enumerate(labels):
        precision, recall, f1 = _prf(tp[index], fp[index], fn[index])
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(truth[:, index].sum()),
        }
        if truth[:, index].any() or chosen[:, index].any():
            f1s.append(f1)
    summary = {
        "f1_micro": float(f1_micro),
        "f1_macro": float(np.mean(f1s)) if f1s else 0.0,
        "subset_accuracy": float(np.mean((chosen == truth).all(axis=1))) if len(truth) else 0.0,
        "threshold": float(threshold),
    }
    return summary, {**summary, "per_class": per_class}


def tune_threshold(gold: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> float:
    """The threshold in 0.05..0.95 with the best micro F1 on dev (ties: the one nearest 0.5)."""
    candidates = np.round(np.arange(0.05, 0.951, 0.05), 2)
    scored = [
        (score_multilabel(gold, probs, labels, float(t))[0]["f1_micro"], -abs(t - 0.5), float(t))
        for t in candidates
    ]
    return max(scored)[2]


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_values = values[order]
    start = 0
    while start < len(values):  # average ranks over ties
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0
        start = end + 1
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def score_regression(gold: Sequence[float], pred: Sequence[float]) -> tuple[dict, dict]:
    g, p = np.asarray(gold, dtype=float), np.asarray(pred, dtype=float)
    summary = {
        "mse": float(np.mean((g - p) ** 2)),
        "mae": float(np.mean(np.abs(g - p))),
        "pearson": _pearson(g, p),
        "spearman": _pearson(_ranks(g), _ranks(p)),
    }
    return summary, dict(summary)


def score(
    task: str,
    gold: Any,
    pred: Any,
    labels: Sequence[str],
    threshold: float = 0.5,
    seqeval_mode: str = "default",
) -> tuple[dict, dict]:
    if task == NER:
        return score_ner(gold, pred, seqeval_mode)
    if task == CLASSIF:
        return score_classif(gold, pred, labels)
    if task == MULTILABEL:
        return score_multilabel(gold, pred, labels, threshold)
    if task == REGRESSION:
        return score_regression(gold, pred)
    raise ValueError(task)  # pragma: no cover


def metric_lines(prefix: str, metrics: dict[str, Any]) -> list[str]:
    """One ``prefix_name=value`` line per scalar, the form the README's metric_definitions match."""
    return [
        f"{prefix}_{name}={value:.6f}"
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]


def summarize_detail(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if not isinstance(v, dict)}
