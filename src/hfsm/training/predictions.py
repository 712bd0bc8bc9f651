"""Per-example predictions of a split from the Trainer's raw logits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..inference.postprocess import gather_word_probs, sigmoid, softmax
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION
from .features import EncodedSplit


def example_outputs(task: str, split: EncodedSplit, logits: np.ndarray) -> list[np.ndarray]:
    """Per example: word probabilities (NER), class probabilities, or the regression value."""
    if task == NER:
        per_example: list[list[tuple[list[int], np.ndarray]]] = [[] for _ in range(split.n_examples)]
        for row, owner in enumerate(split.example_of_feature):
            word_index = split.features[row]["word_index"]
            probs = softmax(logits[row, : len(word_index)].astype(np.float32))
            per_example[owner].append((word_index, probs))
        return [
            gather_word_probs(rows, split.word_counts[i], logits.shape[-1])
            for i, rows in enumerate(per_example)
        ]
    if task == CLASSIF:
        return list(softmax(logits.astype(np.float32)))
    if task == MULTILABEL:
        return list(sigmoid(logits.astype(np.float32)))
    if task == REGRESSION:
        return list(logits.reshape(len(logits), -1)[:, 0].astype(np.float64))
    raise ValueError(task)  # pragma: no cover


def gold_and_pred(
    task: str,
    examples: list[Any],
    outputs: list[np.ndarray],
    id2label: Mapping[int, str],
    label2id: Mapping[str, int],
) -> tuple[Any, Any]:
    """Arguments for :func:`hfsm.training.metrics.score`."""
    if task == NER:
        gold = [e.tags for e in examples]
        pred = [[id2label[int(i)] for i in probs.argmax(-1)] for probs in outputs]
        return gold, pred
    if task == CLASSIF:
        return [label2id[e.label] for e in examples], [int(p.argmax()) for p in outputs]
    if task == MULTILABEL:
        gold = np.zeros((len(examples), len(label2id)), dtype=np.float32)
        for row, example in enumerate(examples):
            for name in example.label:
                gold[row, label2id[name]] = 1.0
        return gold, np.stack(outputs) if outputs else np.zeros((0, len(label2id)))
    return [float(e.label) for e in examples], [float(v) for v in outputs]
