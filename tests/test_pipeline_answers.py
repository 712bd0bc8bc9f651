"""Folders saved by plain ``transformers`` are served, and toolkit-form requests get exactly what the
transformers pipeline answers in process (labels, spans, words equal; scores within 1e-4)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import pipeline

from hfsm.bundle import FolderHints, ModelBundle, describe_folder
from hfsm.errors import UserError
from hfsm.inference.predictor import PredictOptions, Predictor, RecordError
from hfsm.inference.toolkit_form import read_toolkit_record
from hfsm.tasks import CLASSIF, MULTILABEL, NER, REGRESSION
from tiny_models import PLAIN_TASKS, make_plain_model

TEXTS = [
    "Obama met Merkel in Berlin on Thursday",
    "the european commission said it disagreed with german advice",
    "Peter Blackburn",
    "",
]
PAIR = {"text": "is the service good", "text_pair": "the staff were friendly and quick"}
TOKEN_CASES: list[dict[str, Any]] = [
    {},
    {"aggregation_strategy": "none"},
    {"aggregation_strategy": "simple"},
    {"aggregation_strategy": "first"},
    {"aggregation_strategy": "average"},
    {"aggregation_strategy": "MAX"},
    {"ignore_labels": []},
    {"aggregation_strategy": "first", "ignore_labels": ["O", "B-PER", "I-PER"]},
]
TEXT_CASES: list[dict[str, Any]] = [
    {},
    {"top_k": None},
    {"top_k": 1},
    {"top_k": 2},
    {"function_to_apply": "sigmoid"},
    {"function_to_apply": "softmax", "top_k": None},
    {"function_to_apply": "none"},
]


@pytest.fixture(scope="module")
def plain_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plain")
    return {task: make_plain_model(root / task, task) for task in PLAIN_TASKS}


@pytest.fixture(scope="module")
def loaded(plain_folders: dict[str, Path]) -> dict[str, tuple[Predictor, Any]]:
    """Each folder as served here, and as the DLC serves it: transformers' pipeline."""
    result = {}
    for task, folder in plain_folders.items():
        predictor = Predictor.load(folder, PredictOptions(device="cpu"))
        predictor.warmup()
        name = "token-classification" if task.startswith("ner") else "text-classification"
        result[task] = (predictor, pipeline(name, model=str(folder), device="cpu"))
    return result


def assert_same(expected: Any, actual: Any, where: str = "answer") -> None:
    """Equal JSON values, floats within 1e-4."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), (where, expected, actual)
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (where, expected, actual)
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert isinstance(actual, float) and abs(expected - actual) <= 1e-4, (where, expected, actual)
    else:
        assert type(expected) is type(actual) and expected == actual, (where, expected, actual)


def toolkit_answer(predictor: Predictor, body: dict[str, Any]) -> Any:
    (outcome,) = predictor.predict([read_toolkit_record(body)])
    assert not isinstance(outcome, RecordError), outcome
    return outcome


def as_json(value: Any) -> Any:
    """What the DLC's encoder writes for a pipeline output (numpy numbers as Python numbers)."""
    return json.loads(json.dumps(value, default=lambda v: v.item()))


@pytest.mark.parametrize("task", ["ner", "ner-layoutlm"])
@pytest.mark.parametrize("parameters", TOKEN_CASES, ids=json.dumps)
def test_token_classification_answers_as_the_pipeline(
    loaded: dict[str, tuple[Predictor, Any]], task: str, parameters: dict[str, Any]
) -> None:
    predictor, pipe = loaded[task]
    for inputs in (TEXTS[0], TEXTS, TEXTS[3]):
        body = {"inputs": inputs, "parameters": parameters} if parameters else {"inputs": inputs}
        assert_same(as_json(pipe(inputs, **parameters)), toolkit_answer(predictor, body))


@pytest.mark.parametrize("task", ["classif", "multilabel-classif", "regression"])
@pytest.mark.parametrize("parameters", TEXT_CASES, ids=json.dumps)
def test_text_classification_answers_as_the_pipeline(
    loaded: dict[str, tuple[Predictor, Any]], task: str, parameters: dict[str, Any]
) -> None:
    predictor, pipe = loaded[task]
    for inputs in (TEXTS[0], TEXTS, PAIR, [PAIR, PAIR | {"text": "fine"}]):
        body = {"inputs": inputs, "parameters": parameters}
        assert_same(as_json(pipe(inputs, **parameters)), toolkit_answer(predictor, body))


def test_a_long_text_has_every_sub_token_predicted(loaded: dict[str, tuple[Predictor, Any]]) -> None:
    predictor, pipe = loaded["ner"]
    words = [f"{TEXTS[0]} {TEXTS[1]}".split()[i % 16] for i in range(2000)]
    text = " ".join(words)
    encoded = pipe.tokenizer(text, return_special_tokens_mask=True)
    content = len(encoded["input_ids"]) - sum(encoded["special_tokens_mask"])
    assert content > 10 * predictor.pipeline.window  # many windows
    tokens = toolkit_answer(predictor, {"inputs": text, "parameters": {"ignore_labels": []}})
    assert [token["index"] for token in tokens] == list(range(1, content + 1))
    words_out = toolkit_answer(
        predictor, {"inputs": text, "parameters": {"aggregation_strategy": "first", "ignore_labels": []}}
    )
    assert " ".join(entity["word"] for entity in words_out) == text.lower()
    # a text that fits one window is answered exactly as the pipeline does, windows or not
    short = " ".join(words[:20])
    assert_same(as_json(pipe(short)), toolkit_answer(predictor, {"inputs": short}))


