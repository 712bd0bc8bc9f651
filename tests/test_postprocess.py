"""The pure functions from model outputs to user-facing predictions, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from hfsm.data.records import split_words, word_spans
from hfsm.inference.postprocess import (
    classif_prediction,
    entities_from_tags,
    entity_type,
    gather_word_probs,
    multilabel_prediction,
    ner_prediction,
    regression_prediction,
    sigmoid,
    softmax,
)


def spans_of(text: str) -> list[tuple[int, int]]:
    return word_spans(text)


def test_entity_type_splits_prefix_and_kind() -> None:
    assert entity_type("B-PER") == ("B", "PER")
    assert entity_type("I-creative-work") == ("I", "creative-work")
    assert entity_type("O") == ("O", "")


def test_b_and_i_tags_group_into_entities_with_offsets_and_mean_score() -> None:
    text = "John Smith lives in New York City"
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC"]
    probas = [0.9, 0.7, 0.99, 0.99, 0.6, 0.8, 1.0]
    entities = entities_from_tags(tags, probas, text, spans_of(text))
    assert entities == [
        {"type": "PER", "text": "John Smith", "start": 0, "end": 10, "score": 0.8, "words": [0, 2]},
        {"type": "LOC", "text": "New York City", "start": 20, "end": 33, "score": 0.8, "words": [4, 7]},
    ]


def test_a_b_tag_after_an_entity_of_the_same_type_starts_a_new_one() -> None:
    text = "Paris Lyon"
    entities = entities_from_tags(["B-LOC", "B-LOC"], [1.0, 1.0], text, spans_of(text))
    assert [e["text"] for e in entities] == ["Paris", "Lyon"]


def test_orphan_i_tag_starts_an_entity_and_a_type_change_ends_one() -> None:
    text = "in Berlin Siemens AG today"
    tags = ["O", "I-LOC", "I-ORG", "I-ORG", "O"]
    entities = entities_from_tags(tags, [1.0] * 5, text, spans_of(text))
    assert [(e["type"], e["text"], e["words"]) for e in entities] == [
        ("LOC", "Berlin", [1, 2]),
        ("ORG", "Siemens AG", [2, 4]),
    ]


def test_entity_at_the_end_of_the_text_is_kept() -> None:
    text = "visit Rome"
    assert entities_from_tags(["O", "B-LOC"], [1.0, 0.5], text, spans_of(text))[0]["text"] == "Rome"


def test_offsets_follow_irregular_whitespace_of_the_original_text() -> None:
    # tabs, newlines, a no-break space, an ideographic space and a file separator all split words
    text = "\t New\u00a0 York\n\n is\u3000big\x1c  town  "
    words = split_words(text)
    assert words == ["New", "York", "is", "big", "town"]
    spans = spans_of(text)
    assert len(spans) == len(words)
    assert [text[start:end] for start, end in spans] == words
    entities = entities_from_tags(["B-LOC", "I-LOC", "O", "O", "B-LOC"], [1.0] * 5, text, spans)
    assert entities[0]["text"] == "New\u00a0 York"
    assert (entities[0]["start"], entities[0]["end"]) == (2, 11)
    assert text[entities[1]["start"] : entities[1]["end"]] == "town"


def test_entity_box_is_the_union_of_its_word_boxes() -> None:
    text = "Total amount 42"
    boxes = [(10, 20, 60, 40), (70, 18, 150, 45), (300, 20, 330, 40)]
    entities = entities_from_tags(["B-KEY", "I-KEY", "B-VAL"], [1.0] * 3, text, spans_of(text), boxes)
    assert entities[0]["bbox"] == [10, 18, 150, 45]
    assert entities[1]["bbox"] == [300, 20, 330, 40]


def test_no_bbox_key_without_boxes() -> None:
    text = "Rome"
    assert "bbox" not in entities_from_tags(["B-LOC"], [1.0], text, spans_of(text))[0]


def test_ner_prediction_tags_every_word_with_its_best_label() -> None:
    text = "Ada  Lovelace wrote"
    id2label = {0: "O", 1: "B-PER", 2: "I-PER"}
    word_probs = np.array([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.9, 0.05, 0.05]], dtype=np.float32)
    prediction = ner_prediction(word_probs, id2label, text, spans_of(text))
    assert prediction["pred"] == ["B-PER", "I-PER", "O"]
    assert prediction["proba"] == pytest.approx([0.8, 0.7, 0.9])
    assert [(e["text"], e["start"], e["end"]) for e in prediction["entities"]] == [("Ada  Lovelace", 0, 13)]


def test_ner_prediction_of_an_empty_text_is_empty() -> None:
    prediction = ner_prediction(np.zeros((0, 3), dtype=np.float32), {0: "O", 1: "B-X", 2: "I-X"}, "", [])
    assert prediction == {"pred": [], "proba": [], "entities": []}


def test_gather_word_probs_takes_each_word_from_its_owning_window() -> None:
    first = (
        np.array([-1, 0, 1, -1, -1]),
        np.array([[0, 0], [1, 0], [0.9, 0.1], [5, 5], [0, 0]], dtype=np.float32),
    )
    second = (np.array([-1, -1, 2, -1]), np.array([[0, 0], [7, 7], [0.2, 0.8], [0, 0]], dtype=np.float32))
    probs = gather_word_probs([first, second], n_words=3, n_labels=2)
    np.testing.assert_allclose(probs, [[1, 0], [0.9, 0.1], [0.2, 0.8]])


def test_gather_word_probs_refuses_to_leave_a_word_without_prediction() -> None:
    window = (np.array([-1, 0, -1]), np.ones((3, 2), dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"words \[1\]"):
        gather_word_probs([window], n_words=2, n_labels=2)


def test_softmax_and_sigmoid_are_stable_for_large_logits() -> None:
    probs = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(probs, [[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(sigmoid(np.array([0.0, 40.0, -40.0])), [0.5, 1.0, 0.0], atol=1e-12)


def test_classif_prediction_names_the_best_class_and_all_scores() -> None:
    prediction = classif_prediction(np.array([0.2, 0.7, 0.1]), {0: "a", 1: "b", 2: "c"})
    assert prediction == {"pred": "b", "proba": 0.7, "scores": {"a": 0.2, "b": 0.7, "c": 0.1}}


def test_multilabel_threshold_is_inclusive_and_picks_are_sorted_by_probability() -> None:
    id2label = {0: "a", 1: "b", 2: "c", 3: "d"}
    probs = np.array([0.4, 0.9, 0.39999, 0.6])
    prediction = multilabel_prediction(probs, id2label, threshold=0.4)
    assert prediction["pred"] == ["b", "d", "a"]
    assert prediction["proba"] == [0.9, 0.6, 0.4]
    assert set(prediction["scores"]) == {"a", "b", "c", "d"}
    assert multilabel_prediction(probs, id2label, threshold=0.95)["pred"] == []


def test_regression_prediction_is_a_plain_float() -> None:
    prediction = regression_prediction(np.array([3.25], dtype=np.float32))
    assert prediction == {"pred": 3.25}
    assert type(prediction["pred"]) is float
