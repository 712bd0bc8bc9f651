"""From model outputs to the predictions users see: pure functions over plain arrays.

Training writes ``test_predictions.jsonl`` with these functions and serving answers requests with
them, so a saved model predicts the same thing in both places.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data.records import Box


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def gather_word_probs(
    window_rows: Sequence[tuple[Sequence[int], np.ndarray]], n_words: int, n_labels: int
) -> np.ndarray:
    """Per-word label probabilities of one text from its windows.

    Each window gives ``(word_index, probs)``: for each position the word it predicts (or -1)
    and the probabilities at that position. Windows own disjoint words, so each word is set once.
    """
    word_probs = np.zeros((n_words, n_labels), dtype=np.float32)
    seen = np.zeros(n_words, dtype=bool)
    for word_index, probs in window_rows:
        for position, word in enumerate(word_index):
            if word >= 0:
                word_probs[word] = probs[position]
                seen[word] = True
    if not seen.all():  # a window plan that skipped a word would be a bug, never a silent gap
        missing = np.flatnonzero(~seen).tolist()
        raise RuntimeError(f"words {missing[:10]} got no prediction")
    return word_probs


def entity_type(tag: str) -> tuple[str, str]:
    """``B-PER`` -> (``B``, ``PER``); ``O`` -> (``O``, ``""``)."""
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def entities_from_tags(
    tags: Sequence[str],
    probas: Sequence[float],
    text: str,
    spans: Sequence[tuple[int, int]],
    boxes: Sequence[Box] | None = None,
) -> list[dict[str, Any]]:
    """Group IOB2 word tags into entities with character offsets, a score and optional union box.

    An ``I-X`` that does not continue an ``X`` entity starts one (the lenient reading most users
    expect from a tagger). ``score`` is the mean word probability.
    """
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for index, tag in enumerate(tags):
        prefix, kind = entity_type(tag)
        continues = current is not None and prefix == "I" and kind == current["type"]
        if current is not None and not continues:
            entities.append(current)
            current = None
        if prefix == "O":
            continue
        if current is None:
            current = {"type": kind, "words": [index, index + 1], "scores": [float(probas[index])]}
        else:
            current["words"][1] = index + 1
            current["scores"].append(float(probas[index]))
    if current is not None:
        entities.append(current)
    result = []
    for entity in entities:
        first, last = entity["words"]
        start, end = spans[first][0], spans[last - 1][1]
        item: dict[str, Any] = {
            "type": entity["type"],
            "text": text[start:end],
            "start": start,
            "end": end,
            "score": round(float(np.mean(entity["scores"])), 6),
            "words": [first, last],
        }
        if boxes is not None:
            chosen = boxes[first:last]
            item["bbox"] = [
                min(b[0] for b in chosen),
                min(b[1] for b in chosen),
                max(b[2] for b in chosen),
                max(b[3] for b in chosen),
            ]
        result.append(item)
    return result


def ner_prediction(
    word_probs: np.ndarray,
    id2label: Mapping[int, str],
    text: str,
    spans: Sequence[tuple[int, int]],
    boxes: Sequence[Box] | None = None,
) -> dict[str, Any]:
    ids = word_probs.argmax(axis=-1) if len(word_probs) else np.zeros(0, dtype=int)
    tags = [id2label[int(i)] for i in ids]
    probas = [round(float(word_probs[w, i]), 6) for w, i in enumerate(ids)]
    return {"pred": tags, "proba": probas, "entities": entities_from_tags(tags, probas, text, spans, boxes)}


def classif_prediction(probs: np.ndarray, id2label: Mapping[int, str]) -> dict[str, Any]:
    best = int(probs.argmax())
    return {
        "pred": id2label[best],
        "proba": round(float(probs[best]), 6),
        "scores": {id2label[i]: round(float(p), 6) for i, p in enumerate(probs)},
    }


def multilabel_prediction(probs: np.ndarray, id2label: Mapping[int, str], threshold: float) -> dict[str, Any]:
    chosen = [i for i, p in enumerate(probs) if p >= threshold]
    chosen.sort(key=lambda i: -probs[i])
    return {
        "pred": [id2label[i] for i in chosen],
        "proba": [round(float(probs[i]), 6) for i in chosen],
        "scores": {id2label[i]: round(float(p), 6) for i, p in enumerate(probs)},
    }


def regression_prediction(value: np.ndarray | float) -> dict[str, Any]:
    return {"pred": float(np.asarray(value).reshape(-1)[0])}
