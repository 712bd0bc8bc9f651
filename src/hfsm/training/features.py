"""Turn parsed examples into model features (windows for NER, truncated texts otherwise)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.records import NerExample, TextExample
from ..data.windows import WordTokenizer, plan_windows, window_features
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION

CHUNK = 512  # texts tokenised per call: large enough for the Rust tokenizer's parallelism


@dataclass
class EncodedSplit:
    """Features of one split and, for NER, which example and words each window belongs to."""

    features: list[dict[str, Any]]
    example_of_feature: list[int]
    n_examples: int
    word_counts: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.features[index]


@dataclass(frozen=True)
class LengthSortedSplit:
    """A split's features longest first, for evaluation: batches of near-equal lengths pad little.

    Evaluating CoNLL-2003 dev in file order pads each batch of 64 to its longest sentence, computing
    about three times the real tokens. Outputs come back in this order; :meth:`restore` puts them
    back in the split's order, where windows are mapped to their texts by position.
    """

    split: EncodedSplit
    order: tuple[int, ...]

    @classmethod
    def of(cls, split: EncodedSplit) -> LengthSortedSplit:
        lengths = [len(feature["input_ids"]) for feature in split.features]
        return cls(split, tuple(sorted(range(len(lengths)), key=lambda i: -lengths[i])))

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.split.features[self.order[index]]

    def restore(self, rows: np.ndarray) -> np.ndarray:
        """Rows of an output in this view's order, put back in the split's order."""
        if len(rows) != len(self.order):
            raise ValueError(f"{len(rows)} output rows for {len(self.order)} features")
        restored = np.empty_like(rows)
        restored[list(self.order)] = rows
        return restored


def encode_ner(
    examples: Sequence[NerExample],
    wt: WordTokenizer,
    label2id: Mapping[str, int],
    *,
    stride: int,
    label_all_tokens: bool,
    use_bbox: bool,
) -> EncodedSplit:
    features: list[dict[str, Any]] = []
    owners: list[int] = []
    for offset in range(0, len(examples), CHUNK):
        chunk = examples[offset : offset + CHUNK]
        token_lists = wt.word_ids([example.words for example in chunk])
        for index, (example, word_tokens) in enumerate(zip(chunk, token_lists, strict=True)):
            label_ids = [label2id[tag] for tag in example.tags] if example.tags is not None else None
            windows = plan_windows([len(t) for t in word_tokens], wt.budget, stride)
            for window in windows:
                features.append(
                    window_features(
                        word_tokens,
                        window,
                        wt,
                        label_ids=label_ids,
                        label_all_tokens=label_all_tokens,
                        boxes=example.boxes if use_bbox else None,
                    )
                )
                owners.append(offset + index)
    return EncodedSplit(features, owners, len(examples), [len(e.words) for e in examples])


def encode_texts(
    task: str,
    examples: Sequence[TextExample],
    tokenizer: Any,
    label2id: Mapping[str, int],
    max_seq_length: int,
) -> EncodedSplit:
    features: list[dict[str, Any]] = []
    for offset in range(0, len(examples), CHUNK):
        chunk = examples[offset : offset + CHUNK]
        encoded = tokenizer([e.text for e in chunk], truncation=True, max_length=max_seq_length)
        for index, example in enumerate(chunk):
            feature = {key: encoded[key][index] for key in encoded}
            feature["labels"] = encode_label(task, example.label, label2id)
            features.append(feature)
    return EncodedSplit(features, list(range(len(examples))), len(examples))


def encode_label(task: str, label: Any, label2id: Mapping[str, int]) -> Any:
    if task == CLASSIF:
        return label2id[label]
    if task == MULTILABEL:
        vector = [0.0] * len(label2id)
        for name in label:
            vector[label2id[name]] = 1.0
        return vector
    if task == REGRESSION:
        return float(label)
    raise ValueError(task)  # pragma: no cover


def encode_split(
    task: str,
    examples: Sequence[Any],
    tokenizer: Any,
    wt: WordTokenizer | None,
    label2id: Mapping[str, int],
    *,
    max_seq_length: int,
    stride: int,
    label_all_tokens: bool,
    use_bbox: bool,
) -> EncodedSplit:
    if task == NER:
        assert wt is not None
        return encode_ner(
            examples, wt, label2id, stride=stride, label_all_tokens=label_all_tokens, use_bbox=use_bbox
        )
    return encode_texts(task, examples, tokenizer, label2id, max_seq_length)
