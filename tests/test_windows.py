"""Window planning: every word owned by exactly one window, windows within budget."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfsm.data.windows import Window, WordTokenizer, plan_windows, window_features


def check_plan(counts: list[int], budget: int, stride: int) -> list[Window]:
    windows = plan_windows(counts, budget, stride)
    owned = [w for window in windows for w in range(window.own_start, window.own_end)]
    assert owned == list(range(len(counts))), "each word owned exactly once, in order"
    for window in windows:
        assert window.start <= window.own_start <= window.own_end <= window.end
        assert sum(counts[window.start : window.end]) <= budget or window.end - window.start == 1
    for left, right in itertools.pairwise(windows):
        assert right.start > left.start, "windows advance"
        assert right.start <= left.end, "no gap between windows"
    return windows


def test_short_text_is_one_window() -> None:
    assert plan_windows([1, 2, 1], budget=10, stride=2) == [Window(0, 3, 0, 3)]


def test_empty_text_is_one_empty_window() -> None:
    assert plan_windows([], budget=10, stride=2) == [Window(0, 0, 0, 0)]


def test_long_text_windows_overlap_and_split_ownership_in_the_middle() -> None:
    windows = check_plan([1] * 20, budget=8, stride=4)
    assert windows[0] == Window(0, 8, 0, 6)
    assert windows[1].start == 4
    assert len(windows) > 2


def test_word_as_long_as_the_budget_is_its_own_window() -> None:
    check_plan([3, 8, 3], budget=8, stride=2)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=6), max_size=200),
    st.integers(min_value=6, max_value=40),
    st.integers(min_value=0, max_value=10),
)
def test_plans_cover_every_word_once(counts: list[int], budget: int, stride: int) -> None:
    check_plan(counts, budget, min(stride, budget // 2))


@pytest.fixture(scope="module")
def word_tokenizer(base_models):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return WordTokenizer(AutoTokenizer.from_pretrained(base_models["bert"]), max_seq_length=16)


def test_zero_token_words_become_unknown(word_tokenizer: WordTokenizer) -> None:
    (per_word,) = word_tokenizer.word_ids([["hello", "\ufe0f", "world"]])
    assert len(per_word) == 3
    assert per_word[1] == [word_tokenizer.tokenizer.unk_token_id]


def test_features_label_the_first_subtoken_of_owned_words(word_tokenizer: WordTokenizer) -> None:
    words = ["qwertyuiop", "a", "zzzz"]
    (per_word,) = word_tokenizer.word_ids([words])
    window = Window(0, 3, 1, 3)
    features = window_features(
        per_word,
        window,
        word_tokenizer,
        label_ids=[1, 2, 3],
        boxes=[(1, 2, 3, 4), (5, 6, 7, 8), (9, 9, 9, 9)],
    )
    labels, word_index = features["labels"], features["word_index"]
    assert len(labels) == len(features["input_ids"]) == len(features["bbox"]) == len(word_index)
    assert [label for label in labels if label != -100] == [2, 3], "word 0 is context only"
    assert sorted(w for w in word_index if w >= 0) == [1, 2]
    assert features["bbox"][0] == [0, 0, 0, 0] and features["bbox"][-1] == [1000, 1000, 1000, 1000]
    assert features["input_ids"][0] == word_tokenizer.tokenizer.cls_token_id


def test_label_all_tokens_labels_every_subtoken(word_tokenizer: WordTokenizer) -> None:
    (per_word,) = word_tokenizer.word_ids([["qwertyuiop"]])
    assert len(per_word[0]) > 1
    features = window_features(
        per_word, Window(0, 1, 0, 1), word_tokenizer, label_ids=[4], label_all_tokens=True
    )
    assert [label for label in features["labels"] if label != -100] == [4] * len(per_word[0])


def test_random_long_texts_fit_the_window(word_tokenizer: WordTokenizer) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 12))) for _ in range(300)]
    (per_word,) = word_tokenizer.word_ids([words])
    windows = check_plan([len(t) for t in per_word], word_tokenizer.budget, 4)
    for window in windows:
        features = window_features(per_word, window, word_tokenizer)
        assert len(features["input_ids"]) <= 16
