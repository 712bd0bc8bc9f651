"""``serve`` as a drop-in for the Hugging Face inference DLC, over real HTTP: folders saved by plain
``transformers``, ``HF_MODEL_ID``, ``HF_TASK``, and custom inference code (``code/inference.py``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from transformers import pipeline

from live_server import LiveServer, error_of, ok_json, ping, stop_all, wait_all_ready
from test_pipeline_answers import as_json, assert_same
from tiny_models import PLAIN_TASKS, make_plain_model

TEXTS = ["Obama met Merkel in Berlin", "the staff were friendly", "Peter Blackburn"]
PARAMETERS = {
    "ner": {"aggregation_strategy": "first"},
    "ner-layoutlm": {"aggregation_strategy": "simple", "ignore_labels": []},
    "classif": {"top_k": None},
    "multilabel-classif": {"function_to_apply": "sigmoid", "top_k": 2},
    "regression": {},
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plain-folders")
    return {task: make_plain_model(root / task, task) for task in PLAIN_TASKS}


@pytest.fixture(scope="module")
def servers(
    plain: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    """One server per plain folder; the NER one finds its folder through HF_MODEL_ID (a local path)
    with the model folder empty, as a deploy without ModelDataUrl has it."""
    logs = tmp_path_factory.mktemp("drop-in-logs")
    empty = tmp_path_factory.mktemp("empty-model-dir")
    started = {}
    for task, folder in plain.items():
        if task == "ner":
            env = {"HFSM_MODEL_DIR": str(empty), "HF_MODEL_ID": str(folder)}
            started[task] = LiveServer.start(empty, logs, env, name=task)
        else:
            started[task] = LiveServer.start(folder, logs, name=task)
    try:
        wait_all_ready(started.values())
        yield started
    finally:
        stop_all(started.values())


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_a_plain_folder_serves_the_pipelines_answers(
    servers: dict[str, LiveServer], plain: dict[str, Path], task: str
) -> None:
    server = servers[task]
    assert "no hfsm.json: config.json architectures" in server.logs()
    name = "token-classification" if task.startswith("ner") else "text-classification"
    pipe = pipeline(name, model=str(plain[task]), device="cpu")
    for inputs in (TEXTS[0], TEXTS):
        for parameters in ({}, PARAMETERS[task]):
            body = {"inputs": inputs, "parameters": parameters}
            answer = ok_json(server.post(json.dumps(body)))
            assert_same(as_json(pipe(inputs, **parameters)), answer)
    bad = error_of(server.post(json.dumps({"inputs": "x", "parameters": {"max_new_tokens": 5}})), 400)
    assert "'max_new_tokens' not supported" in bad
    if task == "ner-layoutlm":  # our own form, with word boxes
        own = {"text": "a b", "bbox": [[0, 0, 5, 5], [6, 0, 9, 5]]}
    else:
        own = {"text": TEXTS[0]}
    (prediction,) = ok_json(server.post(json.dumps(own)))["predictions"]
    assert "pred" in prediction


def test_hf_model_id_as_a_local_path_is_logged(servers: dict[str, LiveServer]) -> None:
    assert "(a local folder)" in servers["ner"].logs()


def test_a_hub_model_id_offline_fails_at_start_and_never_logs_the_token(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    env = {"HF_MODEL_ID": "dslim/bert-base-NER", "HF_TOKEN": "hf_SECRETtoken123", "HF_MODEL_REVISION": "main"}
    server = LiveServer.start(tmp_path / "model", tmp_path / "logs", env)
    assert server.process.wait(120) == 1
    logs = server.logs()
    assert "HF_MODEL_ID='dslim/bert-base-NER' cannot be fetched from the Hugging Face Hub" in logs
    assert "no network access" in logs
    assert "hf_SECRETtoken123" not in logs


def test_hf_task_that_contradicts_the_folder_fails_at_start(plain: dict[str, Path], tmp_path: Path) -> None:
    server = LiveServer.start(plain["classif"], tmp_path, {"HF_TASK": "token-classification"})
    assert server.process.wait(60) == 1
    assert "HF_TASK='token-classification', but" in server.logs()


# --- custom inference code -----------------------------------------------------------------------

HOOKS_SCRIPT = """
    import json

    from hfsm.errors import RequestError
    import shout  # from code/requirements.txt


    def input_fn(body, content_type):
        if content_type.startswith("text/csv"):
            return {"inputs": body.decode().splitlines(), "parameters": {"top_k": 2}}
        return json.loads(body)


    def predict_fn(data, model):
        if data["inputs"] == "boom":
            raise ValueError("the script fails")
        if data["inputs"] == "refuse":
            raise RequestError("the script refuses this", 422)
        return {"answer": model(data["inputs"], **data.get("parameters", {}))}


    def output_fn(prediction, accept, context):
        prediction["model_dir"] = context.system_properties["model_dir"]
        prediction["shouted"] = shout.shout("ok")
        return json.dumps(prediction), "application/json"
