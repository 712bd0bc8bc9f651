"""Bad data and configuration fail the job with exit 1 and a reason naming the file, line and column;
input that is odd but valid trains. Every case is a real ``train`` process on real files."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import quick_hyperparameters
from sagemaker_tree import DATA_DIR, TrainResult, make_tree, run_train

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


Files = str | bytes | dict[str, str | bytes]
"""The train file's content, or ``{channel: content}`` for several channels (one file each)."""


def tree_with(tmp_path: Path, model: Path, task: str, files: Files, **hyper: object) -> Path:
    data = tmp_path / "data"
    channels = files if isinstance(files, dict) else {"train": files}
    for channel, content in channels.items():
        write(data / channel, f"{channel}.csv", content)
    return make_tree(
        tmp_path / "tree",
        {channel: data / channel for channel in channels},
        quick_hyperparameters(task, model, **hyper),
    )


def fail(tmp_path: Path, model: Path, task: str, train: Files, **hyper: object) -> tuple[str, str]:
    base = tree_with(tmp_path, model, task, train, **hyper)
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
    # encodings
    "UTF-16 file": (
        "ner",
        GOOD_NER.encode("utf-16"),
        {},
        r"train\.csv, line 1: is UTF-16 .*save the file as UTF-8",
    ),
    "Latin-1 byte after CRLF lines": (
        "ner",
        b"text\tlabels\r\nEU rejects\tB-ORG O\r\ncaf\xe9 au lait\tO O O\r\n",
        {},
        r"train\.csv, line 3: is not valid UTF-8 \(byte 0xe9",
    ),
    # quoting and columns
    "quote never closed": (
        "ner",
        GOOD_NER + '"Peter Blackburn\tB-PER I-PER\nhi there\tO O\n',
        {},
        r"train\.csv, line 3: a quoted field that starts on this line is never closed",
    ),
    "text after a closing quote": (
        "ner",
        GOOD_NER + '"Peter" Blackburn\tB-PER I-PER\n',
        {},
        r"train\.csv, line 3: a field that starts with a quote has text after its closing quote",
    ),
    "unquoted tab in a text (extra field)": (
        "classif",
        "text\tlabels\nhello there\tgreeting\nsee\tyou later\tfarewell\n",
        {},
        r"train\.csv, line 3: has 3 fields but the header has 2 columns; a tab inside a text must be quoted",
    ),
    "column named twice": (
        "ner",
        "text\tlabels\ttext\nEU rejects\tB-ORG O\tEU rejects\n",
        {},
        r"train\.csv, line 1: the header names column\(s\) 'text' more than once",
    ),
    "missing column in the test split": (
        "ner",
        {"train": GOOD_NER, "test": "text\nEU rejects\n"},
        {},
        r"test\.csv, line 1: missing column\(s\) 'labels'",
    ),
    # empty and mismatched values
    "empty class label": (
        "classif",
        "text\tlabels\nhi\tgreeting\nbye\t \n",
        {},
        r"train\.csv, line 3, column 'labels': the label is empty",
    ),
    "NER labels missing after a multi-line quoted text": (
        "ner",
        GOOD_NER + '"Peter\nBlackburn"\tB-PER\n',
        {},
        r"train\.csv, line 3, column 'labels': 2 words but 1 labels",
    ),
    "bad tag in the dev split": (
        "ner",
        {"train": GOOD_NER, "dev": "text\tlabels\nPeter Blackburn\tb-per O\n"},
        {},
        r"dev\.csv, line 2, column 'labels': label 'b-per' of word 1 is not an IOB2 tag",
    ),
    # numbers
    "infinite target": (
        "regression",
        "text\tlabels\nfine\t3.2\nhuge\t1e400\n",
        {},
        r"line 3, column 'labels': '1e400' is not a finite number",
    ),
    "empty target": (
        "regression",
        "text\tlabels\nfine\t3.2\nnothing\t\n",
        {},
        r"line 3, column 'labels': '' is not a number",
    ),
    "decimal comma target": (
        "regression",
        "text\tlabels\nfine\t3.2\ncomma\t3,5\n",
        {},
        r"line 3, column 'labels': '3,5' is not a number",
    ),
    # word boxes
    "box with three numbers": (
        "ner",
        GOOD_BOXES + "a b\tO O\t1 2 3 4,5 6 7\n",
        {"use_bbox": True},
        r"line 3, column 'bbox': box 2: a box needs 4 numbers x0 y0 x1 y1, got 3",
    ),
    "box corners swapped": (
        "ner",
        GOOD_BOXES + "a b\tO O\t50 2 10 4,5 6 7 8\n",
        {"use_bbox": True},
        r"line 3, column 'bbox': box 1: box \[50, 2, 10, 4\] has x1 < x0",
    ),
    "negative box coordinate": (
        "ner",
        GOOD_BOXES + "a b\tO O\t1 2 3 4,-5 6 7 8\n",
        {"use_bbox": True},
        r"line 3, column 'bbox': box 2: box coordinate -5 is outside 0\.\.1000",
    ),
    "fractional box coordinate": (
        "ner",
        GOOD_BOXES + "a b\tO O\t1 2 3 4,5 6.5 7 8\n",
        {"use_bbox": True},
        r"line 3, column 'bbox': box 2: box coordinate '6\.5' is not an integer",
    ),
    # model and hyperparameters
    "unknown model name offline": (
        "ner",
        GOOD_NER,
        {"model_name": "no-such-org/no-such-model"},
        r"Cannot load model 'no-such-org/no-such-model'.*'model' channel",
    ),
    "negative learning rate": (
        "ner",
        GOOD_NER,
        {"learning_rate": -1},
        r"'learning_rate' = -1\.0: must be positive",
    ),
    "window too short": (
        "ner",
        GOOD_NER,
        {"max_seq_length": 4, "stride": 0},
        r"'max_seq_length' = 4: must be between 8 and 100000",
    ),
    "batch size not a number": (
        "ner",
        GOOD_NER,
        {"per_device_train_batch_size": "sixteen"},
        r"'per_device_train_batch_size' has an invalid value \"sixteen\"",
    ),
    "optimizer whose package the image lacks": (
        "ner",
        GOOD_NER,
        {"optim": "adamw_8bit"},
        r"'optim' = 'adamw_8bit' cannot run in this image: .*bitsandbytes",
    ),
    "schedule without its arguments": (
        "ner",
        GOOD_NER,
        {"lr_scheduler_type": "cosine_with_min_lr"},
        r"'lr_scheduler_type' = 'cosine_with_min_lr' with lr_scheduler_kwargs=\{\}: One of min_lr",
    ),
    "window longer than the model's positions": (
        "ner",
        GOOD_NER,
        {"max_seq_length": 256},
        r"'max_seq_length' = 256 is longer than the 128 positions of .* \(bert\)",
    ),
    "model path that does not exist": (
        "ner",
        GOOD_NER,
        {"model_name": "/no/such/model/folder"},
        r"'model_name' = '/no/such/model/folder': no such folder",
    ),
    "regression label with an underscore": (
        "regression",
        "text\tlabels\nfine\t1.5\nbad\t1_5\n",
        {},
        r"line 3, column 'labels': '1_5' is not a number",
    ),
    "training that diverges": (
        "regression",
        "text\tlabels\n" + "".join(f"text number {i}\t{i * 1000}\n" for i in range(16)),
        {"learning_rate": 1e12, "max_grad_norm": 0},
        r"Training diverged: after step \d+, \d+ weight tensors hold NaN or infinite values",
    ),
    "hub token as a hyperparameter": (
        "ner",
        GOOD_NER,
        {"hub_token": "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"},
        r"Unknown hyperparameter 'hub_token'\. A Hugging Face hub token is read from the HF_TOKEN",
    ),
}


