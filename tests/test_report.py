"""The evaluation report (training/report.py) on hand-made results, and the CloudWatch step line.

The same report written by real training runs is checked in test_train.py.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hfsm.training import metrics as task_metrics
from hfsm.training import report, report_plots
from hfsm.training.callbacks import LogLinesCallback


def png_size(data: bytes) -> tuple[int, int]:
    """Decode the whole image (not only its header) and return its size in pixels."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def embedded_pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(b64) for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


NER_LABELS = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-PER"]
NER_GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O", "B-LOC", "I-LOC"]]
NER_PRED = [["B-PER", "B-PER", "O", "B-ORG"], ["O", "O", "B-LOC", "B-LOC", "I-LOC"]]


def test_ner_confusion_counts_words_by_entity_type_with_o_last() -> None:
    matrix = report.confusion("ner", NER_GOLD, NER_PRED, NER_LABELS)
    assert matrix is not None and matrix.unit == "word"
    assert matrix.rows == matrix.columns == ["LOC", "ORG", "PER", "O"]
    expected = {  # (gold, pred): words
        ("PER", "PER"): 2,  # B-PER I-PER predicted B-PER B-PER: a boundary error, the right type
        ("O", "O"): 2,
        ("LOC", "ORG"): 1,
        ("ORG", "O"): 1,
        ("O", "LOC"): 1,
        ("LOC", "LOC"): 2,
    }
    index = {name: i for i, name in enumerate(matrix.rows)}
    dense = np.zeros((4, 4), dtype=int)
    for (gold, pred), count in expected.items():
        dense[index[gold], index[pred]] = count
    np.testing.assert_array_equal(matrix.counts, dense)
    assert matrix.counts.sum() == sum(len(words) for words in NER_GOLD)
    pairs = report.most_confused(matrix)
    assert {(p["gold"], p["pred"]) for p in pairs} == {("LOC", "ORG"), ("ORG", "O"), ("O", "LOC")}
    assert all(p["count"] == 1 for p in pairs)


def test_classif_confusion_diagonal_agrees_with_the_scored_table() -> None:
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    gold = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, 4, 200))
    _, detail = task_metrics.score("classif", gold.tolist(), pred.tolist(), labels)
    matrix = report.confusion("classif", gold.tolist(), pred.tolist(), labels)
    assert matrix is not None and matrix.counts.sum() == 200
    for i, name in enumerate(labels):
        row = detail["per_class"][name]
        assert matrix.counts[i].sum() == row["support"]
        assert matrix.counts[i, i] / matrix.counts[i].sum() == pytest.approx(row["recall"])
        assert matrix.counts[i, i] / matrix.counts[:, i].sum() == pytest.approx(row["precision"])


def test_multilabel_confusion_is_one_2x2_per_label_at_the_threshold() -> None:
    gold = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=float)
    probs = np.array([[0.7, 0.2], [0.3, 0.9], [0.65, 0.1], [0.1, 0.59]])
    matrix = report.confusion("multilabel-classif", gold, probs, ["x", "y"], threshold=0.6)
    assert matrix is not None and matrix.columns == report.COLUMNS_2X2
    # x: TP row0, FN row1, FP row2, TN row3; y: TP row1, FN row3 (0.59 < 0.6), TN rows 0 and 2
    np.testing.assert_array_equal(matrix.counts, [[1, 1, 1, 1], [1, 1, 0, 2]])
    _, detail = task_metrics.score("multilabel-classif", gold, probs, ["x", "y"], 0.6)
    for i, name in enumerate(["x", "y"]):
        assert matrix.counts[i, 0] + matrix.counts[i, 1] == detail["per_class"][name]["support"]
    assert report.most_confused(matrix) == [], "not a square matrix: no confused pairs"


