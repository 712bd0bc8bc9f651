"""The ``train`` command end to end on tiny models: artifacts, metrics, label maps, pipelines."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

import pytest

from conftest import quick_hyperparameters
from sagemaker_tree import DATA_DIR, TrainResult, make_tree, run_train

EXPECTED_METRICS = {
    "ner": {"precision", "recall", "f1", "accuracy", "per_type"},
    "classif": {"accuracy", "f1_macro", "f1_micro", "per_class"},
    "multilabel": {"f1_micro", "f1_macro", "threshold", "per_class"},
    "regression": {"mse", "mae", "pearson", "spearman"},
    "ner_bbox": {"precision", "recall", "f1", "accuracy", "per_type"},
}


@pytest.mark.parametrize("case", sorted(EXPECTED_METRICS))
def test_artifacts_and_metrics(trained: dict[str, TrainResult], case: str) -> None:
    result = trained[case]
    model_files = {p.name for p in result.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "hfsm.json"} <= model_files
    assert not [name for name in model_files if name.endswith((".bin", ".pt", ".pkl", ".pth"))], "no pickles"
    metrics = result.metrics()
    for split in ("dev", "test"):
        assert EXPECTED_METRICS[case] <= set(metrics[split]), f"{split} metrics of {case}"
    assert metrics["train"]["global_step"] == 12
    assert result.failure is None
    test_rows = (DATA_DIR / case / "test.csv").read_text(encoding="utf-8").strip().count("\n")
    lines = (result.output_data / "test_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == test_rows
    assert "pred" in json.loads(lines[0])
    assert any(result.base.joinpath("checkpoints").glob("checkpoint-*")), "checkpoints written"


def test_metrics_are_logged_one_per_line(trained: dict[str, TrainResult]) -> None:
    output = trained["ner"].output
    for name in ("dev_f1=", "dev_precision=", "test_f1=", "train_loss="):
        assert name in output


def _tags(path: Path) -> set[str]:
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        return {tag for row in csv.DictReader(handle, delimiter="\t") for tag in row["labels"].split()}


def test_ner_label_map_is_union_of_splits_with_o_first(trained: dict[str, TrainResult]) -> None:
    config = json.loads((trained["ner"].model_dir / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    expected = set().union(*(_tags(DATA_DIR / "ner" / f"{s}.csv") for s in ("train", "dev", "test")))
    assert labels[0] == "O"
    assert set(labels) == expected
    assert labels[1:] == sorted(labels[1:])
    assert config["label2id"] == {name: i for i, name in enumerate(labels)}


def test_serving_settings_saved(trained: dict[str, TrainResult]) -> None:
    bundle = json.loads((trained["multilabel"].model_dir / "hfsm.json").read_text())
    assert bundle["task"] == "multilabel-classif"
    assert 0 < bundle["threshold"] < 1
    assert bundle["threshold"] == trained["multilabel"].metrics()["dev"]["threshold"]
    assert json.loads((trained["ner_bbox"].model_dir / "hfsm.json").read_text())["use_bbox"] is True
    config = json.loads((trained["regression"].model_dir / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


@pytest.mark.parametrize(
    ("case", "pipeline_task"),
    [
        ("ner", "token-classification"),
        ("classif", "text-classification"),
        ("multilabel", "text-classification"),
    ],
)
def test_model_folder_loads_in_a_plain_pipeline(
    trained: dict[str, TrainResult], case: str, pipeline_task: str
) -> None:
    from transformers import pipeline

    predict = pipeline(pipeline_task, model=str(trained[case].model_dir), device="cpu")
    output = predict("Empire State Building is in New York")
    labels = set(json.loads((trained[case].model_dir / "config.json").read_text())["id2label"].values())
    assert output and all(item.get("entity", item.get("label")) in labels for item in output)


def test_single_channel_layout_and_model_channel(tmp_path: Path, base_models: dict[str, Path]) -> None:
    """The original layout: one ``train`` channel with train/dev/test.csv, and the model as a channel."""
    hyper = quick_hyperparameters("classif", base_models["bert"], max_steps=4)
    del hyper["model_name"]
    base = make_tree(tmp_path, None, hyper)
    make_tree(tmp_path, {"train": DATA_DIR / "classif", "model": base_models["bert"]}, hyper)
    result = run_train(base)
    assert result.returncode == 0, result.output[-3000:]
    metrics = result.metrics()
    assert set(metrics) == {"dev", "test", "train"}
    assert metrics["train"]["train_examples"] == 48, "dev.csv and test.csv are not trained on"


def test_train_only_without_dev_or_test(tmp_path: Path, base_models: dict[str, Path]) -> None:
    base = make_tree(
        tmp_path,
        {"train": DATA_DIR / "regression" / "train.csv"},
        quick_hyperparameters("regression", base_models["bert"], max_steps=3),
    )
    result = run_train(base)
    assert result.returncode == 0, result.output[-3000:]
    assert set(result.metrics()) == {"train"}
    assert (result.model_dir / "model.safetensors").exists()


def test_long_ner_texts_are_windowed_in_training_and_evaluation(
    tmp_path: Path, base_models: dict[str, Path]
) -> None:
    """Rows far longer than max_seq_length: every dev word still gets exactly one prediction."""
    import csv

    rows = list(csv.reader((DATA_DIR / "ner" / "train.csv").open(encoding="utf-8"), delimiter="\t"))[1:]
    long_text = " ".join(r[0] for r in rows[:20])
    long_tags = " ".join(r[1] for r in rows[:20])
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        with (data / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["text", "labels"])
            writer.writerows([[long_text, long_tags], *rows[20:30]])
    base = make_tree(
        tmp_path / "tree",
        data,
        quick_hyperparameters("ner", base_models["bert"], max_steps=4, max_seq_length=32, stride=8),
    )
    result = run_train(base)
    assert result.returncode == 0, result.output[-3000:]
    first = json.loads((result.output_data / "test_predictions.jsonl").read_text().splitlines()[0])
    assert len(first["pred"]) == len(long_text.split()) > 200
    assert len(first["proba"]) == len(first["pred"])


# --- evaluation report, TensorBoard logs and CloudWatch step lines (the same `trained` runs) -------------

STEP_LINE = re.compile(
    r"INFO hfsm\.train: step (\d+)/(\d+) epoch ([0-9.]+) train_loss=([0-9.eE+-]+) "
    r"learning_rate=([0-9.eE+-]+) samples_per_second=([0-9.]+) elapsed (\d+:\d\d:\d\d) eta (\d+:\d\d:\d\d)$",
    re.MULTILINE,
)
TQDM_BAR = re.compile(r"\d+%\|[^|\n]*\| *\d+/\d+ \[|\r")
"""A tqdm bar (``Loading weights:  50%|#####     | 1/2 [00:00<00:00, 3.2it/s]``). run_train reads the
output as text, which turns each ``\\r`` into a line break; the bar's own text survives that."""


def _report_images(case: str) -> list[str]:
    kind = "pred_vs_gold" if case == "regression" else "confusion_matrix"
    return ["learning_curves.png", f"{kind}_dev.png", f"{kind}_test.png"]


@pytest.mark.parametrize("case", sorted(EXPECTED_METRICS))
def test_evaluation_report_written_by_the_job(trained: dict[str, TrainResult], case: str) -> None:
    from test_report import embedded_pngs, png_size

    result = trained[case]
    out = result.output_data
    metrics = result.metrics()
    assert "evaluation report: " in result.output and "report not written" not in result.output
    assert not (out / "report_error.txt").exists()
    files = {name: (out / name).read_bytes() for name in _report_images(case)}
    for name, data in files.items():
        width, height = png_size(data)
        assert width >= 400 and height >= 300, name
    page = (out / "report.html").read_text(encoding="utf-8")
    assert sorted(embedded_pngs(page)) == sorted(files.values()), "the PNGs, embedded as they are"
    assert not re.search(r'(src|href)="(?!data:)', page)

    saved = json.loads((out / "evaluation_report.json").read_text(encoding="utf-8"))
    key = "per_type" if case.startswith("ner") else "per_class"
    for split in ("dev", "test"):
        entry = saved["splits"][split]
        assert entry["summary"] == {k: v for k, v in metrics[split].items() if not isinstance(v, dict)}
        if case == "regression":
            assert "confusion_matrix" not in entry
            continue
        assert entry[key] == metrics[split][key]
        for name in metrics[split][key]:
            assert f"<td>{html.escape(name)}</td>" in page
        counts = entry["confusion_matrix"]["counts"]
        with (DATA_DIR / case / f"{split}.csv").open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if case.startswith("ner"):  # every word counted once, over all the label set's entity types
            assert sum(map(sum, counts)) == sum(len(row["labels"].split()) for row in rows)
            labels = json.loads((result.model_dir / "config.json").read_text())["id2label"].values()
            assert set(entry["confusion_matrix"]["gold_rows"]) == {t.split("-", 1)[-1] for t in labels}
        elif case == "classif":
            assert sum(map(sum, counts)) == len(rows)
        else:  # multilabel: one 2x2 per label, each over every example
            assert {sum(row) for row in counts} == {len(rows)}

    curves = saved["learning_curves"]
    logged = [(int(m[1]), float(m[4])) for m in STEP_LINE.finditer(result.output)]
    assert curves["train_steps"] == [step for step, _ in logged]
    assert curves["train_loss"] == pytest.approx([loss for _, loss in logged], abs=1e-6)
    assert curves["eval_steps"] == [6, 12] and curves["best_step"] in (6, 12)


def test_tensorboard_logs_hold_the_logged_train_loss(trained: dict[str, TrainResult]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = trained["ner"]
    folder = result.base / "output" / "tensorboard"
    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder))
    events.Reload()
    assert {"train/loss", "train/learning_rate", "eval/loss", "eval/f1"} <= set(events.Tags()["scalars"])
    scalars = [(e.step, e.value) for e in events.Scalars("train/loss")]
    logged = [(int(m[1]), float(m[4])) for m in STEP_LINE.finditer(result.output)]
    assert len(scalars) == len(logged) >= 3
    assert [step for step, _ in scalars] == [step for step, _ in logged]
    assert [value for _, value in scalars] == pytest.approx([loss for _, loss in logged], abs=1e-5)


def test_progress_is_one_plain_line_per_logging_step(trained: dict[str, TrainResult]) -> None:
    from tqdm import tqdm

    rendered = io.StringIO()  # what a real bar would leave in the output, read as text
    list(tqdm(range(2), desc="Loading weights", file=rendered, mininterval=0))
    assert TQDM_BAR.search(rendered.getvalue().replace("\r", "\n")), "the check would see a bar"

    for case, result in trained.items():
        assert not TQDM_BAR.search(result.output), f"{case}: a progress bar in the job's output"
        assert "\x1b[" not in result.output, f"{case}: a terminal escape in the job's output"
        lines = list(STEP_LINE.finditer(result.output))
        assert [int(m[1]) for m in lines] == [4, 6, 8, 12], case  # logging_steps 4, and checkpoints
        assert {int(m[2]) for m in lines} == {12}
        assert all(float(m[6]) > 0 for m in lines), "throughput"
        assert lines[-1][8] == "0:00:00", "nothing left at the last step"
