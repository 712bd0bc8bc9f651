"""The real server (``python -m hfsm serve``: gunicorn, Flask, the predictor) over real HTTP.

Servers for every task start together once per module (they load concurrently) and are shared by
the tests; test_serving_app.py covers what needs a loader under the test's control.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from hfsm.data.records import word_spans
from live_server import LiveServer, error_of, ok_json, stop_all, wait_all_ready
from sagemaker_tree import TrainResult
from serving_models import always_tagging
from test_predictor import long_text

JSONL = "application/jsonlines"
NER_LIMITS = {
    "HFSM_MAX_RECORDS": "50",
    "HFSM_MAX_WORDS": "5000",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1",
    "HFSM_BATCH_SIZE": "8",
}


@pytest.fixture(scope="module")
def servers(
    trained: dict[str, TrainResult], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    """One server per task; "ner" tags every word B-location (offsets are checkable) and has small limits."""
    root = tmp_path_factory.mktemp("serving")
    tagging = always_tagging(trained["ner"].model_dir, root / "ner-tagging", "B-location")
    plan: dict[str, tuple[Path, dict[str, str]]] = {
        "ner": (tagging, NER_LIMITS),
        "classif": (trained["classif"].model_dir, {"HFSM_LOG_LEVEL": "debug"}),
        "multilabel": (trained["multilabel"].model_dir, {}),
        "regression": (trained["regression"].model_dir, {}),
        "ner_bbox": (trained["ner_bbox"].model_dir, {}),
        "lifecycle": (
            trained["regression"].model_dir,
            {"HFSM_GRACEFUL_TIMEOUT": "30", "HFSM_BATCH_SIZE": "1"},
        ),
    }
    started = {name: LiveServer.start(model, root / "logs", env, name) for name, (model, env) in plan.items()}
    try:
        wait_all_ready(started.values())
        yield started
    finally:
        stop_all(started.values())


def jsonl(*records: Any) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


# --- readiness and the SageMaker contract ---------------------------------------------------------


def test_ping_says_503_while_loading_then_200(servers: dict[str, LiveServer]) -> None:
    for name, server in servers.items():
        statuses = [s for s in server.statuses if s is not None]
        assert statuses[-1] == 200, name
        assert 503 in statuses[:-1], f"{name}: no 503 observed while loading: {server.statuses}"
        assert server.get("/ping").json() == {"status": "ready"}


def test_execution_parameters_follow_the_environment(servers: dict[str, LiveServer]) -> None:
    assert ok_json(servers["ner"].get("/execution-parameters")) == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 1,
    }
    assert ok_json(servers["classif"].get("/execution-parameters"))["MaxPayloadInMB"] == 6


def test_unknown_routes_and_methods_answer_json(servers: dict[str, LiveServer]) -> None:
    server = servers["classif"]
    assert "not found" in error_of(server.get("/nope"), 404).lower()
    response = requests.get(f"{server.url}/invocations", timeout=10)
    assert error_of(response, 405)
    assert "POST" in response.headers["Allow"]


# --- every task -------------------------------------------------------------------------------------


def test_classification_tasks_in_every_json_form(servers: dict[str, LiveServer]) -> None:
    texts = ["How do I top up my card?", "I love it", ""]
    for name in ("classif", "multilabel"):
        server = servers[name]
        predictions = ok_json(server.post(json.dumps({"data": [{"text": t} for t in texts]})))["predictions"]
        assert len(predictions) == 3
        for prediction in predictions:
            assert set(prediction) == {"pred", "proba", "scores"}
        if name == "classif":
            assert all(p["pred"] in p["scores"] for p in predictions)
        else:
            assert all(
                set(p["pred"]) <= set(p["scores"]) and len(p["pred"]) == len(p["proba"]) for p in predictions
            )
        single = ok_json(server.post(json.dumps({"text": texts[0]})))["predictions"]
        assert single == predictions[:1]
        # the toolkit form: the text-classification pipeline's answers, the same probabilities
        (top,) = ok_json(server.post(json.dumps({"inputs": texts[0]})))
        assert set(top) == {"label", "score"}
        assert abs(top["score"] - max(predictions[0]["scores"].values())) < 1e-5
        every = ok_json(server.post(json.dumps({"inputs": texts, "parameters": {"top_k": None}})))
        for labels, prediction in zip(every, predictions, strict=True):
            toolkit_scores = {d["label"]: d["score"] for d in labels}
            assert set(toolkit_scores) == set(prediction["scores"])
            # our schema rounds probabilities to 6 decimals
            assert all(abs(toolkit_scores[k] - v) < 1e-5 for k, v in prediction["scores"].items())


def test_regression_answers_numbers(servers: dict[str, LiveServer]) -> None:
    predictions = ok_json(servers["regression"].post(json.dumps(["It was fine.", "Great!"])))["predictions"]
    assert [type(p["pred"]) for p in predictions] == [float, float]


def test_ner_over_http_tags_every_word_of_a_two_thousand_word_text(servers: dict[str, LiveServer]) -> None:
    text = long_text(2000)
    spans = word_spans(text)
    for body, content_type in (
        (json.dumps({"data": [{"text": text}, {"text": "Paris"}]}), "application/json"),
        (jsonl({"text": text}, {"text": "Paris"}), JSONL),
    ):
        response = servers["ner"].post(body, content_type=content_type, accept="application/json")
        first, second = ok_json(response)["predictions"]
        assert first["pred"] == ["B-location"] * 2000
        assert len(first["entities"]) == 2000
        for (start, end), entity in zip(spans, first["entities"], strict=True):
            assert (entity["start"], entity["end"]) == (start, end)
            assert entity["text"] == text[start:end]
        assert second["entities"] == [
            {
                "type": "location",
                "text": "Paris",
                "start": 0,
                "end": 5,
                "score": second["proba"][0],
                "words": [0, 1],
            }
        ]


def test_ner_with_boxes(servers: dict[str, LiveServer]) -> None:
    server = servers["ner_bbox"]
    boxes = [[10, 10, 50, 20], [60, 10, 90, 20], [100, 10, 130, 20]]
    records = [
        {"text": "Total due 42", "bbox": boxes},
        {"text": "Total due 42", "bbox": "10 10 50 20,60 10 90 20,100 10 130 20"},
    ]
    first, second = ok_json(server.post(json.dumps({"data": records})))["predictions"]
    assert first == second
    assert len(first["pred"]) == 3
    assert all(len(entity["bbox"]) == 4 for entity in first["entities"])
    message = error_of(server.post(json.dumps({"data": [records[0], {"text": "a b", "bbox": boxes}]})), 400)
    assert message == "data[1]: the text has 2 words but 'bbox' has 3 boxes; give one box per word"
    lines = server.post(jsonl(records[0], {"text": "a b"}), content_type=JSONL).text.split("\n")
    assert len(lines) == 2
    assert json.loads(lines[0])["pred"] == first["pred"]
    assert json.loads(lines[1])["error"].startswith("line 2: this model reads word boxes")


# --- formats and content negotiation -------------------------------------------------------------


def test_jsonlines_in_and_out_and_accept(servers: dict[str, LiveServer]) -> None:
    server = servers["classif"]
    body = jsonl({"text": "a"}, {"text": "b"}, '"c"')
    as_lines = server.post(body, content_type="application/jsonlines; charset=utf-8")
    assert as_lines.status_code == 200
    assert as_lines.headers["Content-Type"] == "application/jsonlines"
    assert not as_lines.text.endswith("\n")
    lines = [json.loads(line) for line in as_lines.text.split("\n")]
    assert len(lines) == 3
    as_json = ok_json(server.post(body, content_type=JSONL, accept="application/json"))
    assert as_json["predictions"] == lines
    x_type = server.post(body, content_type="application/x-jsonlines", accept="*/*")
    assert x_type.headers["Content-Type"] == "application/x-jsonlines"
    from_json = server.post(
        json.dumps({"data": ["a", "b", "c"]}),
        content_type="application/json; charset=UTF-8",
        accept="application/jsonlines",
    )
    assert from_json.headers["Content-Type"] == "application/jsonlines"
    assert [json.loads(line) for line in from_json.text.split("\n")] == lines
    weighted = server.post(body, content_type=JSONL, accept="text/html;q=0.9, application/json;q=0.5")
    assert ok_json(weighted)["predictions"] == lines
    no_content_type = server.post(json.dumps({"text": "a"}), content_type=None)
    assert ok_json(no_content_type)["predictions"] == lines[:1]


def test_a_multi_record_batch_of_many_short_lines_is_not_capped_by_default(
    servers: dict[str, LiveServer],
) -> None:
    """Batch Transform fills MULTI_RECORD payloads up to MaxPayloadInMB, whatever the record count."""
    texts = [f"hello number {i}" for i in range(3000)]
    response = servers["classif"].post(jsonl(*[{"text": t} for t in texts]), content_type=JSONL)
    assert response.status_code == 200, response.text
    assert len(response.text.split("\n")) == 3000


def test_jsonlines_answers_every_line_in_order_even_the_bad_ones(servers: dict[str, LiveServer]) -> None:
    body = jsonl(
        {"text": "fine"},
        "{broken",
        "",
        {"txt": "typo"},
        "[1, 2]",
        {"text": "x " * 5001},
        {"text": "fine again"},
    )
    response = servers["ner"].post(body, content_type=JSONL)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.split("\n")]
    assert len(lines) == 7
    assert lines[0]["pred"] == ["B-location"]
    assert lines[1]["error"].startswith("line 2: invalid JSON")
    assert lines[2]["error"].startswith("line 3: the line is empty")
    assert lines[3]["error"] == "line 4: the record has no 'text' field"
    assert lines[4]["error"].startswith("line 5: a record must be a JSON object")
    assert (
        lines[5]["error"].startswith("line 6: the text has 5001 words")
        and "HFSM_MAX_WORDS" in lines[5]["error"]
    )
    assert lines[6]["pred"] == ["B-location", "B-location"]


# --- errors ---------------------------------------------------------------------------------------------


def test_request_errors_have_their_status_and_name_the_record(servers: dict[str, LiveServer]) -> None:
    server = servers["ner"]
    good = json.dumps({"text": "ok"})
    assert "Content-Type" in error_of(server.post(good, content_type="text/csv"), 415)
    assert "Accept" in error_of(server.post(good, accept="text/csv"), 406)
    assert "invalid JSON" in error_of(server.post('{"data": [{"text": "a"}'), 400)
    assert error_of(server.post(json.dumps({"data": [{"text": "a"}, {"text": 3}]})), 400) == (
        "data[1]: 'text' must be a string, got a number"
    )
    assert error_of(server.post(json.dumps({"data": ["a", "b", {"txt": "c"}]})), 400) == (
        "data[2]: the record has no 'text' field"
    )
    assert "empty" in error_of(server.post(b""), 400)
    assert "application/jsonlines" in error_of(server.post(jsonl({"text": "a"}, {"text": "b"})), 400)
    too_many_words = error_of(server.post(json.dumps({"data": ["a", "x " * 5001]})), 413)
    assert too_many_words.startswith("data[1]: the text has 5001 words")
    too_many_records = error_of(server.post(jsonl(*[{"text": "a"}] * 51), content_type=JSONL), 413)
    assert "51 records" in too_many_records and "HFSM_MAX_RECORDS" in too_many_records
    too_large = error_of(server.post(json.dumps({"text": "word " * 250_000})), 413)
    assert "1 MB" in too_large and "SAGEMAKER_MAX_PAYLOAD_IN_MB" in too_large


def test_server_keeps_serving_after_bad_requests(servers: dict[str, LiveServer]) -> None:
    server = servers["regression"]
    assert "not valid utf-8" in error_of(server.post(b"\xff\xfe"), 400)
    assert "invalid JSON" in error_of(server.post(b"{"), 400)
    assert error_of(server.post(json.dumps({"data": [None]})), 400).startswith("data[0]: a record must be")
    assert ok_json(server.post(b"[]")) == {"predictions": []}
    assert ok_json(server.post(json.dumps({"text": "still here"})))["predictions"][0]["pred"] is not None
    assert server.alive()


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(
    servers: dict[str, LiveServer],
) -> None:
    server = servers["classif"]
    texts = [f"card number {n} arrived " * (1 + n % 7) for n in range(96)]
    alone = [ok_json(server.post(json.dumps({"text": text})))["predictions"][0] for text in texts]
    with ThreadPoolExecutor(max_workers=12) as pool:
        together = list(
            pool.map(lambda t: ok_json(server.post(json.dumps({"text": t})))["predictions"][0], texts)
        )
    for one, shared in zip(alone, together, strict=True):
        assert shared["pred"] == one["pred"]
        assert shared["scores"] == pytest.approx(one["scores"], abs=1e-4)  # padding only
    assert "requests share one forward pass" in server.logs()


def test_ping_answers_while_a_prediction_runs(servers: dict[str, LiveServer]) -> None:
    server = servers["ner"]
    body = json.dumps({"data": [{"text": long_text(2000)}] * 20})
    result: dict[str, requests.Response] = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", server.post(body, timeout=300)))
    worker.start()
    time.sleep(0.3)
    during: list[tuple[int, float]] = []
    while worker.is_alive():
        started = time.monotonic()
        status = server.get("/ping").status_code
        if worker.is_alive():
            during.append((status, time.monotonic() - started))
        time.sleep(0.1)
    worker.join()
    assert result["r"].status_code == 200
    assert during, "the prediction finished before /ping could be observed; make it longer"
    assert all(status == 200 for status, _ in during)
    assert max(seconds for _, seconds in during) < 3.0


def test_sigterm_lets_the_request_in_flight_finish_and_exits_zero(servers: dict[str, LiveServer]) -> None:
    server = servers["lifecycle"]  # batch size 1: a request of many records takes a few seconds
    # about 3 s of predictions on an idle 2-core machine (600 records once took 0.45 s: too short)
    body = json.dumps({"data": ["a fairly long sentence to regress " * 20] * 4000})
    result: dict[str, Any] = {}

    def post() -> None:
        result["response"] = server.post(body, timeout=120)
        result["finished"] = time.monotonic()

    worker = threading.Thread(target=post)
    worker.start()
    time.sleep(0.5)
    signalled = time.monotonic()
    code = server.stop()
    worker.join(60)
    assert code == 0, server.logs()[-3000:]
    assert result["response"].status_code == 200
    assert len(result["response"].json()["predictions"]) == 4000
    assert result["finished"] > signalled, "the request was not in flight when SIGTERM came; make it longer"
    assert "Shutting down" in server.logs()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/ping", timeout=2)


def test_serve_fails_fast_without_a_model(tmp_path: Path) -> None:
    server = LiveServer.start(tmp_path / "missing", tmp_path / "logs")
    assert server.process.wait(60) == 1
    assert "missing is not a folder" in server.logs()


def test_bf16_autocast_serves_over_http_and_fp16_on_a_cpu_fails_the_health_check(
    trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    model = trained["ner"].model_dir
    servers = {
        name: LiveServer.start(model, tmp_path / "logs", {"HFSM_AUTOCAST": name, "HFSM_DEVICE": "cpu"}, name)
        for name in ("bf16", "fp16")
    }
    try:
        fast = servers["bf16"].wait_ready()
        deadline = time.monotonic() + 60
        while (health := servers["fp16"].get("/ping")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)  # still loading
        assert health.status_code == 500, health.text
        assert health.json() == {
            "status": "failed",
            "error": "UserError: HFSM_AUTOCAST=fp16 runs on GPUs only; use bf16 on a CPU",
        }
        text = "Peter Blackburn flew from Brussels to New York"
        predictions = ok_json(fast.post(json.dumps({"data": [{"text": text}, {"text": "Germany"}]})))
        first, second = predictions["predictions"]
        assert len(first["pred"]) == len(first["proba"]) == len(text.split())
        assert len(second["pred"]) == 1
        assert "bf16 autocast" in fast.logs()
    finally:
        stop_all(servers.values())
