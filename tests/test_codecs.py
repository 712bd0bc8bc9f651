"""Request decoding and response encoding, as pure functions of bytes and header values."""

from __future__ import annotations

import json

import pytest

from hfsm.errors import RequestError
from hfsm.inference.codecs import (
    JSON,
    JSONLINES,
    decode_request,
    encode_response,
    parse_media_type,
    request_media_type,
    response_media_type,
)
from hfsm.inference.predictor import RecordError
from hfsm.inference.toolkit_form import MANY, PAIR, SINGLE, PipelineInput, ToolkitRecord


def records_of(body: str | bytes, media_type: str = JSON) -> list[dict | None]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return [item.record for item in decode_request(data, media_type).items]


def errors_of(body: str | bytes, media_type: str = JSONLINES) -> list[str | None]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    items = decode_request(data, media_type).items
    return [None if item.error is None else f"{item.name}: {item.error.message}" for item in items]


# --- media types ---------------------------------------------------------------------------------


def test_media_type_parameters_and_case_are_normalised() -> None:
    assert parse_media_type("Application/JSON; Charset=UTF-8") == ("application/json", {"charset": "UTF-8"})
    assert request_media_type("application/json; charset=utf-8") == (JSON, "utf-8")
    assert request_media_type('application/x-jsonlines;charset="utf-8"') == (
        "application/x-jsonlines",
        "utf-8",
    )


def test_missing_content_type_means_json() -> None:
    assert request_media_type(None) == (JSON, "utf-8")


@pytest.mark.parametrize("content_type", ["text/plain", "text/csv", "application/x-www-form-urlencoded"])
def test_unsupported_content_type_is_415(content_type: str) -> None:
    with pytest.raises(RequestError, match="unsupported Content-Type") as caught:
        request_media_type(content_type)
    assert caught.value.status == 415


def test_unknown_charset_is_415() -> None:
    with pytest.raises(RequestError, match="charset") as caught:
        request_media_type("application/json; charset=klingon")
    assert caught.value.status == 415


@pytest.mark.parametrize(
    ("accept", "request_type", "expected"),
    [
        (None, JSON, JSON),
        ("", JSONLINES, JSONLINES),
        ("*/*", "application/x-jsonlines", "application/x-jsonlines"),
        ("application/*", JSON, JSON),
        ("application/jsonlines", JSON, JSONLINES),
        ("application/json; charset=utf-8", JSONLINES, JSON),
        ("text/html, application/jsonl;q=0.5, application/json;q=0.9", JSONLINES, JSON),
        ("application/json;q=0, */*;q=0.1", JSONLINES, JSONLINES),
    ],
)
def test_accept_chooses_the_response_format(accept: str | None, request_type: str, expected: str) -> None:
    assert response_media_type(accept, request_type) == expected


@pytest.mark.parametrize("accept", ["text/csv", "text/html, application/xml", "application/json;q=0"])
def test_unsatisfiable_accept_is_406(accept: str) -> None:
    with pytest.raises(RequestError, match="cannot answer") as caught:
        response_media_type(accept, JSON)
    assert caught.value.status == 406


# --- JSON ----------------------------------------------------------------------------------------


def test_json_forms_of_one_or_many_records() -> None:
    assert records_of('{"data": [{"text": "a"}, {"text": "b", "id": 7}]}') == [
        {"text": "a"},
        {"text": "b", "id": 7},
    ]
    assert records_of('{"text": "solo"}') == [{"text": "solo"}]
    assert records_of('["a", {"text": "b"}]') == [{"text": "a"}, {"text": "b"}]
    assert records_of('"bare"') == [{"text": "bare"}]


