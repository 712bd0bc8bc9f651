"""NER scores equal seqeval's own functions (one entity extraction instead of one per number)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfsm.training.metrics import score_ner

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def seqeval_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    return {
        "precision": precision_score(gold, pred, zero_division=0),
        "recall": recall_score(gold, pred, zero_division=0),
        "f1": f1_score(gold, pred, zero_division=0),
        "accuracy": accuracy_score(gold, pred),
        "per_type": {
            name: (v["precision"], v["recall"], v["f1-score"], v["support"])
            for name, v in report.items()
            if not name.endswith(" avg")
        },
    }


def pairs() -> st.SearchStrategy[tuple[list[list[str]], list[list[str]]]]:
    lengths = st.lists(st.integers(1, 12), min_size=1, max_size=8)
    return lengths.flatmap(
        lambda ls: st.tuples(
            st.tuples(*[st.lists(st.sampled_from(TAGS), min_size=n, max_size=n) for n in ls]),
            st.tuples(*[st.lists(st.sampled_from(TAGS), min_size=n, max_size=n) for n in ls]),
        ).map(lambda t: (list(t[0]), list(t[1])))
    )


@settings(max_examples=300, deadline=None)
@given(pairs())
def test_score_ner_equals_seqeval(case: tuple[list[list[str]], list[list[str]]]) -> None:
    gold, pred = case
    summary, detail = score_ner(gold, pred)
    expected = seqeval_scores(gold, pred)
    for name in ("precision", "recall", "f1", "accuracy"):
        assert summary[name] == pytest.approx(expected[name]), name
    got_types = {
        name: (v["precision"], v["recall"], v["f1"], v["support"]) for name, v in detail["per_type"].items()
    }
    assert got_types.keys() == expected["per_type"].keys()
    for name, values in expected["per_type"].items():
        assert got_types[name] == pytest.approx(values), name


def test_hand_made_example() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["O", "O"]]
    summary, detail = score_ner(gold, pred)
    # gold entities: PER(0,1), LOC(3), MISC; predicted: PER(0,1), PER(3): one of two right, one of three found
    assert summary["precision"] == pytest.approx(1 / 2)
    assert summary["recall"] == pytest.approx(1 / 3)
    assert summary["f1"] == pytest.approx(0.4)
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert detail["per_type"]["PER"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 1,
    }
    assert detail["per_type"]["LOC"]["support"] == 1 and detail["per_type"]["LOC"]["recall"] == 0.0
