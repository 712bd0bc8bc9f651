"""Training's evaluation and serving agree: the same model folder predicts the same thing in both.

This guards the mapping of windows back to texts by position during evaluation (transformers 5
once reordered evaluation batches by length, which scrambled every NER metric without an error).
"""

from __future__ import annotations

import json

import pytest

from hfsm.inference.predictor import Predictor
from sagemaker_tree import TrainResult


@pytest.mark.parametrize("case", ["ner", "classif", "multilabel", "regression", "ner_bbox"])
def test_test_predictions_match_the_served_model(trained: dict[str, TrainResult], case: str) -> None:
    result = trained[case]
    lines = [
        json.loads(line) for line in (result.output_data / "test_predictions.jsonl").read_text().splitlines()
    ]
    records = [{"text": line["text"]} for line in lines]
    if case == "ner_bbox":
        import csv

        from sagemaker_tree import DATA_DIR

        with (DATA_DIR / case / "test.csv").open(newline="", encoding="utf-8") as handle:
            boxes = [row["bbox"] for row in csv.DictReader(handle, delimiter="\t")]
        records = [{**record, "bbox": box} for record, box in zip(records, boxes, strict=True)]
    served = Predictor.load(result.model_dir).predict(records)
    for written, answer in zip(lines, served, strict=True):
        if case != "regression":  # a value, which the serving Linear kernel (oneDNN on AMD) may round apart
            assert written["pred"] == answer["pred"]
        if case in ("ner", "ner_bbox"):
            assert written["entities"] == answer["entities"]
            assert written["proba"] == pytest.approx(answer["proba"], abs=1e-4)
        elif case == "regression":
            assert written["pred"] == pytest.approx(answer["pred"], abs=1e-4)
        else:
            assert written["scores"] == pytest.approx(answer["scores"], abs=1e-4)


def test_ner_dev_metrics_match_a_recount_from_predictions(trained: dict[str, TrainResult]) -> None:
    """test_f1 in metrics.json is the seqeval F1 of the written predictions against the gold tags."""
    from seqeval.metrics import f1_score

    result = trained["ner"]
    lines = [
        json.loads(line) for line in (result.output_data / "test_predictions.jsonl").read_text().splitlines()
    ]
    recount = f1_score([line["labels"] for line in lines], [line["pred"] for line in lines], zero_division=0)
    assert result.metrics()["test"]["f1"] == pytest.approx(recount)