def test_large_label_sets_keep_the_classes_with_the_most_errors() -> None:
    n = 120
    counts = np.eye(n, dtype=np.int64) * 5
    for i in range(60):  # classes 0..59 confused with their neighbour, the others never
        counts[i, i + 1] = i + 1
    matrix = report.Confusion([f"c{i}" for i in range(n)], [f"c{i}" for i in range(n)], counts, "example")
    part, note = report.shown_part(matrix)
    assert len(part.rows) == report.MATRIX_SHOWN and note.startswith(f"the {report.MATRIX_SHOWN} of {n}")
    assert "c59" in part.rows and "c100" not in part.rows
    assert report.shown_part(report.Confusion(["a", "b"], ["a", "b"], np.eye(2), "example"))[1] == ""
    pairs = report.most_confused(matrix, limit=3)
    assert [(p["gold"], p["pred"], p["count"]) for p in pairs] == [
        ("c59", "c60", 60),
        ("c58", "c59", 59),
        ("c57", "c58", 58),
    ]


LOG_HISTORY = [
    {"loss": 2.0, "learning_rate": 1e-3, "epoch": 0.5, "step": 4},
    {"loss": 1.5, "learning_rate": 8e-4, "epoch": 0.9, "step": 6},
    {"eval_loss": 1.4, "eval_mse": 0.9, "eval_f1": 0.5, "epoch": 0.9, "step": 6},
    {"loss": 1.2, "learning_rate": 4e-4, "epoch": 1.2, "step": 8},
    {"eval_loss": 1.1, "eval_mse": 0.7, "eval_f1": 0.5, "epoch": 1.7, "step": 12},
    {"train_runtime": 3.0, "train_loss": 1.5, "epoch": 1.7, "step": 12},
]


def test_learning_curves_from_the_log_history() -> None:
    data = report.curves(LOG_HISTORY, "f1", greater=True)
    assert (data.train_steps, data.train_loss) == ([4, 6, 8], [2.0, 1.5, 1.2])  # not the final train_loss
    assert (data.eval_steps, data.eval_loss) == ([6, 12], [1.4, 1.1])
    assert (data.metric_steps, data.metric) == ([6, 12], [0.5, 0.5])
    assert data.best_step == 6, "a tie keeps the first best, as the Trainer does"
    assert report.curves(LOG_HISTORY, "eval_mse", greater=False).best_step == 12
    assert report.curves(LOG_HISTORY, None).metric_steps == []
    width, height = report_plots.CURVES_SIZE
    for args in ((data, "f1"), (report.curves([], None), None)):
        assert png_size(report_plots.learning_curves_png(*args)) == (
            width * report_plots.DPI,
            height * report_plots.DPI,
        )


def test_confusion_png_grows_with_the_label_set() -> None:
    sizes = []
    for n in (3, 20, 77):
        names = [f"class_{i}" for i in range(n)]
        matrix = report.Confusion(names, names, np.eye(n, dtype=np.int64) * 3, "example")
        width, height = report_plots.confusion_figure_size(n, n)
        assert png_size(report_plots.confusion_png(matrix, "dev")) == (
            round(width * report_plots.DPI),
            round(height * report_plots.DPI),
        )
        sizes.append(width)
    assert sizes[0] < sizes[1] < sizes[2] <= 30
    assert report_plots.confusion_figure_size(77, 77)[1] >= 77 * 0.2, "at least 0.2 inch per class"
    widths = [report_plots.confusion_figure_size(n, n)[0] for n in range(1, 120)]
    assert widths == sorted(widths), "never smaller for more classes"


def classif_case(n_classes: int, seed: int = 1) -> tuple[list[str], dict, dict]:
    rng = np.random.default_rng(seed)
    labels = [f"intent_{i}" for i in range(n_classes - 1)] + ['<b>&"odd" name']
    splits, metrics = {}, {}
    for split in ("dev", "test"):
        gold = rng.integers(0, n_classes, 300).tolist()
        pred = [g if rng.random() < 0.7 else int(rng.integers(0, n_classes)) for g in gold]
        splits[split] = (gold, pred)
        metrics[split] = task_metrics.score("classif", gold, pred, labels)[1]
    metrics["train"] = {"train_loss": 1.25, "global_step": 12}
    return labels, metrics, splits


