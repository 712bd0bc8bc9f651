"""Property-based fuzzing of ``POST /invocations``: whatever arrives, the answer is a 200 or a 4xx
that says what is wrong (400, 406, 413, 415), never a 500, and the worker keeps serving.

Three layers, from fast to real:

* the codecs alone: the JSON depth scanner agrees with a recursive count on any JSON value and
  stays linear on texts that make string-matching regexes quadratic; decoding any bytes under any
  Content-Type raises nothing but a :class:`RequestError`;
* the Flask app in-process (``app.test_client()``) with real predictors of three models: many
  examples, fast;
* the real ``python -m hfsm serve`` (gunicorn) over HTTP: fewer examples, fixed nasty requests and
  malformed HTTP over a raw socket; the worker stays the same process throughout, and after each
  test /ping says 200, a known request gets its known answer and no traceback was logged.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, currently_in_test_context, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from hfsm.errors import RequestError, UserError
from hfsm.inference.codecs import (
    JSONLINES_TYPES,
    decode_request,
    json_depth,
    request_media_type,
    response_media_type,
)
from hfsm.serving.app import create_app
from hfsm.serving.settings import ServingSettings
from live_server import LiveServer, error_of, ok_json
from sagemaker_tree import TrainResult

ALLOWED = {200, 400, 406, 413, 415}
JSON = "application/json"
JSONL = "application/jsonlines"
LIMITS = {
    "HFSM_MAX_RECORDS": "20",
    "HFSM_MAX_WORDS": "300",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1",
    "HFSM_BATCH_SIZE": "8",
    "HFSM_TORCH_THREADS": "1",
}
"""Small limits, so that random requests reach every 413 as well as the model."""
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# --- strategies ----------------------------------------------------------------------------------------

ODD = [
    *["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\ufe0f", "\u00ad", "\u202e"],  # zero-width, bidi
    *["\u00a0", "\u3000", "\u2028", "\u2029", "\u0085", "\x1c", "\t", "\n", "\r", "\x0b", " "],  # spaces
    *["\x00", "\x01", "\x1b", "\x7f", "\x9f"],  # control characters
    *["😀", "👩\u200d👩\u200d👧", "🇫🇷", "e\u0301", "日本語", "ﷺ", "𒐫", "\U0010ffff"],  # emoji, wide
    *["\ud800", "\udfff"],  # unpaired surrogates: JSON \u escapes can carry them
    *["[", "]", "{", "}", '"', "\\", ","],
]
WORDS = ["New", "York", "Paris", "card", "a", "internationalization", "café", "2024", "@user"]

short_texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(ODD + WORDS), max_size=40).map("".join),
    st.lists(st.sampled_from(ODD + WORDS), max_size=20).map(" ".join),
    st.sampled_from(["", " ", "\u200b", "\u200b \u200b\ufeff", " \t\n\u3000\u2028 ", "\ufe0f", "\x00"]),
)
huge_texts = st.sampled_from(["x", "ab ", "😀", "\u200b"]).flatmap(
    lambda unit: st.sampled_from([unit * 5_000, unit * 100_000])  # one huge word, or many words
)
texts = st.one_of(short_texts, short_texts, short_texts, huge_texts)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),  # floats: NaN, ±Infinity
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
coordinates = st.one_of(
    st.integers(-5, 1005), st.integers(), st.just(10**400), st.floats(), st.text(max_size=4), st.none()
)
broken_boxes = st.one_of(
    st.lists(st.one_of(st.lists(coordinates, max_size=5), st.text(max_size=16), json_values), max_size=6),
    st.text(max_size=40),
    json_values,
)


@st.composite
def valid_boxes(draw: st.DrawFn, n_words: int) -> list[list[int]] | str:
    boxes = []
    for _ in range(n_words):
        x0, x1 = sorted(draw(st.lists(st.integers(0, 1000), min_size=2, max_size=2)))
        y0, y1 = sorted(draw(st.lists(st.integers(0, 1000), min_size=2, max_size=2)))
        boxes.append([x0, y0, x1, y1])
    if draw(st.booleans()):
        return ",".join(" ".join(map(str, box)) for box in boxes)  # the training file's form
    return boxes


@st.composite
def good_records(draw: st.DrawFn) -> Any:
    """A record every model can predict (boxes included), its text as odd as texts makes it."""
    text = draw(short_texts)
    record = {"text": text, "bbox": draw(valid_boxes(len(text.split())))}
    return draw(st.sampled_from([record, {**record, "id": 7}, {"inputs": text, "bbox": record["bbox"]}]))


@st.composite
def wild_records(draw: st.DrawFn) -> Any:
    """Records with any field wrong, missing, huge or of the wrong type."""
    text = draw(st.one_of(texts, texts, json_values))
    record: dict[str, Any] = {"text": text}
    if draw(st.booleans()):
        record["bbox"] = draw(broken_boxes)
    if draw(st.booleans()):
        record[draw(st.sampled_from(["inputs", "id", "parameters"]))] = draw(json_values)
    return draw(st.sampled_from([record, text, {"inputs": text}]))


records = st.one_of(good_records(), good_records(), good_records(), wild_records())
"""Three in four well formed, so that the models run on odd texts as often as requests are refused."""


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    items = st.one_of(records, records, records, json_values)
    value = draw(
        st.one_of(
            st.builds(lambda data: {"data": data}, st.lists(items, max_size=4)),
            records,
            records,
            st.builds(lambda x: {"inputs": x}, st.one_of(texts, st.lists(texts, max_size=4), items)),
            st.lists(items, max_size=4),
            json_values,
        )
    )
    # ensure_ascii=False with surrogatepass writes an unpaired surrogate as invalid UTF-8 (CESU) bytes
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


nasty_lines = st.sampled_from([b"", b" ", b"\r", b"\xff\xfe", b"[" * 2000, b'{"text": "a"}\r', b"NaN", b"{"])


@st.composite
def jsonl_bodies(draw: st.DrawFn) -> bytes:
    line = st.one_of(json_bodies(), json_bodies(), json_bodies(), nasty_lines, st.binary(max_size=30))
    lines = draw(st.lists(line, min_size=1, max_size=8))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))


def nested(depth: int, opener: bytes, closer: bytes) -> list[bytes]:
    return [opener * depth, opener * depth + b"1" + closer * depth, b'{"text": "a", "x": ' + opener * depth]


nasty_bodies = st.one_of(
    st.binary(max_size=300),
    st.integers(1, 5_000).flatmap(
        lambda d: st.sampled_from(
            [*nested(d, b"[", b"]"), *nested(d, b'{"a":', b"}"), *nested(d, b"[{", b"}]")]
        )
    ),
    st.integers(4_000, 5_000).map(lambda n: b'{"text": "a", "n": ' + b"7" * n + b"}"),
    st.sampled_from(
        [
            b"NaN",
            b"-Infinity",
            b'{"text": NaN}',
            b'{"data": [Infinity, {"text": -Infinity}]}',
            b'{"text": "a", "bbox": [[NaN, 0, 1, 1]]}',
            b'{"text": "a", "bbox": [[1e999, 0, 1, 1]]}',
            b'\xef\xbb\xbf{"text": "bom"}',
            b"\xc0\x80",
            b"\xed\xa0\x80",
            b'"\\ud800"',
            b'{"text": "\\udc00 x \\ud83d"}',
            b'{"text": "a"} {"text": "b"}',
            b"1e999999",
            b'"' + b'\\"' * 20_000,
            b"[" * 200_000,
        ]
    ),
)

header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
).map(str.strip)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            JSON,
            JSONL,
            "application/x-jsonlines",
            "application/jsonl",
            "Application/JSON; Charset=UTF-8",
            "application/json; charset=utf-16",
            "application/jsonlines; charset=utf-16",
            "application/jsonlines; charset=cp037",
            "application/json; charset=latin-1",
            "application/json; charset=utf-7",
            "application/json; charset=idna",
            "application/json; charset=rot13",
            "application/json; charset=base64",
            "application/json; charset=",
            "application/json; charset",
            "application/json; charset=klingon",
            "text/plain",
            "text/csv",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            ";",
            '"application/json"',
        ]
    ),
    header_text,
)
good_accepts = st.sampled_from(["*/*", JSON, JSONL, "application/*", "text/html, application/json;q=0.1"])
accepts = st.one_of(
    st.none(),
    good_accepts,
    good_accepts,
    st.sampled_from(
        [
            "text/html",
            "application/json;q=0",
            "application/json;q=nan, text/csv",
            "application/jsonlines;q=inf",
            "application/json;q=abc",
            ",,,",
            "",
        ]
    ),
    header_text,
)


@dataclass(frozen=True)
class Sent:
    body: bytes
    content_type: str | None
    accept: str | None

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        if self.accept is not None:
            headers["Accept"] = self.accept
        return headers


@st.composite
def sent_requests(draw: st.DrawFn) -> Sent:
    """Mostly a body with the Content-Type it is meant for, so that the model gets to run."""
    kind = draw(st.sampled_from(["json", "jsonl", "nasty"]))
    body = draw({"json": json_bodies(), "jsonl": jsonl_bodies(), "nasty": nasty_bodies}[kind])
    meant = {
        "json": st.sampled_from([None, JSON, "application/json; charset=utf-8"]),
        "jsonl": st.sampled_from(sorted(JSONLINES_TYPES)),
        "nasty": content_types,
    }[kind]
    return Sent(body, draw(st.one_of(meant, meant, content_types)), draw(accepts))


# --- the property --------------------------------------------------------------------------------------


def expected_records(value: Any) -> int:
    """How many records a JSON body holds, by the forms the README lists (for 200 answers only)."""
    if isinstance(value, dict) and "data" in value:
        return len(value["data"])
    if isinstance(value, dict) and isinstance(value.get("inputs"), list):
        return len(value["inputs"])
    return len(value) if isinstance(value, list) else 1


def event(name: str) -> None:
    """Count what examples reached (``--hypothesis-show-statistics``), inside hypothesis tests only."""
    if currently_in_test_context():
        hypothesis_event(name)


def sent_in_toolkit_form(sent: Sent) -> bool:
    try:
        value = json.loads(sent.body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(value, dict) and "inputs" in value


def is_toolkit_answer(answer: Any) -> bool:
    """The transformers pipeline's output: a list (entities, labels, or one per input), or the bare
    ``{"label", "score"}`` of one text pair."""
    return isinstance(answer, list) or (isinstance(answer, dict) and set(answer) == {"label", "score"})


def check_answer(sent: Sent, status: int, content_type: str, body: bytes) -> None:
    """200 or an allowed 4xx; a JSON error that says something; a 200 that answers every record."""
    assert status in ALLOWED, f"{status} for {sent!r}:\n{body[:1000]!r}"
    event(f"status {status}")
    media_type = content_type.split(";")[0].strip()
    if status != 200:
        assert media_type == JSON, content_type
        error = json.loads(body)["error"]
        assert isinstance(error, str) and error.strip()
        return
    sent_as_lines = (sent.content_type or JSON).partition(";")[0].strip().lower() in JSONLINES_TYPES
    if not sent_as_lines and sent_in_toolkit_form(sent):
        answer = json.loads(body)  # JSON, or the one line of JSON Lines
        assert is_toolkit_answer(answer), answer
        event("200 in the toolkit form")
        return
    if media_type == JSON:
        answers = json.loads(body)["predictions"]
    else:
        assert media_type in JSONLINES_TYPES, content_type
        assert not body.endswith(b"\n")
        answers = [json.loads(line) for line in body.decode("utf-8").split("\n")] if body else []
    event("200 with predictions" if any("pred" in answer for answer in answers) else "200, no prediction")
    for answer in answers:
        if is_toolkit_answer(answer):  # a JSON Lines line in the toolkit form
            continue
        assert isinstance(answer, dict) and ("pred" in answer or set(answer) == {"error"}), answer
        if "pred" in answer and isinstance(answer["pred"], list) and "entities" in answer:  # NER
            assert len(answer["pred"]) == len(answer["proba"])
    sent_type, _, params = (sent.content_type or JSON).partition(";")
    utf8 = "charset" not in params.lower() or "utf-8" in params.lower()
    if sent_type.strip().lower() in JSONLINES_TYPES:
        if utf8:
            lines = sent.body.split(b"\n")
            assert len(answers) == len(lines) - (lines[-1] == b""), "one answer per line"
    else:
        assert all("pred" in answer for answer in answers), "a JSON request is all or nothing"
        if utf8:
            assert len(answers) == expected_records(json.loads(sent.body.decode("utf-8-sig")))


# --- the codecs alone ----------------------------------------------------------------------------------


def recursive_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((recursive_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((recursive_depth(item) for item in value.values()), default=0)
    return 0


deep_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\,:ab\u00e9\u2028', max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=deep_values, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_json_depth_agrees_with_a_recursive_count_whatever_the_strings_hold(
    value: Any, ensure_ascii: bool, indent: int | None
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    assert json_depth(text) == recursive_depth(value)
    assert json_depth(text, stop_above=10_000) == 0  # the shortcut: too few brackets to be deeper


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("[" * 1_000_000, 1_000_000),
        ('"' + '\\"' * 1_000_000, 0),  # one unterminated string: a backtracking regex is quadratic here
        ('["\\\\",' * 200_000, 200_000),  # an escaped backslash does not escape the closing quote
        ('{"a":' * 200_000, 200_000),
        ('"[",' * 500_000, 0),  # every bracket inside a string
    ],
)
def test_json_depth_is_linear_on_pathological_texts(text: str, depth: int) -> None:
    started = time.monotonic()
    assert json_depth(text) == depth
    assert time.monotonic() - started < 5.0  # about 0.1 s; quadratic would be hours


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sent=sent_requests())
def test_decoding_any_bytes_under_any_headers_raises_only_request_errors(sent: Sent) -> None:
    try:
        media_type, charset = request_media_type(sent.content_type)
        response_media_type(sent.accept, media_type)
        decoded = decode_request(sent.body, media_type, charset)
    except RequestError as exc:
        assert exc.status in {400, 406, 415}, exc
        return
    for item in decoded.items:
        assert (item.record is None) != (item.error is None)
        assert item.error is None or item.error.status == 400


def test_max_json_depth_is_a_setting_with_a_safe_range() -> None:
    assert ServingSettings.from_environ({}).max_json_depth == 64
    assert ServingSettings.from_environ({"HFSM_MAX_JSON_DEPTH": "500"}).max_json_depth == 500
    for bad in ("0", "501", "100000", "deep"):
        with pytest.raises(UserError, match="HFSM_MAX_JSON_DEPTH"):
            ServingSettings.from_environ({"HFSM_MAX_JSON_DEPTH": bad})


# --- the app in-process, real predictors ---------------------------------------------------------------


@pytest.fixture(scope="module")
def clients(trained: dict[str, TrainResult]) -> Iterator[dict[str, FlaskClient]]:
    """BERT NER (packed forward passes), LayoutLM NER (boxes) and BERT classification, ready."""
    import torch

    threads = torch.get_num_threads()
    apps = {}
    for name in ("ner", "ner_bbox", "classif"):
        app = create_app(
            ServingSettings.from_environ({"HFSM_MODEL_DIR": str(trained[name].model_dir), **LIMITS})
        )
        state = app.extensions["hfsm"]
        assert state.wait(180) and state.status == "ready", state.error
        apps[name] = app.test_client()
    yield apps
    torch.set_num_threads(threads)  # Predictor.load set it to HFSM_TORCH_THREADS for the whole process


def post(client: FlaskClient, sent: Sent) -> tuple[int, str, bytes]:
    response = client.post("/invocations", data=sent.body, headers=sent.headers())
    return response.status_code, response.headers["Content-Type"], response.get_data()


@pytest.mark.parametrize("model", ["ner", "ner_bbox", "classif"])
@settings(FUZZ, max_examples=300)
@given(sent=sent_requests())
def test_any_request_gets_a_200_or_a_4xx_in_process(
    clients: dict[str, FlaskClient], model: str, sent: Sent
) -> None:
    check_answer(sent, *post(clients[model], sent))


REGRESSIONS = [
    # each of these was a 500 before the fix named in the test's docstring
    ("deep", Sent(b"[" * 100_000, None, None), 400, "HFSM_MAX_JSON_DEPTH"),
    ("deep line", Sent(b'{"text": "a"}\n' + b"[" * 2_000, JSONL, None), 200, "line 2: the JSON nests"),
    ("long int", Sent(b'{"text": "a", "n": ' + b"1" * 5_000 + b"}", None, None), 400, "4300 digits"),
    ("surrogate", Sent(b'{"text": "a \\ud800 b"}', None, None), 400, "unpaired surrogate"),
    (
        "utf-7 surrogate",
        Sent(b'{"text": "+2AA-"}', "application/json; charset=utf-7", None),
        400,
        "surrogate",
    ),
    ("rot13", Sent(b'{"text": "a"}', "application/json; charset=rot13", None), 415, "charset"),
    ("base64", Sent(b"e30=", "application/json; charset=base64", None), 415, "charset"),
    ("idna", Sent(b"xn--", "application/json; charset=idna", None), 400, "not valid idna"),
    ("box number", Sent(b'{"text": "a", "bbox": [5]}', None, None), 400, "box 1: a box must be"),
    ("box null", Sent(b'{"text": "a", "bbox": [null]}', None, None), 400, "got null"),
    (
        "box 10**400",
        Sent(b'{"text": "a", "bbox": [[1' + b"0" * 400 + b", 0, 1, 1]]}", None, None),
        400,
        "0..1000",
    ),
]


@pytest.mark.parametrize(("name", "sent", "status", "message"), REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_inputs_that_were_500s_are_now_answered_for_what_they_are(
    clients: dict[str, FlaskClient], name: str, sent: Sent, status: int, message: str
) -> None:
    """Fixed in codecs.parse_json (depth, digits), request_media_type (non-text codecs),
    _decode_text (idna's UnicodeError), Predictor._validate (surrogates) and predictor._boxes."""
    code, content_type, body = post(clients["ner_bbox"], sent)
    check_answer(sent, code, content_type, body)
    assert code == status
    assert message in body.decode("utf-8")


def test_depth_limit_boundary_and_jsonlines_in_a_charset_without_newline_bytes(
    clients: dict[str, FlaskClient],
) -> None:
    client = clients["ner"]
    at_limit = b'{"text": "a b", "x": ' + b"[" * 63 + b"]" * 63 + b"}"  # 64 deep with the record
    assert client.post("/invocations", data=at_limit).status_code == 200
    over = b'{"text": "a b", "x": ' + b"[" * 64 + b"]" * 64 + b"}"
    response = client.post("/invocations", data=over)
    assert response.status_code == 400
    assert response.json["error"].startswith("the JSON nests arrays and objects 65 deep")
    # UTF-16 JSON Lines: 0x0A bytes inside characters are not line ends (every line used to fail)
    lines = '{"text": "a"}\n{"text": "b \u0a0a c"}\n'.encode("utf-16")
    response = client.post("/invocations", data=lines, content_type="application/jsonlines; charset=utf-16")
    answers = [json.loads(line) for line in response.get_data(as_text=True).split("\n")]
    assert [len(answer["pred"]) for answer in answers] == [1, 3]


# --- the real server over HTTP -------------------------------------------------------------------------


@dataclass
class Fuzzed:
    server: LiveServer
    workers: list[int]
    reference: Any
    """The answer to REFERENCE before any fuzzing."""


REFERENCE = json.dumps(
    {"data": [{"text": "Total due 42", "bbox": [[1, 1, 9, 9], [10, 1, 19, 9], [20, 1, 29, 9]]}]}
)


@pytest.fixture(scope="module")
def live(trained: dict[str, TrainResult], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    server = LiveServer.start(
        trained["ner_bbox"].model_dir, tmp_path_factory.mktemp("fuzz") / "logs", LIMITS, "fuzz"
    )
    try:
        server.wait_ready()
        yield Fuzzed(server, server.worker_pids(), ok_json(server.post(REFERENCE)))
    finally:
        server.stop()


def assert_still_serving(live: Fuzzed) -> None:
    """/ping 200, the same worker process as at the start, the same answer, and no traceback logged."""
    server = live.server
    assert server.get("/ping").status_code == 200
    assert server.worker_pids() == live.workers, f"a worker was replaced:\n{server.logs()[-3000:]}"
    assert ok_json(server.post(REFERENCE)) == live.reference
    logs = server.logs()
    assert "Traceback" not in logs and "internal error" not in logs, logs[-3000:]


def test_nasty_requests_over_http_are_4xx_and_the_worker_lives(live: Fuzzed) -> None:
    server = live.server
    assert "HFSM_MAX_JSON_DEPTH" in error_of(server.post(b"[" * 100_000), 400)
    assert "HFSM_MAX_JSON_DEPTH" in error_of(server.post(b'{"a":' * 150_000), 400)
    assert "4300 digits" in error_of(server.post(b'{"text": "a", "n": ' + b"9" * 10_000 + b"}"), 400)
    assert "surrogate" in error_of(server.post(b'{"text": "\\udfff"}'), 400)
    assert "charset" in error_of(server.post(b'{"text": "a"}', "application/json; charset=zlib"), 415)
    assert "box 1" in error_of(server.post(b'{"text": "a", "bbox": [true]}'), 400)
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" in error_of(server.post(b'"' + b"x" * 1_100_000 + b'"'), 413)
    assert "HFSM_MAX_WORDS" in error_of(server.post(json.dumps({"text": "w " * 301})), 413)
    assert "HFSM_MAX_RECORDS" in error_of(server.post(json.dumps(["a"] * 21)), 413)
    assert "Accept" in error_of(server.post(REFERENCE, accept="image/png"), 406)
    assert "Content-Type" in error_of(server.post(REFERENCE, content_type="text/plain"), 415)
    lines = server.post(b'{"text": "a", "bbox": [[0, 0, 1, 1]]}\n' + b"{" * 5_000 + b"\n\xff\n", JSONL)
    assert lines.status_code == 200
    answers = [json.loads(line) for line in lines.text.split("\n")]
    assert [("pred" in a, a.get("error", "")[:20]) for a in answers] == [
        (True, ""),
        (False, "line 2: the JSON nes"),
        (False, "line 3: the line is "),
    ]
    assert_still_serving(live)


@settings(FUZZ, max_examples=100)
@given(sent=sent_requests())
def test_any_request_over_http_gets_a_200_or_a_4xx(live: Fuzzed, sent: Sent) -> None:
    # None drops requests' own default Accept (*/*), so that a missing Accept is sent as missing
    headers: dict[str, str | None] = {"Accept": None, **sent.headers()}
    response = requests.post(f"{live.server.url}/invocations", data=sent.body, headers=headers, timeout=60)
    check_answer(sent, response.status_code, response.headers["Content-Type"], response.content)
    assert live.server.worker_pids() == live.workers, "the worker died"


def raw_http(port: int, data: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """Send bytes as they are, close our side, and read the status line and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def http_request(headers: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(
        [b"POST /invocations HTTP/1.1", b"Host: fuzz", *headers, b"Connection: close", b"", body]
    )


BODY = b'{"text": "ab", "bbox": "1 1 5 5"}'


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


RAW_CASES = [
    (
        "content-length",
        [b"Content-Type: application/json", b"Content-Length: %d" % len(BODY)],
        BODY,
        200,
        b"pred",
    ),
    ("chunked", [b"Transfer-Encoding: chunked"], chunked(BODY[:10], BODY[10:]), 200, b"pred"),
    # werkzeug stopped reading a chunked body at MaxPayloadInMB and answered what it had read
    ("chunked too large", [b"Transfer-Encoding: chunked"], chunked(*[b" " * 300_000] * 4, BODY), 413, b"MB"),
    # gunicorn's ParseException from the body reader was a 500
    ("bad chunk size", [b"Transfer-Encoding: chunked"], b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", 400, b"HTTP"),
    ("bad chunk end", [b"Transfer-Encoding: chunked"], b"3\r\nabcdef\r\n0\r\n\r\n", 400, b"HTTP"),
    # a body shorter than its Content-Length was answered from the bytes that came
    ("short body", [b"Content-Length: %d" % (len(BODY) + 50)], BODY, 400, b"Content-Length"),
    ("long body", [b"Content-Length: 5"], BODY, 400, b"invalid JSON"),
    ("no length", [], BODY, 400, b"empty"),
    ("charset bytes", [b"Content-Type: application/json; charset=\xff\xfe"], BODY, 415, b"charset"),
    ("no content-type", [b"Content-Length: %d" % len(BODY)], BODY, 200, b"pred"),
    # refused by gunicorn's HTTP parser before the app: its own HTML answers
    ("length and chunked", [b"Content-Length: 5", b"Transfer-Encoding: chunked"], chunked(BODY), 400, b""),
    ("negative length", [b"Content-Length: -1"], BODY, 400, b""),
    ("NUL in a header", [b"Content-Type: application/json; charset=utf\x008"], BODY, 400, b""),
    ("huge header", [b"Content-Type: " + b"a" * 10_000], BODY, 431, b""),
]


def test_malformed_http_over_a_raw_socket_is_answered_and_the_worker_lives(live: Fuzzed) -> None:
    for name, headers, body, status, needle in RAW_CASES:
        got, answer = raw_http(live.server.port, http_request(headers, body))
        assert (got, needle in answer) == (status, True), f"{name}: {got} {answer[:300]!r}"
    got, _ = raw_http(live.server.port, b"\x00\xff garbage\r\n\r\n")
    assert got == 400
    assert_still_serving(live)
