"""Word-aligned tokenisation and overlapping windows, shared by training, evaluation and serving.

A text of any length is cut into windows of at most ``max_seq_length`` sub-tokens at word
boundaries, consecutive windows sharing about ``stride`` sub-tokens of context. Every word is
*owned* by exactly one window (the one where it sits further from the cut), which gives its
prediction: no word is ever dropped or predicted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100
CLS_BOX = (0, 0, 0, 0)
SEP_BOX = (1000, 1000, 1000, 1000)
PAD_BOX = (0, 0, 0, 0)


@dataclass(frozen=True)
class Window:
    start: int
    """First word in the window."""
    end: int
    """One past the last word in the window."""
    own_start: int
    own_end: int
    """Words ``own_start..own_end`` take their prediction from this window."""


def plan_windows(token_counts: Sequence[int], budget: int, stride: int) -> list[Window]:
    """Cut words with the given sub-token counts into windows of at most ``budget`` sub-tokens.

    Counts must be at least 1 and at most ``budget`` (see :class:`WordTokenizer`). Consecutive
    windows overlap by at most ``stride`` sub-tokens, and always advance by at least one word.
    """
    n = len(token_counts)
    if n == 0:
        return [Window(0, 0, 0, 0)]
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end, total = start, 0
        while end < n and total + token_counts[end] <= budget:
            total += token_counts[end]
            end += 1
        end = max(end, start + 1)
        spans.append((start, end))
        if end >= n:
            break
        next_start, overlap = end, 0
        while next_start - 1 > start and overlap + token_counts[next_start - 1] <= stride:
            next_start -= 1
            overlap += token_counts[next_start]
        start = next_start
    windows = []
    own_start = 0
    for index, (start, end) in enumerate(spans):
        if index + 1 < len(spans):
            next_start = spans[index + 1][0]
            own_end = (next_start + end + 1) // 2  # split the shared words at their middle
        else:
            own_end = n
        windows.append(Window(start, end, own_start, own_end))
        own_start = own_end
    return windows


class WordTokenizer:
    """Sub-token ids per word, plus the model's special tokens around a window.

    Words that the tokenizer turns into nothing (e.g. a lone U+FE0F) become the unknown token, so
    every word has at least one sub-token and therefore a prediction.
    """

    def __init__(self, tokenizer: Any, max_seq_length: int) -> None:
        self.tokenizer = tokenizer
        self.prefix, self.suffix = _special_layout(tokenizer)
        self.budget = max_seq_length - len(self.prefix) - len(self.suffix)
        if self.budget < 2:
            raise ValueError(f"max_seq_length {max_seq_length} leaves no room for words")
        unk = tokenizer.unk_token_id
        self.fallback_id = unk if unk is not None else tokenizer.pad_token_id
        self.uses_token_type_ids = "token_type_ids" in tokenizer.model_input_names

    def word_ids(self, batch: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """For each text of the batch, for each word, its sub-token ids (at most ``budget``)."""
        if not batch:
            return []
        non_empty = [index for index, words in enumerate(batch) if words]
        result: list[list[list[int]]] = [[] for _ in batch]
        if not non_empty:
            return result
        encoded = self.tokenizer(
            [list(batch[i]) for i in non_empty],
            is_split_into_words=True,
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        for position, index in enumerate(non_empty):
            per_word: list[list[int]] = [[] for _ in batch[index]]
            ids = encoded["input_ids"][position]
            for token_id, word in zip(ids, encoded.word_ids(position), strict=True):
                if word is not None and len(per_word[word]) < self.budget:
                    per_word[word].append(token_id)
            for word_tokens in per_word:
                if not word_tokens:
                    word_tokens.append(self.fallback_id)
            result[index] = per_word
        return result


def _special_layout(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the model puts before and after a single sequence."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for offset in range(len(full) - len(plain) + 1):
        if full[offset : offset + len(plain)] == plain:
            return list(full[:offset]), list(full[offset + len(plain) :])
    raise ValueError("cannot locate the special tokens of this tokenizer")


def window_features(
    word_tokens: Sequence[Sequence[int]],
    window: Window,
    wt: WordTokenizer,
    *,
    label_ids: Sequence[int] | None = None,
    label_all_tokens: bool = False,
    boxes: Sequence[Sequence[int]] | None = None,
) -> dict[str, list]:
    """Model inputs for one window; ``word_index`` maps each position to its owned word or -1.

    Labels (training and evaluation) are set on owned words only: on the first sub-token, or on all
    of them with ``label_all_tokens``.
    """
    input_ids = list(wt.prefix)
    word_index = [-1] * len(wt.prefix)
    labels = [IGNORE_INDEX] * len(wt.prefix) if label_ids is not None else None
    box_list = [CLS_BOX] * len(wt.prefix) if boxes is not None else None
    for word in range(window.start, window.end):
        tokens = word_tokens[word]
        owned = window.own_start <= word < window.own_end
        input_ids.extend(tokens)
        word_index.append(word if owned else -1)
        word_index.extend([-1] * (len(tokens) - 1))
        if labels is not None and label_ids is not None:
            first = label_ids[word] if owned else IGNORE_INDEX
            rest = first if label_all_tokens else IGNORE_INDEX
            labels.append(first)
            labels.extend([rest] * (len(tokens) - 1))
        if box_list is not None and boxes is not None:
            box_list.extend([tuple(boxes[word])] * len(tokens))
    input_ids.extend(wt.suffix)
    word_index.extend([-1] * len(wt.suffix))
    features: dict[str, list] = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids)}
    if wt.uses_token_type_ids:
        features["token_type_ids"] = [0] * len(input_ids)
    if labels is not None:
        labels.extend([IGNORE_INDEX] * len(wt.suffix))
        features["labels"] = labels
    if box_list is not None:
        box_list.extend([SEP_BOX] * len(wt.suffix))
        features["bbox"] = [list(box) for box in box_list]
    features["word_index"] = word_index
    return features