def test_write_report_for_77_classes(tmp_path: Path) -> None:
    """BANKING77's size: every file written, images embedded, every number that of metrics.json."""
    labels, metrics, splits = classif_case(77)
    written = report.write_report(tmp_path, "classif", metrics, labels, splits, LOG_HISTORY, "f1", True)
    names = [path.name for path in written]
    assert names[-1] == "report.html", "written last: its presence means the report is whole"
    assert set(names) == {
        "evaluation_report.json",
        "evaluation_report.txt",
        "confusion_matrix_dev.png",
        "confusion_matrix_test.png",
        "learning_curves.png",
        "report.html",
    }
    width, height = report_plots.confusion_figure_size(77, 77)
    assert png_size((tmp_path / "confusion_matrix_dev.png").read_bytes()) == (
        round(width * report_plots.DPI),
        round(height * report_plots.DPI),
    )

    saved = json.loads((tmp_path / "evaluation_report.json").read_text(encoding="utf-8"))
    for split in ("dev", "test"):
        entry = saved["splits"][split]
        assert entry["per_class"] == metrics[split]["per_class"]
        assert entry["summary"] == {k: metrics[split][k] for k in ("accuracy", "f1_macro", "f1_micro")}
        counts = np.array(entry["confusion_matrix"]["counts"])
        assert counts.shape == (77, 77) and counts.sum() == 300
        assert entry["confusion_matrix"]["gold_rows"] == labels
        assert entry["most_confused"][0]["count"] == counts[~np.eye(77, dtype=bool)].max()
    assert saved["train"] == metrics["train"]
    assert saved["learning_curves"]["train_steps"] == [4, 6, 8]
    assert saved["learning_curves"]["best_step"] == 6
    lines = (tmp_path / "evaluation_report.json").read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if re.fullmatch(r" +\[\d+(, \d+){76}\],?", line)]
    assert len(rows) == 2 * 77, "one line per matrix row, not one per number"

    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    images = embedded_pngs(page)
    assert sorted(images) == sorted(
        (tmp_path / name).read_bytes()
        for name in ("confusion_matrix_dev.png", "confusion_matrix_test.png", "learning_curves.png")
    )
    for name in labels[:-1]:
        assert f"<td>{name}</td>" in page
    assert "<td>&lt;b&gt;&amp;&quot;odd&quot; name</td>" in page and '<b>&"odd"' not in page
    assert not re.search(r'(src|href)="(?!data:)', page), "no external asset"
    assert f"<td>{metrics['dev']['f1_macro']:.4f}</td>" in page

    text = (tmp_path / "evaluation_report.txt").read_text(encoding="utf-8")
    row = metrics["test"]["per_class"]["intent_5"]
    assert re.search(
        rf"^intent_5 +{row['precision']:.4f} +{row['recall']:.4f} +{row['f1']:.4f} +{row['support']}$",
        text,
        re.MULTILINE,
    )


