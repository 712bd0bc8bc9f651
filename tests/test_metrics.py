"""NER scores equal seqeval's own functions (one entity extraction instead of one per number)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfsm.training.metrics import score_ner

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
# seqeval's classification_report averages over no entity when neither side has one (numpy warns)
SEQEVAL_EMPTY_AVERAGE = pytest.mark.filterwarnings(
    "ignore:Mean of empty slice:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)


def assert_per_type_equal(detail: dict, expected: dict) -> None:
    got_types = {
        name: (v["precision"], v["recall"], v["f1"], v["support"]) for name, v in detail["per_type"].items()
    }
    assert got_types.keys() == expected["per_type"].keys()
    for name, values in expected["per_type"].items():
        assert got_types[name] == pytest.approx(values), name


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


@SEQEVAL_EMPTY_AVERAGE
@settings(max_examples=300, deadline=None)
@given(pairs())
def test_score_ner_equals_seqeval(case: tuple[list[list[str]], list[list[str]]]) -> None:
    gold, pred = case
    summary, detail = score_ner(gold, pred)
    expected = seqeval_scores(gold, pred)
    for name in ("precision", "recall", "f1", "accuracy"):
        assert summary[name] == pytest.approx(expected[name]), name
    assert_per_type_equal(detail, expected)


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


def seqeval_strict_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """seqeval's own strict IOB2 functions, as the README names them."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    strict = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    report = classification_report(gold, pred, output_dict=True, **strict)
    return {
        "precision": precision_score(gold, pred, **strict),
        "recall": recall_score(gold, pred, **strict),
        "f1": f1_score(gold, pred, **strict),
        "per_type": {
            name: (v["precision"], v["recall"], v["f1-score"], v["support"])
            for name, v in report.items()
            if not name.endswith(" avg")
        },
    }


@SEQEVAL_EMPTY_AVERAGE
@settings(max_examples=300, deadline=None)
@given(pairs())
def test_strict_mode_equals_seqeval_strict_iob2(case: tuple[list[list[str]], list[list[str]]]) -> None:
    gold, pred = case
    summary, detail = score_ner(gold, pred, "strict")
    expected = seqeval_strict_scores(gold, pred)
    for name in ("precision", "recall", "f1"):
        assert summary[name] == pytest.approx(expected[name]), name
    assert_per_type_equal(detail, expected)
    assert detail["seqeval_mode"] == "strict"


def test_strict_mode_differs_from_default_on_orphans() -> None:
    gold = [["O", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["O", "B-PER", "I-PER", "O", "I-LOC", "I-LOC"]]
    default, _ = score_ner(gold, pred)
    strict, detail = score_ner(gold, pred, "strict")
    # default: gold PER(1,2) and LOC(4,5) equal the predicted spans, whatever their B-/I- tags
    assert default["f1"] == 1.0
    # strict: the gold orphan I-PER run is no entity, nor the predicted I-LOC run
    assert detail["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert detail["per_type"]["LOC"]["support"] == 1 and detail["per_type"]["LOC"]["recall"] == 0.0
    assert strict["f1"] == 0.0 and strict["accuracy"] == default["accuracy"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="not one of default, strict"):
        score_ner(gold, pred, "lenient")