@pytest.mark.parametrize(
    ("task", "parameters", "message"),
    [
        ("ner", {"aggregation_strategy": "longest"}, "parameters.aggregation_strategy='longest': expected"),
        ("ner", {"ignore_labels": "O"}, "parameters.ignore_labels must be a list"),
        ("ner", {"top_k": 2}, "parameter(s) 'top_k' not supported for token classification"),
        ("ner", {"stride": -1}, "parameters.stride=-1"),
        ("classif", {"top_k": 0}, "parameters.top_k=0: expected a positive integer"),
        ("classif", {"top_k": "3"}, "parameters.top_k='3'"),
        ("classif", {"function_to_apply": "tanh"}, "parameters.function_to_apply='tanh'"),
        ("classif", {"aggregation_strategy": "first"}, "'aggregation_strategy' not supported for text"),
        ("classif", {"max_length": 100_000}, "more than the 128 sub-tokens this model takes"),
        ("regression", {"temperature": 0.7, "do_sample": True}, "'do_sample', 'temperature' not supported"),
    ],
)
def test_unsupported_parameters_are_refused_by_name(
    loaded: dict[str, tuple[Predictor, Any]], task: str, parameters: dict[str, Any], message: str
) -> None:
    predictor, _ = loaded[task]
    (outcome,) = predictor.predict([read_toolkit_record({"inputs": "hello", "parameters": parameters})])
    assert isinstance(outcome, RecordError) and outcome.status == 400
    assert message in outcome.message


def test_a_pair_given_to_a_token_classifier_is_refused(loaded: dict[str, tuple[Predictor, Any]]) -> None:
    predictor, _ = loaded["ner"]
    (outcome,) = predictor.predict([read_toolkit_record({"inputs": PAIR})])
    assert isinstance(outcome, RecordError) and "classifies tokens of one text" in outcome.message


def test_our_own_form_keeps_its_schema_on_a_plain_folder(loaded: dict[str, tuple[Predictor, Any]]) -> None:
    predictor, _ = loaded["ner"]
    (ner,) = predictor.predict([{"text": TEXTS[0]}])
    assert set(ner) >= {"pred", "entities"} and len(ner["pred"]) == len(TEXTS[0].split())
    (box,) = loaded["ner-layoutlm"][0].predict([{"text": "a b", "bbox": [[0, 0, 5, 5], [6, 0, 9, 5]]}])
    assert len(box["pred"]) == 2
    (multilabel,) = loaded["multilabel-classif"][0].predict([{"text": "x"}])
    assert "pred" in multilabel


@pytest.mark.parametrize(
    ("task", "expected", "explained"),
    [
        ("ner", NER, "architectures BertForTokenClassification"),
        ("classif", CLASSIF, "multiclass (3 labels)"),
        ("multilabel-classif", MULTILABEL, "problem_type multi_label_classification"),
        ("regression", REGRESSION, "regression (one label)"),
        ("ner-layoutlm", NER, "word boxes read (model_type layoutlm)"),
    ],
)
def test_the_task_window_and_boxes_come_from_the_config(
    plain_folders: dict[str, Path], task: str, expected: str, explained: str
) -> None:
    described = describe_folder(plain_folders[task])
    assert described.inferred and described.bundle.task == expected
    assert described.bundle.max_seq_length == 128 and described.bundle.stride == 32
    assert described.bundle.use_bbox == (task == "ner-layoutlm")
    assert explained in described.explanation and "window 128 sub-tokens" in described.explanation
    assert described.bundle.threshold == (0.5 if expected == MULTILABEL else None)


def test_hints_from_the_environment(plain_folders: dict[str, Path]) -> None:
    hints = FolderHints(task="sentiment-analysis", max_seq_length=64, multilabel_threshold=0.3)
    described = describe_folder(plain_folders["multilabel-classif"], hints)
    assert described.bundle == ModelBundle(MULTILABEL, 64, 30, False, 0.3)
    assert "HF_TASK=sentiment-analysis" in described.explanation
    with pytest.raises(UserError, match=r"HF_TASK='ner', but .* BertForSequenceClassification"):
        describe_folder(plain_folders["classif"], FolderHints(task="ner"))
    with pytest.raises(UserError, match="HF_TASK='summarization' is not a task this image serves"):
        describe_folder(plain_folders["classif"], FolderHints(task="summarization"))
    with pytest.raises(UserError, match="longer than the 128 positions"):
        describe_folder(plain_folders["ner"], FolderHints(max_seq_length=512))


def test_a_folder_with_no_classification_head_is_a_clear_error(tmp_path: Path) -> None:
    folder = make_plain_model(tmp_path / "m", "ner")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(UserError, match="serves token and text classifiers only"):
        describe_folder(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no config\.json"):
        describe_folder(tmp_path / "empty")


def test_pickled_weights_load_with_weights_only_and_code_in_them_is_refused(tmp_path: Path) -> None:
    folder = make_plain_model(tmp_path / "bin", "ner", safe_serialization=False)
    assert not list(folder.glob("*.safetensors"))
    predictor = Predictor.load(folder, PredictOptions(device="cpu"))
    assert isinstance(toolkit_answer(predictor, {"inputs": TEXTS[0]}), list)

    marker = tmp_path / "executed"

    class RunsCode:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "payload": RunsCode()}, folder / "pytorch_model.bin")
    with pytest.raises(
        UserError, match="holds objects other than tensors, which this image does not unpickle"
    ):
        Predictor.load(folder, PredictOptions(device="cpu"))
    assert not marker.exists()
