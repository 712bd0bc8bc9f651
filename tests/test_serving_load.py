"""A bounded load test of the real server (``python -m hfsm serve``): 8 clients for 30 s.

Each client sends a random mix of valid and invalid requests, as fast as it gets answers, over
its own keep-alive connection. Every answer must equal, status and body, the answer to the same
request sent alone before the load (for invalid requests: the same 4xx and message), with no 5xx
and no connection error, the same worker process throughout, and resident memory at the end
within 10% of what it was after a warm-up.

The model is a trained NER model whose head tags every word B-location with fixed logits (see
:func:`serving_models.always_tagging`): the encoder still runs on every text, but the answers do
not depend on which other texts share a forward pass (padding, packing), so they can be compared
exactly; each text's entities (words, offsets) still make its answer its own, so an answer given
to the wrong request would not match.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from hfsm.data.records import word_spans
from live_server import LiveServer
from sagemaker_tree import TrainResult
from serving_models import always_tagging

CLIENTS = 8
SECONDS = 30.0
WARM_UP = 5.0
"""RSS is compared between this many seconds into the load and its end."""
MAX_RSS_GROWTH = 0.10
URL_PATH = "/invocations"
JSON = "application/json"
JSONL = "application/jsonlines"
ENV = {
    "HFSM_MAX_RECORDS": "16",
    "HFSM_MAX_WORDS": "200",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1",
    "HFSM_LOG_LEVEL": "debug",  # logs the batches that concurrent requests share
}
WORDS = ["Paris", "internationalization", "New", "York", "café", "2024", "@user", "😀", "x", "\u200b"]
SEPARATORS = [" ", "  ", "\t", "\n", " \u00a0", "\u3000"]


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str | None = JSON
    accept: str | None = None
    valid: bool = True

    def headers(self) -> dict[str, str | None]:
        return {"Content-Type": self.content_type, "Accept": self.accept}  # None: header not sent


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: Any
    """The parsed JSON, or the list of parsed lines for JSON Lines."""


def answer_of(response: requests.Response) -> Answer:
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith(JSONL):
        body: Any = [json.loads(line) for line in response.text.split("\n")] if response.text else []
    else:
        body = response.json()
    return Answer(response.status_code, content_type, body)


def text_of(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    words = [f"w{seed}"] + [rng.choice(WORDS) for _ in range(n_words - 1)]
    return "".join(word + rng.choice(SEPARATORS) for word in words).rstrip(" ")


def catalogue() -> dict[str, Request]:
    """Named requests, valid ones first; every text is distinct, so every valid answer is too."""
    texts = [text_of(seed, n) for seed, n in enumerate([1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 150, 199] * 2)]
    catalogue: dict[str, Request] = {}
    for index, text in enumerate(texts):
        catalogue[f"single {index}"] = Request(json.dumps({"text": text}).encode())
    for index in range(6):
        chosen = texts[index : index + 2 + index]
        catalogue[f"data {index}"] = Request(json.dumps({"data": [{"text": t} for t in chosen]}).encode())
    catalogue["data as lines"] = Request(json.dumps({"data": texts[3:9]}).encode(), accept=JSONL)
    good_and_bad_lines = [json.dumps({"text": texts[5]}), "{broken", "", json.dumps({"text": 3}), '"plain"']
    catalogue["lines"] = Request("\n".join(good_and_bad_lines).encode() + b"\n", JSONL)
    catalogue["lines as json"] = Request("\n".join(good_and_bad_lines).encode(), JSONL, accept=JSON)
    catalogue["zero-width and empty"] = Request(json.dumps(["\u200b \ufe0f", "", " \t "]).encode())
    invalid = {
        "invalid json": Request(b'{"data": [{"text": "a"}'),
        "invalid utf-8": Request(b'{"text": "caf\xe9"}'),
        "empty": Request(b""),
        "wrong type": Request(b'{"data": [{"text": "a"}, {"text": 7}]}'),
        "too deep": Request(b"[" * 10_000),
        "too many words": Request(json.dumps({"text": "word " * 201}).encode()),
        "too many records": Request(json.dumps(["a"] * 17).encode()),
        "too large": Request(json.dumps({"text": "x" * 1_100_000}).encode()),
        "content-type": Request(b'{"text": "a"}', "text/csv"),
        "charset": Request(b'{"text": "a"}', "application/json; charset=rot13"),
        "accept": Request(b'{"text": "a"}', accept="image/png"),
    }
    catalogue.update(
        {name: Request(r.body, r.content_type, r.accept, valid=False) for name, r in invalid.items()}
    )
    return catalogue


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    valid: int = 0
    mismatches: list[str] = field(default_factory=list)
    connection_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_client(
    server: LiveServer,
    requests_by_name: dict[str, Request],
    expected: dict[str, Answer],
    seed: int,
    deadline: float,
    tally: Tally,
) -> None:
    """Send random requests until the deadline; every answer is compared with the expected one."""
    rng = random.Random(seed)
    names = list(requests_by_name)
    # valid requests three times in four; the 1.1 MB one rarely, so that the model does most of the work
    weights = [
        (0.1 if name == "too large" else 1.0) * (3.0 if request.valid else 1.0)
        for name, request in requests_by_name.items()
    ]
    weights = [w / sum(weights) * len(weights) for w in weights]
    session = requests.Session()
    while time.monotonic() < deadline:
        name = rng.choices(names, weights)[0]
        request = requests_by_name[name]
        try:
            response = session.post(
                server.url + URL_PATH, data=request.body, headers=request.headers(), timeout=60
            )
            answer = answer_of(response)
        except (requests.RequestException, ValueError) as exc:
            with tally.lock:
                tally.connection_errors.append(f"{name}: {exc!r}")
            session = requests.Session()
            continue
        with tally.lock:
            tally.statuses[answer.status] += 1
            tally.valid += request.valid
            if answer != expected[name] and len(tally.mismatches) < 20:
                tally.mismatches.append(f"{name}: got {answer!r}, expected {expected[name]!r}")


@pytest.fixture(scope="module")
def server(trained: dict[str, TrainResult], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("load")
    model = always_tagging(trained["ner"].model_dir, root / "ner-tagging", "B-location")
    live = LiveServer.start(model, root / "logs", ENV, "load")
    try:
        yield live.wait_ready()
    finally:
        live.stop()


def expected_answers(server: LiveServer, requests_by_name: dict[str, Request]) -> dict[str, Answer]:
    """Each request's answer when sent alone, checked to be right (valid) or the right 4xx (invalid)."""
    expected = {}
    for name, request in requests_by_name.items():
        response = requests.post(
            server.url + URL_PATH, data=request.body, headers=request.headers(), timeout=60
        )
        expected[name] = answer = answer_of(response)
        if not request.valid:
            assert answer.status in {400, 406, 413, 415} and answer.body["error"], (name, answer)
            continue
        assert answer.status == 200, (name, answer)
        predictions = answer.body["predictions"] if isinstance(answer.body, dict) else answer.body
        if name.startswith("single"):
            text = json.loads(request.body)["text"]
            (prediction,) = predictions
            spans = word_spans(text)
            assert prediction["pred"] == ["B-location"] * len(spans)  # one tag per word, zero-width too
            assert [(e["start"], e["end"], e["text"]) for e in prediction["entities"]] == [
                (start, end, text[start:end]) for start, end in spans
            ]
    singles = [json.dumps(answer.body) for name, answer in expected.items() if name.startswith("single")]
    assert len(set(singles)) == len(singles), "two texts with the same answer could swap unnoticed"
    return expected


