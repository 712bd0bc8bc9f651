"""Multi-model endpoints: SageMaker's contract (load, list, get, unload, invoke by name) over real HTTP.

A server with SAGEMAKER_MULTI_MODEL=true starts without a model; the tests load the trained models
under names as the platform does, compare each model's answers with a single-model server's for the
same bytes, and walk the statuses SageMaker acts on: 409 (already loaded), 404 (not loaded) and 507
(does not fit: SageMaker then unloads other models and retries).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from hfsm.errors import RequestError, UserError
from hfsm.inference.batching import BatcherClosed, MicroBatcher
from hfsm.inference.predictor import PredictOptions, Predictor
from hfsm.serving.registry import LOAD_PEAK_FACTOR, ModelRegistry, weights_bytes
from hfsm.serving.settings import ServingSettings
from live_server import LiveServer, error_of, ok_json, stop_all, wait_all_ready
from sagemaker_tree import TrainResult
from serving_models import diverged

JSONL = "application/jsonlines"
NER_LINES = [
    {"text": "Empire State Building is in New York"},
    {"text": "   "},
    {"text": "hello   world\tagain"},
    {"text": " ".join(["word"] * 300)},
]


@pytest.fixture(scope="module")
def servers(
    trained: dict[str, TrainResult], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    root = tmp_path_factory.mktemp("multi-model")
    no_model = root / "no-model"  # HFSM_MODEL_DIR is ignored by a multi-model server
    plan = {
        "multi": (no_model, {"SAGEMAKER_MULTI_MODEL": "true"}),
        # room for the weights of a few tiny models (see test_a_model_that_does_not_fit...)
        "capped": (
            no_model,
            {"SAGEMAKER_MULTI_MODEL": "True", "HFSM_MODELS_MEMORY_MB": "1"},
        ),
        "single_ner": (trained["ner"].model_dir, {}),
    }
    started = {name: LiveServer.start(model, root / "logs", env, name) for name, (model, env) in plan.items()}
    try:
        wait_all_ready(started.values())
        yield started
    finally:
        stop_all(started.values())


def load(server: LiveServer, name: str, url: Path | str) -> requests.Response:
    return server.post(json.dumps({"model_name": name, "url": str(url)}), path="/models")


def invoke(
    server: LiveServer, name: str, body: str, content_type: str = "application/json"
) -> requests.Response:
    return server.post(body, content_type, path=f"/models/{name}/invoke")


def delete(server: LiveServer, name: str) -> requests.Response:
    return requests.delete(f"{server.url}/models/{name}", timeout=30)


def test_a_multi_model_server_is_healthy_without_models(servers: dict[str, LiveServer]) -> None:
    multi = servers["multi"]
    assert multi.statuses[-1] == 200
    assert ok_json(multi.get("/ping"))["status"] == "ready"
    assert "serving a multi-model endpoint" in multi.logs()
    message = error_of(multi.post(json.dumps({"text": "hello"})), 404)
    assert "/models/<name>/invoke" in message


def test_models_load_answer_and_unload_by_name(
    servers: dict[str, LiveServer], trained: dict[str, TrainResult]
) -> None:
    multi = servers["multi"]
    tasks = {"ner": "ner", "classif": "classif", "regression": "regression", "ner_bbox": "ner"}
    for name, task in tasks.items():
        described = ok_json(load(multi, f"m-{name}", trained[name].model_dir))
        assert described["modelName"] == f"m-{name}" and described["modelUrl"] == str(trained[name].model_dir)
        assert described["task"] == task and described["runtime"] == "torch"
        assert described["weightsBytes"] > 0
    try:
        assert ok_json(multi.get("/ping"))["models"] == len(tasks)
        listed = ok_json(multi.get("/models"))
        assert [m["modelName"] for m in listed["models"]] == sorted(f"m-{name}" for name in tasks)
        assert "nextPageToken" not in listed

        # each model answers for its own task
        ner = ok_json(invoke(multi, "m-ner", json.dumps({"text": "Obama met Merkel in Berlin"})))
        assert len(ner["predictions"][0]["pred"]) == 5
        classif = ok_json(invoke(multi, "m-classif", json.dumps({"data": ["good", "bad"]})))
        assert [set(p) for p in classif["predictions"]] == [{"pred", "proba", "scores"}] * 2
        regression = ok_json(invoke(multi, "m-regression", json.dumps({"text": "fine"})))
        assert isinstance(regression["predictions"][0]["pred"], float)
        boxes = {"text": "Invoice total", "bbox": [[0, 0, 10, 10], [20, 0, 40, 10]]}
        assert len(ok_json(invoke(multi, "m-ner_bbox", json.dumps(boxes)))["predictions"][0]["pred"]) == 2

        ok_json(delete(multi, "m-classif"))
        assert "not loaded" in error_of(invoke(multi, "m-classif", json.dumps({"text": "x"})), 404)
        assert "not loaded" in error_of(multi.get("/models/m-classif"), 404)
        assert "not loaded" in error_of(delete(multi, "m-classif"), 404)
        assert ok_json(multi.get("/ping"))["models"] == len(tasks) - 1
        # loaded again under the same name after its unload
        ok_json(load(multi, "m-classif", trained["classif"].model_dir))
        assert len(ok_json(invoke(multi, "m-classif", json.dumps({"text": "x"})))["predictions"]) == 1
    finally:
        for name in tasks:
            delete(multi, f"m-{name}")
    assert ok_json(multi.get("/models")) == {"models": []}


def test_invoke_answers_exactly_what_a_single_model_endpoint_answers(
    servers: dict[str, LiveServer], trained: dict[str, TrainResult]
) -> None:
    """Same bytes in, same bytes out: decoding, long texts, per-line errors and encoding are shared."""
    multi, single = servers["multi"], servers["single_ner"]
    ok_json(load(multi, "same", trained["ner"].model_dir))
    try:
        lines = "\n".join(json.dumps(line) for line in NER_LINES) + "\n{broken\n"
        texts = [line["text"] for line in NER_LINES if line["text"].strip()]
        bodies = [
            (json.dumps({"data": texts}), "application/json"),
            (lines, JSONL),
            ("{broken", "application/json"),
            ("hello", "text/csv"),
        ]
        for body, content_type in bodies:
            ours = invoke(multi, "same", body, content_type)
            reference = single.post(body, content_type)
            assert (ours.status_code, ours.headers["Content-Type"]) == (
                reference.status_code,
                reference.headers["Content-Type"],
            ), body[:80]
            assert ours.content == reference.content, body[:80]
        answered = invoke(multi, "same", lines, JSONL).text.splitlines()
        assert len(answered) == len(NER_LINES) + 1 and "error" in json.loads(answered[-1])
    finally:
        delete(multi, "same")


def test_loading_a_name_twice_is_409_and_bad_loads_say_why(
    servers: dict[str, LiveServer], trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    multi = servers["multi"]
    ok_json(load(multi, "twice", trained["regression"].model_dir))
    try:
        assert "already loaded" in error_of(load(multi, "twice", trained["classif"].model_dir), 409)
        # the first model still answers
        assert "pred" in ok_json(invoke(multi, "twice", json.dumps({"text": "x"})))["predictions"][0]
    finally:
        ok_json(delete(multi, "twice"))
    bad = {
        "{not json": "JSON object",
        "[1, 2]": "JSON object",
        json.dumps({"url": str(trained["ner"].model_dir)}): "'model_name'",
        json.dumps({"model_name": "x"}): "'url'",
        json.dumps({"model_name": "", "url": "/x"}): "'model_name'",
        json.dumps({"model_name": "a/b", "url": "/x"}): "'/'",
        json.dumps({"model_name": "x", "url": str(tmp_path / "missing")}): "is not a folder",
        json.dumps(
            {"model_name": "x", "url": str(tmp_path)}
        ): "is not a Hugging Face model folder: it has no config.json",
        "[" * 100_000 + "]" * 100_000: "HFSM_MAX_JSON_DEPTH",
        json.dumps({"model_name": "x", "url": "/x"})[:-1] + ', "n": ' + "9" * 5000 + "}": "digits",
    }
    for body, reason in bad.items():
        assert reason in error_of(multi.post(body, path="/models"), 400), body
    assert ok_json(multi.get("/models")) == {"models": []}


def test_list_pages_with_tokens(servers: dict[str, LiveServer], trained: dict[str, TrainResult]) -> None:
    multi = servers["multi"]
    names = ["p-c", "p-a", "p-b"]
    for name in names:
        ok_json(load(multi, name, trained["classif"].model_dir))
    try:
        seen, token, pages = [], None, 0
        while True:
            query = "/models?limit=2" + (f"&next_page_token={token}" if token else "")
            page = ok_json(multi.get(query))
            seen += [m["modelName"] for m in page["models"]]
            pages += 1
            token = page.get("nextPageToken")
            if token is None:
                break
        assert (seen, pages) == (sorted(names), 2)
        assert "limit" in error_of(multi.get("/models?limit=0"), 400)
    finally:
        for name in names:
            delete(multi, name)


def test_a_model_that_does_not_fit_is_507_until_another_is_unloaded(
    servers: dict[str, LiveServer], trained: dict[str, TrainResult]
) -> None:
    """HFSM_MODELS_MEMORY_MB=1 holds a few of these models; the next load is 507, the answer on which
    SageMaker unloads the least recently used model and loads again."""
    capped, model = servers["capped"], trained["classif"].model_dir
    fitting = 2**20 // weights_bytes(model, "torch", PredictOptions())
    assert 1 <= fitting <= 8, "tiny models: a few fit in 1 MB"
    names = [f"fits-{index}" for index in range(fitting)]
    try:
        for name in names:
            ok_json(load(capped, name, model))
        message = error_of(load(capped, "one-more", model), 507)
        assert "HFSM_MODELS_MEMORY_MB" in message and "unload other models" in message
        assert [m["modelName"] for m in ok_json(capped.get("/models"))["models"]] == names
        ok_json(delete(capped, names[0]))
        ok_json(load(capped, "one-more", model))
        assert len(ok_json(invoke(capped, "one-more", json.dumps({"text": "x"})))["predictions"]) == 1
    finally:
        for name in [*names, "one-more"]:
            delete(capped, name)


def test_concurrent_requests_to_several_models_get_their_own_answers(
    servers: dict[str, LiveServer], trained: dict[str, TrainResult]
) -> None:
    multi = servers["multi"]
    ok_json(load(multi, "c-ner", trained["ner"].model_dir))
    ok_json(load(multi, "c-regression", trained["regression"].model_dir))
    failures: list[str] = []

    def client(name: str, key: str) -> None:
        for index in range(10):
            answer = invoke(multi, name, json.dumps({"text": f"text number {index}"}))
            if answer.status_code != 200 or key not in answer.json()["predictions"][0]:
                failures.append(f"{name}: {answer.status_code} {answer.text[:200]}")

    threads = [
        threading.Thread(target=client, args=args)
        for args in [("c-ner", "entities"), ("c-regression", "pred")] * 3
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures[:3]
    finally:
        delete(multi, "c-ner")
        delete(multi, "c-regression")


def test_a_replacement_worker_loads_again_what_the_dead_one_had(
    servers: dict[str, LiveServer], trained: dict[str, TrainResult]
) -> None:
    """A worker killed (out of memory, a crash) is replaced by gunicorn; SageMaker still routes to the
    models it had loaded, so the replacement loads them again, /ping saying 503 meanwhile, not 200."""
    multi = servers["multi"]
    ok_json(load(multi, "survivor", trained["regression"].model_dir))
    try:
        (worker,) = multi.worker_pids()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pids = multi.worker_pids()
            if pids and pids != [worker] and multi.get("/ping").status_code == 200:
                break
            time.sleep(0.2)
        assert ok_json(multi.get("/ping")) == {"status": "ready", "models": 1}
        assert [m["modelName"] for m in ok_json(multi.get("/models"))["models"]] == ["survivor"]
        assert "pred" in ok_json(invoke(multi, "survivor", json.dumps({"text": "x"})))["predictions"][0]
        assert "loading them again" in multi.logs()
    finally:
        delete(multi, "survivor")


# --- in-process: what the registry does with the memory -------------------------------------------


def registry(available: int | None, limit: int | None = None, refs: list[Any] | None = None) -> ModelRegistry:
    options = PredictOptions(torch_threads=1)

    def loader(model_dir: Path) -> Predictor:
        predictor = Predictor.load(model_dir, options)
        if refs is not None:
            refs.append(weakref.ref(predictor))
        return predictor

    return ModelRegistry(
        loader,
        options,
        batch_records=8,
        batch_wait_s=0.0,
        memory_limit_bytes=limit,
        available_memory=lambda: available,
    )


def test_an_unloaded_model_is_freed(trained: dict[str, TrainResult]) -> None:
    """Nothing keeps the model once unloaded: its batching thread has ended and dropped it."""
    refs: list[Any] = []
    models = registry(None, refs=refs)
    loaded = models.load("one", str(trained["regression"].model_dir))
    batcher = loaded.predictor
    assert "pred" in batcher.predict([{"text": "hello"}])[0]
    del loaded
    models.unload("one")
    assert refs[0]() is None, "the unloaded Predictor is still referenced"
    with pytest.raises(BatcherClosed):
        batcher.predict([{"text": "hello"}])
    with pytest.raises(RequestError) as missing:
        models.get("one")
    assert missing.value.status == 404


def test_a_load_needs_twice_its_weights_in_available_memory(trained: dict[str, TrainResult]) -> None:
    model = trained["classif"].model_dir
    size = weights_bytes(model, "torch", PredictOptions())
    with pytest.raises(RequestError) as refused:
        registry(available=int(size * LOAD_PEAK_FACTOR) - 1).load("big", str(model))
    assert refused.value.status == 507 and "are available" in str(refused.value)
    fits = registry(available=int(size * LOAD_PEAK_FACTOR))
    assert fits.load("big", str(model)).weights_bytes == size
    fits.unload("big")


def test_a_model_that_answers_nan_is_refused_with_the_reason(
    trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    folder = diverged(trained["regression"].model_dir, tmp_path / "nan")
    models = registry(None)
    with pytest.raises(RequestError) as refused:
        models.load("nan", str(folder))
    assert refused.value.status == 400 and "NaN or infinite" in str(refused.value)
    assert len(models) == 0


def test_damaged_folders_long_names_and_out_of_memory_get_their_statuses(
    trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    from hfsm.serving.multi_model import load_request
    from hfsm.serving.registry import out_of_memory

    broken = tmp_path / "broken"
    shutil.copytree(trained["regression"].model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RequestError, match="truncated") as truncated:
        registry(None).load("broken", str(broken))
    assert truncated.value.status == 400
    (broken / "hfsm.json").write_text("{")
    with pytest.raises(UserError, match="the model folder is damaged"):
        registry(None).load("broken", str(broken))
    with pytest.raises(RequestError, match="could not be addressed"):
        load_request(json.dumps({"model_name": "n" * 2000, "url": "/x"}).encode(), 64)
    assert load_request(json.dumps({"model_name": "v1.2 ü", "url": "/x"}).encode(), 64) == ("v1.2 ü", "/x")
    assert out_of_memory(MemoryError()) and out_of_memory(UserError("... std::bad_alloc"))
    assert not out_of_memory(ValueError("bad"))


def test_available_memory_reads_cgroup_v1_and_v2(tmp_path: Path) -> None:
    from hfsm.devices import available_memory_bytes

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 99 kB\nMemAvailable: 4000000 kB\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("1000000000\n")
    (v2 / "memory.current").write_text("900000000\n")
    (v2 / "memory.stat").write_text("anon 5\ninactive_file 50000000\n")
    assert available_memory_bytes(meminfo, v2) == 150_000_000
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("1000000000\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("990000000\n")
    (v1 / "memory" / "memory.stat").write_text("total_inactive_file 0\n")
    assert available_memory_bytes(meminfo, v1) == 10_000_000
    (v2 / "memory.max").write_text("max\n")
    assert available_memory_bytes(meminfo, v2) == 4_000_000 * 1024


def test_weights_bytes_counts_what_the_runtime_reads(trained: dict[str, TrainResult]) -> None:
    model = trained["ner"].model_dir
    assert weights_bytes(model, "torch", PredictOptions()) == (model / "model.safetensors").stat().st_size


def test_close_answers_queued_requests_then_refuses() -> None:
    release = threading.Event()

    def slow(records: list[Any]) -> list[Any]:
        release.wait(10)
        return list(records)

    batcher: MicroBatcher[Any] = MicroBatcher(slow, max_records=1, max_wait_s=0.0)
    answers: list[Any] = []
    callers = [threading.Thread(target=lambda i=i: answers.append(batcher.predict([i]))) for i in range(3)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 10
    while len(batcher._queue) < 2 and time.monotonic() < deadline:  # one running, two queued
        time.sleep(0.01)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    release.set()
    for thread in [*callers, closer]:
        thread.join(10)
    assert sorted(answers) == [[0], [1], [2]]
    assert batcher.close(timeout=1)
    with pytest.raises(BatcherClosed):
        batcher.predict([3])


def test_multi_model_settings() -> None:
    settings = ServingSettings.from_environ({"SAGEMAKER_MULTI_MODEL": "TRUE", "HFSM_MODELS_MEMORY_MB": "512"})
    assert settings.multi_model and settings.workers == 1 and settings.models_memory_mb == 512
    assert not ServingSettings.from_environ({}).multi_model
    with pytest.raises(UserError, match="runs one worker"):
        ServingSettings.from_environ({"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    with pytest.raises(UserError, match="SAGEMAKER_MULTI_MODEL"):
        ServingSettings.from_environ({"SAGEMAKER_MULTI_MODEL": "maybe"})