def test_the_corpus_has_at_least_20_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_with_a_reason(tmp_path: Path, base_models: dict[str, Path], case: str) -> None:
    task, content, hyper, pattern = CASES[case]
    failure, output = fail(tmp_path, base_models["bert"], task, content, **hyper)
    assert re.search(pattern, failure, flags=re.DOTALL), failure
    assert failure in output, "the reason is also in the job log"
    for secret in (str(value) for name, value in hyper.items() if "token" in name):
        assert secret not in failure and secret not in output, "a token is never repeated"


def test_use_bbox_needs_a_layout_model(tmp_path: Path, base_models: dict[str, Path]) -> None:
    failure, _ = fail(tmp_path, base_models["bert"], "ner", GOOD_BOXES, use_bbox=True)
    assert "use_bbox is true but" in failure and "bert" in failure


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


# Input that is odd but valid: each trains, and the oddity is checked in what the job wrote.

NER_ROWS = [
    ("EU rejects German call to boycott British lamb .", "B-ORG O B-MISC O O O B-MISC O O"),
    ("Peter Blackburn", "B-PER I-PER"),
    ("BRUSSELS 1996-08-22", "B-LOC O"),
]
LONG_WORDS = 100_000


def tsv(rows: list[tuple[str, ...]], header: tuple[str, ...] = ("text", "labels"), end: str = "\n") -> str:
    """Rows quoted the way the README asks (``csv.writer`` with tabs)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator=end)
    writer.writerows([header, *rows])
    return buffer.getvalue()


def long_row() -> tuple[str, str]:
    words = ("EU rejects German call to boycott British lamb " * (LONG_WORDS // 8)).split()
    tags = ("B-ORG O B-MISC O O O B-MISC O " * (LONG_WORDS // 8)).split()
    assert len(words) == len(tags) == LONG_WORDS
    return " ".join(words), " ".join(tags)


def predictions(result: TrainResult) -> list[dict]:
    lines = (result.output_data / "test_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def labels_of(result: TrainResult) -> list[str]:
    config = json.loads((result.model_dir / "config.json").read_text(encoding="utf-8"))
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def check_clean_labels(result: TrainResult) -> None:
    assert result.metrics()["train"]["train_examples"] == len(NER_ROWS)
    assert all(re.fullmatch(r"O|[BI]-[A-Z]+", label) for label in labels_of(result)), labels_of(result)


def check_quoted(result: TrainResult) -> None:
    first = predictions(result)[0]
    assert first["text"] == 'EU\trejects\n"German" call'
    assert len(first["pred"]) == 4, "words are split on the tab and newline inside the quoted text"


def check_unseen_labels(result: TrainResult) -> None:
    assert labels_of(result) == ["balance", "card_lost", "refund", "top_up"]
    assert {"refund", "top_up"} <= set(result.metrics()["dev"]["per_class"])


def check_long_row(result: TrainResult) -> None:
    """Only in train: predicting its ~7,800 windows would take half a minute on a busy 2-core machine
    (long texts in predictions are tested in test_train.py and by the serving tests)."""
    train = result.metrics()["train"]
    assert train["train_examples"] == len(NER_ROWS) + 1
    assert train["train_features"] > LONG_WORDS // 64, "the row is split into windows of max_seq_length"


def check_dropped_words(result: TrainResult) -> None:
    first = predictions(result)[0]
    assert len(first["pred"]) == len(first["text"].split()) == 5


def check_empty_multilabel(result: TrainResult) -> None:
    assert labels_of(result) == ["joy", "love"]
    assert predictions(result)[0]["labels"] == []


ODD_CASES: dict[str, tuple[str, Files, dict[str, object], Callable[[TrainResult], None]]] = {
    "CRLF line endings": ("ner", tsv(NER_ROWS, end="\r\n"), {}, check_clean_labels),
    "UTF-8 byte order mark": ("ner", b"\xef\xbb\xbf" + tsv(NER_ROWS).encode(), {}, check_clean_labels),
    "blank and whitespace-only lines": (
        "ner",
        tsv(NER_ROWS).replace("\n", "\n\n \t \n", 2) + "\n\n",
        {},
        check_clean_labels,
    ),
    "trailing tab on every line": ("ner", tsv(NER_ROWS).replace("\n", "\t\n"), {}, check_clean_labels),
    "extra columns in another order": (
        "ner",
        tsv(
            [(str(i), tags, "wire", text) for i, (text, tags) in enumerate(NER_ROWS)],
            ("id", "labels", "source", "text"),
        ),
        {},
        check_clean_labels,
    ),
    "quoted fields with tabs, newlines and quotes": (
        "ner",
        {
            "train": tsv([*NER_ROWS, ('EU\trejects\n"German" call', "B-ORG O B-MISC O")]),
            "test": tsv([('EU\trejects\n"German" call', "B-ORG O B-MISC O")]),
        },
        {},
        check_quoted,
    ),
    "labels only in dev and test": (
        "classif",
        {
            "train": tsv([("what is my balance", "balance"), ("I lost my card", "card_lost")] * 4),
            "dev": tsv([("I want my money back", "refund"), ("what is my balance", "balance")]),
            "test": tsv([("add money to my card", "top_up")]),
        },
        {"eval_steps": 2},
        check_unseen_labels,
    ),
    "a row of 100,000 words": (
        "ner",
        tsv([*NER_ROWS, long_row()]),
        {"max_steps": 2},
        check_long_row,
    ),
    "words the tokenizer drops": (
        "ner",
        {"train": tsv(NER_ROWS), "test": tsv([("EU \u200b rejects \ufe0f lamb", "B-ORG O O O O")])},
        {},
        check_dropped_words,
    ),
    "a tuning job's objective metric (SageMaker adds it)": (
        "ner",
        tsv(NER_ROWS),
        {"_tuning_objective_metric": "dev:f1"},
        check_clean_labels,
    ),
    "classif with a short window and stride left at auto": (
        "classif",
        tsv([("what is my balance", "balance"), ("I lost my card", "card_lost")] * 4),
        {"max_seq_length": 32, "stride": "auto", "metric_for_best_model": "auto"},
        lambda result: None,
    ),
    "multilabel rows without labels": (
        "multilabel-classif",
        {
            "train": tsv([("so happy", '"joy"'), ("nothing here", ""), ("love it", '"joy","love"')] * 3),
            "test": tsv([("the weather", "")]),
        },
        {},
        check_empty_multilabel,
    ),
}


@pytest.mark.parametrize("case", sorted(ODD_CASES))
def test_odd_but_valid_input_trains(tmp_path: Path, base_models: dict[str, Path], case: str) -> None:
    task, files, hyper, check = ODD_CASES[case]
    base = tree_with(tmp_path, base_models["bert"], task, files, **{"max_steps": 3, **hyper})
    result = run_train(base, timeout=300)
    assert result.returncode == 0, result.output[-3000:]
    assert result.failure is None
    assert (result.model_dir / "model.safetensors").is_file()
    check(result)