def test_eight_clients_for_thirty_seconds_get_exact_answers_no_5xx_and_memory_stays_flat(
    server: LiveServer,
) -> None:
    requests_by_name = catalogue()
    expected = expected_answers(server, requests_by_name)
    workers = server.worker_pids()
    tally = Tally()
    started = time.monotonic()
    deadline = started + SECONDS
    clients = [
        threading.Thread(
            target=run_client, args=(server, requests_by_name, expected, seed, deadline, tally), daemon=True
        )
        for seed in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    rss: list[tuple[float, int]] = []
    while any(client.is_alive() for client in clients):
        rss.append((time.monotonic() - started, server.rss()))
        time.sleep(0.5)
    for client in clients:
        client.join()
    elapsed = time.monotonic() - started
    after_warm_up = next(value for seconds, value in rss if seconds >= WARM_UP)
    at_end = rss[-1][1]
    growth = at_end / after_warm_up - 1
    total = sum(tally.statuses.values())
    print(
        f"\n{total} requests in {elapsed:.1f}s by {CLIENTS} clients ({total / elapsed:.0f}/s), "
        f"{tally.valid} valid; statuses {dict(sorted(tally.statuses.items()))}; RSS "
        f"{after_warm_up / 2**20:.0f} MiB after {WARM_UP:.0f}s, {at_end / 2**20:.0f} MiB at the end "
        f"({growth:+.1%}), peak {max(value for _, value in rss) / 2**20:.0f} MiB"
    )
    assert elapsed >= SECONDS
    assert not tally.connection_errors, tally.connection_errors[:5]
    assert not [status for status in tally.statuses if status >= 500], tally.statuses
    assert not tally.mismatches, "\n".join(tally.mismatches)
    assert total >= 100 and tally.valid >= 50 and total - tally.valid >= 20, tally  # both kinds, at load
    assert set(tally.statuses) >= {200, 400, 406, 413, 415}
    assert growth < MAX_RSS_GROWTH, rss
    assert server.worker_pids() == workers, "a worker was replaced during the load"
    assert server.get("/ping").status_code == 200
    logs = server.logs()
    assert "Traceback" not in logs, logs[-3000:]
    assert "requests share one forward pass" in logs  # concurrent requests were batched together
