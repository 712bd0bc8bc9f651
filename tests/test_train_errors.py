"""Bad data and configuration fail the job with exit 1 and a reason naming the file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import quick_hyperparameters
from sagemaker_tree import DATA_DIR, make_tree, run_train

GOOD_NER = "text\tlabels\nEU rejects German call\tB-ORG O B-MISC O\n"
GOOD_BOXES = "text\tlabels\tbbox\nEU rejects\tB-ORG O\t1 2 3 4,5 6 7 8\n"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def fail(tmp_path: Path, model: Path, task: str, train: str | bytes, **hyper: object) -> tuple[str, str]:
    data = tmp_path / "data"
    write(data, "train.csv", train)
    base = make_tree(
        tmp_path / "tree", {"train": data / "train.csv"}, quick_hyperparameters(task, model, **hyper)
    )
    result = run_train(base)
    assert result.returncode == 1, result.output[-3000:]
    assert result.failure is not None and result.failure.startswith("UserError: ")
    assert "Traceback" not in result.failure
    assert not (base / "model" / "model.safetensors").exists()
    return result.failure, result.output


CASES = {
    "missing column": (
        "ner",
        "sentence\tlabels\nEU rejects\tB-ORG O\n",
        {},
        r"train\.csv, line 1: missing column\(s\) 'text'",
    ),
    "word/label count mismatch": (
        "ner",
        GOOD_NER + "Peter Blackburn\tB-PER\n",
        {},
        r"train\.csv, line 3, column 'labels': 2 words but 1 labels",
    ),
    "not an IOB2 tag": (
        "ner",
        "text\tlabels\nPeter Blackburn\tPER PER\n",
        {},
        r"line 2, column 'labels': label 'PER' of word 1 is not an IOB2 tag",
    ),
    "box count mismatch": (
        "ner",
        GOOD_BOXES + "a b\tO O\t1 2 3 4\n",
        {"use_bbox": True},
        r"line 3, column 'bbox': 2 words but 1 boxes",
    ),
    "box out of range": (
        "ner",
        GOOD_BOXES + "a b\tO O\t1 2 3 4,5 6 7 1200\n",
        {"use_bbox": True},
        r"line 3, column 'bbox': box 2: box coordinate 1200 is outside 0\.\.1000",
    ),
    "box not numbers": (
        "ner",
        GOOD_BOXES + "a b\tO O\t1 2 3 4,a b c d\n",
        {"use_bbox": True},
        r"line 3, column 'bbox': box 2: box coordinate 'a' is not an integer",
    ),
    "missing box column": ("ner", GOOD_NER, {"use_bbox": True}, r"missing column\(s\) 'bbox'"),
    "unparsable number": (
        "regression",
        "text\tlabels\nfine\t3.2\nbad\tthree\n",
        {},
        r"line 3, column 'labels': 'three' is not a number",
    ),
    "NaN target": (
        "regression",
        "text\tlabels\nfine\t3.2\nbad\tnan\n",
        {},
        r"line 3, column 'labels': 'nan' is not a finite number",
    ),
    "empty file": ("ner", "", {}, r"train\.csv: is empty"),
    "header only": ("ner", "text\tlabels\n", {}, r"train\.csv: has a header but no data rows"),
    "missing field": ("classif", "text\tlabels\nno tab here\n", {}, r"line 2: has 1 field\(s\)"),
    "empty text": (
        "classif",
        "text\tlabels\n \tgreeting\nhi\tbye\n",
        {},
        r"line 2, column 'text': the text is empty",
    ),
    "one class only": ("classif", "text\tlabels\nhi\tgreeting\nhello\tgreeting\n", {}, "at least 2 classes"),
    "invalid UTF-8": ("ner", b"text\tlabels\nEU \xff rejects\tO O O\n", {}, r"line 2: is not valid UTF-8"),
    "unknown task": ("nerd", GOOD_NER, {}, r"'task_name' = 'nerd': unknown task.*Did you mean 'ner'"),
    "unknown hyperparameter": (
        "ner",
        GOOD_NER,
        {"num_epochs": 2},
        r"Unknown hyperparameter 'num_epochs'. Did you mean 'num_train_epochs'",
    ),
    "bad metric for best model": (
        "ner",
        GOOD_NER,
        {"metric_for_best_model": "f1_macro"},
        "is not a ner metric",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_with_a_reason(tmp_path: Path, base_models: dict[str, Path], case: str) -> None:
    task, content, hyper, pattern = CASES[case]
    failure, output = fail(tmp_path, base_models["bert"], task, content, **hyper)
    assert __import__("re").search(pattern, failure), failure
    assert failure in output, "the reason is also in the job log"


def test_use_bbox_needs_a_layout_model(tmp_path: Path, base_models: dict[str, Path]) -> None:
    failure, _ = fail(tmp_path, base_models["bert"], "ner", GOOD_BOXES, use_bbox=True)
    assert "use_bbox is true but" in failure and "bert" in failure


def test_unknown_model_offline_is_a_user_error(tmp_path: Path, base_models: dict[str, Path]) -> None:
    failure, _ = fail(tmp_path, base_models["bert"], "ner", GOOD_NER, model_name="no-such-org/no-such-model")
    assert "Cannot load model 'no-such-org/no-such-model'" in failure and "'model' channel" in failure


def test_no_train_channel(tmp_path: Path, base_models: dict[str, Path]) -> None:
    base = make_tree(tmp_path, None, quick_hyperparameters("ner", base_models["bert"]))
    result = run_train(base)
    assert result.returncode == 1
    assert result.failure and "No 'train' channel" in result.failure


def test_dev_channel_is_checked_too(tmp_path: Path, base_models: dict[str, Path]) -> None:
    data = tmp_path / "data"
    write(data / "dev", "dev.csv", "text\tlabels\nPeter Blackburn\tB-PER\n")
    base = make_tree(
        tmp_path / "tree",
        {"train": DATA_DIR / "ner" / "train.csv", "dev": data / "dev"},
        quick_hyperparameters("ner", base_models["bert"]),
    )
    result = run_train(base)
    assert result.returncode == 1
    assert result.failure and "dev.csv, line 2, column 'labels': 2 words but 1 labels" in result.failure


def test_failure_text_is_capped_to_what_sagemaker_shows(tmp_path: Path, base_models: dict[str, Path]) -> None:
    header = "\t".join(f"column_{i}" for i in range(300))
    failure, _ = fail(tmp_path, base_models["bert"], "ner", header + "\n" + "\t".join(["x"] * 300) + "\n")
    assert len(failure) <= 1024