def test_write_report_ner_multilabel_regression(tmp_path: Path) -> None:
    ner_metrics = {"dev": task_metrics.score("ner", NER_GOLD, NER_PRED, NER_LABELS)[1]}
    report.write_report(
        tmp_path / "ner", "ner", ner_metrics, NER_LABELS, {"dev": (NER_GOLD, NER_PRED)}, LOG_HISTORY, "f1"
    )
    saved = json.loads((tmp_path / "ner" / "evaluation_report.json").read_text())
    assert saved["splits"]["dev"]["per_type"] == ner_metrics["dev"]["per_type"]
    assert saved["splits"]["dev"]["confusion_matrix"]["gold_rows"] == ["LOC", "ORG", "PER", "O"]
    assert "<th>entity type</th>" in (tmp_path / "ner" / "report.html").read_text()

    gold = np.array([[1, 0], [0, 1], [1, 1]], dtype=float)
    probs = np.array([[0.9, 0.1], [0.2, 0.4], [0.8, 0.7]])
    ml_metrics = {"test": task_metrics.score("multilabel-classif", gold, probs, ["x", "y"], 0.5)[1]}
    report.write_report(
        tmp_path / "ml", "multilabel-classif", ml_metrics, ["x", "y"], {"test": (gold, probs)}, [], None
    )
    saved = json.loads((tmp_path / "ml" / "evaluation_report.json").read_text())
    assert saved["splits"]["test"]["confusion_matrix"]["counts"] == [[2, 0, 0, 1], [1, 1, 0, 1]]
    assert png_size((tmp_path / "ml" / "confusion_matrix_test.png").read_bytes())[1] > 0

    g, p = [1.0, 2.0, 3.5, 4.0], [1.2, 1.9, 3.0, 4.4]
    reg_metrics = {"dev": task_metrics.score("regression", g, p, [])[1]}
    report.write_report(
        tmp_path / "reg", "regression", reg_metrics, [], {"dev": (g, p)}, LOG_HISTORY, "mse", False
    )
    files = {path.name for path in (tmp_path / "reg").iterdir()}
    assert "pred_vs_gold_dev.png" in files and not any(name.startswith("confusion") for name in files)
    width, height = report_plots.SCATTER_SIZE
    assert png_size((tmp_path / "reg" / "pred_vs_gold_dev.png").read_bytes()) == (
        width * report_plots.DPI,
        height * report_plots.DPI,
    )
    saved = json.loads((tmp_path / "reg" / "evaluation_report.json").read_text())
    assert saved["splits"]["dev"] == {"summary": reg_metrics["dev"]}
    assert len(embedded_pngs((tmp_path / "reg" / "report.html").read_text())) == 2


def test_a_failed_report_warns_and_says_why_in_the_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels, metrics, splits = classif_case(4)
    broken = {"dev": (splits["dev"][0], splits["dev"][1][:-1])}  # one prediction short
    with caplog.at_level(logging.WARNING, logger="hfsm.train"):
        assert (
            report.write_report_or_warn(tmp_path, "classif", metrics, labels, broken, [], "f1_macro") is False
        )
    assert "evaluation report not written" in caplog.text and "Traceback" in caplog.text
    reason = (tmp_path / report.REPORT_ERROR).read_text(encoding="utf-8")
    assert reason.startswith("evaluation report not written: ValueError")
    assert not (tmp_path / "report.html").exists()
    assert report.write_report_or_warn(tmp_path, "classif", metrics, labels, splits, [], "f1_macro") is True
    assert (tmp_path / "report.html").exists() and not (tmp_path / report.REPORT_ERROR).exists()


def test_nothing_plots_at_import_time() -> None:
    """The report module imports no matplotlib (no backend chosen, nothing for serving to load)."""
    code = (
        "import sys, hfsm.training.report, hfsm.training.job\n"
        "assert 'matplotlib' not in sys.modules and 'tensorboard' not in sys.modules, 'imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr


def test_step_line_clock() -> None:
    assert LogLinesCallback.clock(0) == "0:00:00"
    assert LogLinesCallback.clock(3725.4) == "1:02:05"
    assert LogLinesCallback.clock(-3) == "0:00:00"


def test_tensorboard_callback_writes_events_or_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Event files in the given folder; an unwritable one stops TensorBoard logging, not the training."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import TrainerControl, TrainerState, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints"), report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    callback = report.tensorboard_callback(tmp_path / "output" / "tensorboard")
    callback.on_train_begin(args, state, control)
    state.global_step = 3
    callback.on_log(args, state, control, logs={"loss": 0.5, "learning_rate": 1e-4})
    callback.on_train_end(args, state, control)
    events = EventAccumulator(str(tmp_path / "output" / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(3, 0.5)]

    (tmp_path / "blocked").write_text("a file where the output folder belongs", encoding="utf-8")
    callback = report.tensorboard_callback(tmp_path / "blocked" / "tensorboard")
    with caplog.at_level(logging.WARNING, logger="hfsm.train"):
        callback.on_train_begin(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 0.5})
        callback.on_train_end(args, state, control)
    assert "TensorBoard logging stopped" in caplog.text and callback.tb_writer is None