"""

TRANSFORM_SCRIPT = """
    def model_fn(model_dir, context):
        return {"prefix": "seen: ", "model_dir": model_dir}


    def transform_fn(model, body, content_type, accept):
        return model["prefix"] + body.decode(), "text/plain"
"""


PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]


def write_wheel(folder: Path) -> Path:
    """A one-module wheel (``shout``) built offline: a requirement the image does not have."""
    source = folder / "shout-src"
    (source / "shout").mkdir(parents=True)
    (source / "shout" / "__init__.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "hfsm-test-shout"\nversion = "1.0"\n'
    )
    wheels = folder / "wheels"
    subprocess.run(
        [*PIP_WHEEL, "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    return wheels


@pytest.fixture(scope="module")
def custom(plain: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("custom")
    wheels = write_wheel(root)
    hooks = shutil.copytree(plain["classif"], root / "hooks")
    (hooks / "code").mkdir()
    (hooks / "code" / "inference.py").write_text(textwrap.dedent(HOOKS_SCRIPT))
    (hooks / "code" / "requirements.txt").write_text("hfsm-test-shout\n")
    transform = root / "transform"
    (transform / "code").mkdir(parents=True)
    (transform / "code" / "entry.py").write_text(textwrap.dedent(TRANSFORM_SCRIPT))
    offline_pip = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    started = {
        "hooks": LiveServer.start(hooks, root / "logs", offline_pip, name="hooks"),
        # a folder with no model at all: the script's model_fn is the model; SAGEMAKER_PROGRAM names it
        "transform": LiveServer.start(
            transform, root / "logs", {"SAGEMAKER_PROGRAM": "entry.py"}, name="transform"
        ),
    }
    try:
        wait_all_ready(started.values())
        yield {"servers": started, "hooks": hooks, "pipe": pipeline("text-classification", model=str(hooks))}
    finally:
        stop_all(started.values())
        uninstall = [sys.executable, "-m", "pip", "uninstall", "-y", "hfsm-test-shout"]
        subprocess.run(uninstall, capture_output=True)


def test_each_hook_of_custom_code_runs(custom: dict[str, Any]) -> None:
    server = custom["servers"]["hooks"]
    answer = ok_json(server.post("good service\nbad food\n", content_type="text/csv"))
    expected = as_json(custom["pipe"](["good service", "bad food"], top_k=2))
    assert_same(expected, answer["answer"])
    assert answer["model_dir"] == str(custom["hooks"]) and answer["shouted"] == "OK!"
    plain_json = ok_json(server.post(json.dumps({"inputs": TEXTS[1]})))
    assert_same(as_json(custom["pipe"](TEXTS[1])), plain_json["answer"])
    assert "installing" in server.logs() and "requirements.txt" in server.logs()


def test_an_exception_in_custom_code_is_a_500_and_the_server_stays_up(custom: dict[str, Any]) -> None:
    server = custom["servers"]["hooks"]
    assert "internal server error (ValueError)" in error_of(server.post(json.dumps({"inputs": "boom"})), 500)
    assert "ValueError: the script fails" in server.logs()
    assert error_of(server.post(json.dumps({"inputs": "refuse"})), 422) == "the script refuses this"
    assert server.get("/ping").status_code == 200
    assert "answer" in ok_json(server.post(json.dumps({"inputs": TEXTS[0]})))


def test_model_fn_and_transform_fn_with_context(custom: dict[str, Any]) -> None:
    server = custom["servers"]["transform"]
    response = server.post(b"hello", content_type="text/plain")
    assert response.status_code == 200 and response.text == "seen: hello"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "model_fn, transform_fn" in server.logs()


def test_a_requirement_that_cannot_be_installed_fails_at_start(
    plain: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(plain["classif"], tmp_path / "model")
    (folder / "code").mkdir()
    (folder / "code" / "inference.py").write_text("")
    (folder / "code" / "requirements.txt").write_text("no-such-package-anywhere==9.9\n")
    server = LiveServer.start(folder, tmp_path / "logs", {"PIP_NO_INDEX": "1"})
    assert server.process.wait(120) == 1
    assert f"{folder}/code/requirements.txt could not be installed" in server.logs()


def test_transform_fn_with_the_other_hooks_is_a_clear_error(plain: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(plain["classif"], tmp_path / "model")
    (folder / "code").mkdir()
    (folder / "code" / "inference.py").write_text(
        "def transform_fn(m, b, c, a):\n    return b\n\ndef input_fn(b, c):\n    return b\n"
    )
    server = LiveServer.start(folder, tmp_path / "logs")
    try:
        deadline = time.monotonic() + 120
        while ping(server.url) in (None, 503) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ping(server.url) == 500
        assert "transform_fn cannot be combined with input_fn" in server.get("/ping").json()["error"]
    finally:
        server.stop()
