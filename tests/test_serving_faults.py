"""Process faults of the real server (``python -m hfsm serve``): a worker killed with SIGKILL, SIGTERM
with requests in flight, and refused requests on kept-alive connections.

SageMaker stops a container with SIGTERM and sends SIGKILL 30 s later; a worker can also die on its
own (out of memory). The endpoint must answer again within seconds in the first case and finish
what it accepted, then exit 0 in time, in the second.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from hfsm.serving.settings import ServingSettings
from live_server import LiveServer, ok_json
from sagemaker_tree import TrainResult

SAGEMAKER_STOP_SECONDS = 30.0
"""SageMaker sends SIGKILL this long after SIGTERM."""
RECOVERY_SECONDS = 30.0
"""Generous bound for a replacement worker to load and answer on a busy 2-core test machine (~3 s idle)."""
ENV = {"HFSM_BATCH_SIZE": "1", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"}
"""One text per forward pass: requests of many records take seconds (so they are surely in flight
when the signal comes) and every answer is computed alone, hence exactly reproducible."""
REFERENCE = json.dumps({"text": "How do I top up my card?"})


def many_records(text: str, n: int) -> str:
    return json.dumps({"data": [text] * n})


@pytest.fixture(scope="module")
def model(trained: dict[str, TrainResult]) -> Path:
    return trained["classif"].model_dir


@pytest.fixture(scope="module")
def server(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer.start(model, tmp_path_factory.mktemp("faults") / "logs", ENV, "faults")
    try:
        yield live.wait_ready()
    finally:
        live.stop()


def post_in_thread(server: LiveServer, body: str) -> tuple[threading.Thread, dict[str, Any]]:
    """POST in a thread; the result holds the response or the exception, and when it came."""
    result: dict[str, Any] = {}

    def post() -> None:
        try:
            result["response"] = server.post(body, timeout=120)
        except requests.RequestException as exc:
            result["error"] = exc
        result["at"] = time.monotonic()

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, result


def test_refused_requests_with_large_bodies_leave_the_kept_alive_connection_usable(
    server: LiveServer,
) -> None:
    """gunicorn drains 64 KiB of a body the app did not read, then closes a connection it announced
    as kept alive: the next request on it failed (fixed by app.discard_unread_body)."""
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
    url = f"{server.url}/invocations"
    half_mb = json.dumps({"text": "x " * 250_000}).encode()

    def chunks() -> Iterator[bytes]:
        yield from [b" " * 500_000] * 5  # 2.5 MB without a Content-Length
        yield b'{"text": "a"}'

    refusals = [
        (413, {"data": json.dumps({"text": "x" * 2_200_000})}),  # Content-Length above the limit
        (413, {"data": chunks()}),
        (415, {"data": half_mb, "headers": {"Content-Type": "text/csv"}}),
        (406, {"data": half_mb, "headers": {"Accept": "image/png"}}),
        (415, {"data": half_mb, "headers": {"Content-Type": "application/json; charset=base64"}}),
    ]
    expected = ok_json(server.post(REFERENCE))
    for status, request in refusals:
        refused = session.post(url, timeout=60, **request)
        assert refused.status_code == status, refused.text
        assert refused.headers["Connection"] == "keep-alive"
        # the same connection (one in the pool, no retries): it failed with RemoteDisconnected
        assert ok_json(session.post(url, data=REFERENCE, timeout=60)) == expected


def test_a_worker_killed_with_sigkill_is_replaced_and_answers_again_within_seconds(
    server: LiveServer,
) -> None:
    expected = ok_json(server.post(REFERENCE))
    (worker,) = server.worker_pids()
    in_flight, result = post_in_thread(server, many_records("a b " * 40, 8_000))  # seconds of work
    time.sleep(1.0)
    killed = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    statuses: list[int] = []
    while not statuses or statuses[-1] != 200:
        # the master keeps the listening socket: connections wait for the new worker, never refused
        status = requests.get(f"{server.url}/ping", timeout=RECOVERY_SECONDS).status_code
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        assert time.monotonic() - killed < RECOVERY_SECONDS, statuses
        time.sleep(0.05)
    recovered = time.monotonic() - killed
    assert ok_json(server.post(REFERENCE)) == expected
    answered = time.monotonic() - killed
    in_flight.join(30)
    print(
        f"\nworker replaced: /ping {statuses}, 200 after {recovered:.1f}s, predicting after {answered:.1f}s"
    )
    assert set(statuses) <= {503, 200}, statuses
    assert "response" not in result, "the request finished before the kill; make it longer"
    assert isinstance(result["error"], requests.ConnectionError)  # cut, not left hanging
    assert result["at"] - killed < 10
    assert server.alive()
    (replacement,) = server.worker_pids()
    assert replacement != worker
    assert f"Worker (pid:{worker}) was sent SIGKILL" in server.logs()


def test_sigterm_lets_every_request_in_flight_finish_and_serve_exits_zero_within_30_seconds(
    model: Path, tmp_path: Path
) -> None:
    server = LiveServer.start(model, tmp_path / "logs", ENV, "sigterm").wait_ready()
    texts = [f"card number {n} has not arrived yet" for n in range(8)]
    alone = {text: ok_json(server.post(json.dumps({"text": text})))["predictions"][0] for text in texts}
    posts = [post_in_thread(server, many_records(text, 1_000)) for text in texts]  # about 6 s together
    # one forward pass at a time: the requests are answered one after the other, so once the first
    # is, the 7 others are in the worker (read or waiting), whatever the machine's speed
    deadline = time.monotonic() + 60
    while not any("at" in result for _, result in posts) and time.monotonic() < deadline:
        time.sleep(0.01)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(SAGEMAKER_STOP_SECONDS + 10)
    exited = time.monotonic() - signalled
    for thread, _ in posts:
        thread.join(30)
    results = [result for _, result in posts]
    assert code == 0, server.logs()[-3000:]
    assert exited < SAGEMAKER_STOP_SECONDS
    assert [result.get("error") for result in results] == [None] * 8
    for text, result in zip(texts, results, strict=True):
        assert ok_json(result["response"])["predictions"] == [alone[text]] * 1_000
    finished_after = sum(result["at"] > signalled for result in results)
    print(f"\nSIGTERM: {finished_after} of 8 requests finished after it, exit 0 after {exited:.1f}s")
    assert finished_after >= 6, "the requests finished before SIGTERM; make them longer"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/ping", timeout=2)


def test_a_request_that_outlasts_the_grace_period_is_cut_and_serve_still_exits_in_time(
    model: Path, tmp_path: Path
) -> None:
    """What keeps the default HFSM_GRACEFUL_TIMEOUT (25 s) within SageMaker's 30 s."""
    grace = 3
    assert ServingSettings.from_environ({}).graceful_timeout <= SAGEMAKER_STOP_SECONDS - 5
    env = {**ENV, "HFSM_GRACEFUL_TIMEOUT": str(grace), "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"}
    server = LiveServer.start(model, tmp_path / "logs", env, "grace").wait_ready()
    in_flight, result = post_in_thread(server, many_records("a b " * 40, 30_000))  # 5 MB, about 20 s alone
    time.sleep(1.0)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(grace + 20)
    exited = time.monotonic() - signalled
    in_flight.join(30)
    print(f"\nSIGTERM with a request longer than the grace of {grace}s: exit {code} after {exited:.1f}s")
    assert code == 0, server.logs()[-3000:]
    assert exited < grace + 3
    assert isinstance(result.get("error"), requests.ConnectionError), result


def test_sigterm_while_the_model_loads_exits_at_once(model: Path, tmp_path: Path) -> None:
    server = LiveServer.start(model, tmp_path / "logs", ENV, "loading")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{server.url}/ping", timeout=5).status_code == 503:
                break
        except requests.ConnectionError:
            time.sleep(0.05)
    else:
        raise AssertionError(f"no 503 while loading:\n{server.logs()[-3000:]}")
    signalled = time.monotonic()
    code = server.stop()
    assert code == 0, server.logs()[-3000:]
    assert time.monotonic() - signalled < 10  # the loading thread is a daemon: nothing waits for it
    assert "model ready" not in server.logs(), "the model loaded before SIGTERM: nothing was interrupted"