def test_toolkit_form_is_one_toolkit_record_answered_unwrapped() -> None:
    single = decode_request(b'{"inputs": "one"}', JSON)
    assert single.toolkit and single.texts == 1
    assert single.records() == [ToolkitRecord((PipelineInput("one"),), SINGLE, {})]
    many = decode_request(
        b'{"inputs": ["one", {"text": "a", "text_pair": "b"}], "parameters": {"top_k": 2}}', JSON
    )
    assert many.records() == [
        ToolkitRecord((PipelineInput("one"), PipelineInput("a", "b")), MANY, {"top_k": 2})
    ]
    assert many.texts == 2
    pair = decode_request(b'{"inputs": {"text": "a", "text_pair": "b"}}', JSON)
    assert pair.records() == [ToolkitRecord((PipelineInput("a", "b"),), PAIR, {})]
    assert single.respond([[{"entity": "B-PER", "score": 0.5}]], JSON) == b'[{"entity":"B-PER","score":0.5}]'
    # records of our own form keep our schema, even with an 'inputs' field
    assert records_of('{"data": [{"inputs": "x"}]}') == [{"inputs": "x", "text": "x"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"inputs": 3}', "'inputs' must be a string, a list of strings or"),
        ('{"inputs": [3]}', "inputs[0] must be a string or"),
        ('{"inputs": "x", "parameters": []}', "'parameters' must be a JSON object"),
        ('{"inputs": "x", "id": 1}', "unknown key(s) 'id' next to 'inputs'"),
        ('{"inputs": {"text": "t", "bbox": [[1, 2, 3, 4]]}}', "word boxes are not part of the toolkit form"),
        ('{"inputs": {"text": "t", "pair": "u"}}', "unknown key(s) 'pair'"),
        ('{"inputs": {"text_pair": "u"}}', "'text' must be a string, got null"),
    ],
)
def test_toolkit_form_errors_name_what_is_wrong(body: str, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        decode_request(body.encode(), JSON).raise_first_error()
    assert caught.value.status == 400
    assert message in str(caught.value)


def test_json_records_keep_their_boxes() -> None:
    body = {"data": [{"text": "a b", "bbox": [[0, 0, 5, 5], [6, 0, 9, 5]]}, {"text": "c", "bbox": "1 2 3 4"}]}
    assert records_of(json.dumps(body)) == body["data"]


def test_non_record_items_are_errors_naming_their_position() -> None:
    decoded = decode_request(b'{"data": [{"text": "ok"}, 42, null]}', JSON)
    assert [item.name for item in decoded.items] == ["data[0]", "data[1]", "data[2]"]
    assert decoded.items[0].error is None
    assert "got a number" in decoded.items[1].error.message
    assert "got null" in decoded.items[2].error.message
    with pytest.raises(RequestError, match=r"^data\[1\]: a record must be a JSON object") as caught:
        decoded.raise_first_error()
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"data": [{"text": "a"}', "invalid JSON in the request body"),
        (b'{"text": "a"}\n{"text": "b"}', "application/jsonlines"),
        (b'{"data": {"text": "a"}}', "'data' must be an array"),
        (b'{"texts": ["a"]}', "must be"),
        (b"42", "must be"),
        (b"", "empty"),
        (b"  \n ", "empty"),
        (b'{"text": "caf\xe9"}', "not valid utf-8"),
    ],
)
def test_unreadable_json_bodies_are_400(body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        decode_request(body, JSON)
    assert caught.value.status == 400


def test_charset_and_byte_order_mark_are_honoured() -> None:
    decoded = decode_request('{"text": "café"}'.encode("latin-1"), JSON, "latin-1")
    assert decoded.items[0].record == {"text": "café"}
    assert records_of(b'\xef\xbb\xbf{"text": "bom"}') == [{"text": "bom"}]


# --- JSON Lines ----------------------------------------------------------------------------------


def test_jsonlines_one_record_per_line_and_a_final_newline_adds_none() -> None:
    for body in (
        '{"text": "a"}\n{"text": "b"}',
        '{"text": "a"}\n{"text": "b"}\n',
        '{"text": "a"}\r\n{"text": "b"}\r\n',
    ):
        assert records_of(body, JSONLINES) == [{"text": "a"}, {"text": "b"}]


def test_jsonlines_bad_lines_are_answered_in_place_with_their_line_number() -> None:
    body = '{"text": "a"}\nnot json\n\n   \n42\n"plain string"\n{"inputs": "hf"}\n'
    errors = errors_of(body)
    assert len(errors) == 7
    assert errors[0] is None
    assert errors[1].startswith("line 2: invalid JSON")
    assert errors[2].startswith("line 3: the line is empty")
    assert errors[3].startswith("line 4: the line is empty")
    assert errors[4].startswith("line 5: a record must be a JSON object")
    assert errors[5] is None and errors[6] is None
    decoded = decode_request(body.encode(), JSONLINES)
    assert decoded.line_by_line
    assert decoded.records() == [
        {"text": "a"},
        {"text": "plain string"},
        ToolkitRecord((PipelineInput("hf"),), SINGLE, {}),
    ]


def test_jsonlines_invalid_utf8_fails_only_its_line() -> None:
    errors = errors_of(b'{"text": "a"}\n{"text": "caf\xe9"}\n{"text": "c"}')
    assert errors[0] is None and errors[2] is None
    assert errors[1].startswith("line 2: the line is not valid utf-8")


def test_jsonlines_blank_body_is_400() -> None:
    with pytest.raises(RequestError, match="empty"):
        decode_request(b"\n", JSONLINES)


# --- merging outcomes and encoding ---------------------------------------------------------------


def test_jsonlines_response_has_one_line_per_input_line_and_no_final_newline() -> None:
    decoded = decode_request(b'{"text": "a"}\nbroken\n{"text": "c"}\n', JSONLINES)
    outcomes = [{"pred": "x"}, RecordError("the record has no 'text' field")]
    body = decoded.respond(outcomes, JSONLINES).decode("utf-8")
    assert not body.endswith("\n")
    lines = [json.loads(line) for line in body.split("\n")]
    assert lines[0] == {"pred": "x"}
    assert lines[1]["error"].startswith("line 2: invalid JSON")
    assert lines[2] == {"error": "line 3: the record has no 'text' field"}


def test_jsonlines_request_answered_as_json_keeps_errors_in_place() -> None:
    decoded = decode_request(b'{"text": "a"}\n[]', JSONLINES)
    body = json.loads(decoded.respond([{"pred": "x"}], JSON))
    assert body["predictions"][0] == {"pred": "x"}
    assert body["predictions"][1]["error"].startswith("line 2: a record must be a JSON object")


def test_json_request_fails_on_its_first_bad_record_with_that_records_status() -> None:
    decoded = decode_request(b'{"data": ["a", "b", "c"]}', JSON)
    outcomes = [{"pred": 1.0}, RecordError("too many words", status=413), RecordError("other")]
    with pytest.raises(RequestError, match=r"^data\[1\]: too many words$") as caught:
        decoded.respond(outcomes, JSON)
    assert caught.value.status == 413


def test_json_response_and_unicode_are_written_as_is() -> None:
    decoded = decode_request('{"text": "日本"}'.encode(), JSON)
    body = decoded.respond([{"pred": "日本"}], JSON)
    assert json.loads(body) == {"predictions": [{"pred": "日本"}]}
    assert "日本".encode() in body


def test_outcome_count_must_match_readable_records() -> None:
    decoded = decode_request(b'{"text": "a"}\nbroken', JSONLINES)
    with pytest.raises(ValueError, match="2 outcomes for 1 records"):
        decoded.respond([{"pred": 1}, {"pred": 2}], JSONLINES)


def test_encode_response_of_nothing_is_empty() -> None:
    assert encode_response([], [], JSONLINES) == b""
    assert json.loads(encode_response([], [], JSON)) == {"predictions": []}


def test_answers_escape_the_line_breaks_splitlines_knows() -> None:
    """U+2028, U+2029 and U+0085 in a text stay valid JSON raw, but every client that splits lines
    with str.splitlines (local transform did) counted them as line ends: they are escaped."""
    texts = ["Barack\u2028Obama", "New\x85York", "a\u2029b", "plain é"]
    body = encode_response(
        [{"text": t} for t in texts], [f"line {i}" for i in range(4)], "application/jsonlines"
    )
    decoded = body.decode("utf-8")
    assert len(decoded.splitlines()) == len(texts)
    assert [json.loads(line)["text"] for line in decoded.splitlines()] == texts
    assert "é" in decoded  # other characters stay as they are
