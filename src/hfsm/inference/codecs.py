"""Request bodies to records and predictions to response bodies: JSON and JSON Lines.

JSON is all-or-nothing: one bad record fails the request with a message that names it. JSON Lines
is line-by-line: every input line gets exactly one output line, in order, a bad line answering
``{"error": "line N: ..."}``, because Batch Transform (``SplitType=Line``, ``JoinSource=Input``)
pairs input and output lines by position and fails a whole mini-batch on a non-200 status.

Pure functions of bytes and header values; the web layer only maps :class:`RequestError` statuses.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RequestError
from ..json_types import json_type
from .predictor import Outcome, RecordError
from .toolkit_form import FormError, ToolkitRecord, is_toolkit_form, read_toolkit_record

JSON = "application/json"
JSONLINES = "application/jsonlines"
JSONLINES_TYPES = frozenset({JSONLINES, "application/x-jsonlines", "application/jsonl"})
SUPPORTED = f"{JSON}, {', '.join(sorted(JSONLINES_TYPES))}"
DEFAULT_MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects read (HFSM_MAX_JSON_DEPTH); the deepest request form,
``{"data": [{"bbox": [[...]]}]}``, is 4."""
MAX_JSON_DEPTH_LIMIT = 500
"""Highest HFSM_MAX_JSON_DEPTH allowed: Python's json parser recurses once per level and raises
RecursionError (a 500) near the interpreter's recursion limit of 1000 frames."""

_INT_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 4300)  # Python >= 3.10.7

# json_depth's three linear passes (no pattern here can backtrack more than once over the text)
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*(?:"|$)')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True)
class Item:
    """One record of a request, or why it could not be read; ``name`` locates it in messages."""

    name: str
    record: dict[str, Any] | ToolkitRecord | None = None
    error: RecordError | None = None

    @property
    def texts(self) -> int:
        """How many texts the item holds (a toolkit-form record may hold a list of them)."""
        return len(self.record.inputs) if isinstance(self.record, ToolkitRecord) else 1


@dataclass(frozen=True)
class DecodedRequest:
    media_type: str
    items: list[Item]
    toolkit: bool = False
    """A JSON body in the toolkit form: answered with the pipeline's output itself, unwrapped."""

    @property
    def line_by_line(self) -> bool:
        """True when bad records are answered in place instead of failing the request."""
        return self.media_type in JSONLINES_TYPES

    @property
    def texts(self) -> int:
        return sum(item.texts for item in self.items)

    def records(self) -> list[dict[str, Any] | ToolkitRecord]:
        return [item.record for item in self.items if item.record is not None]

    def raise_first_error(self) -> None:
        for item in self.items:
            if item.error is not None:
                raise RequestError(f"{item.name}: {item.error.message}", item.error.status)

    def merge(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Outcomes of :meth:`records`, put back in place among the records that could not be read."""
        readable = sum(1 for item in self.items if item.error is None)
        if len(outcomes) != readable:
            raise ValueError(f"{len(outcomes)} outcomes for {readable} records")
        pending = iter(outcomes)
        return [item.error if item.error is not None else next(pending) for item in self.items]

    def respond(self, outcomes: Sequence[Outcome], media_type: str) -> bytes:
        """The body answering :meth:`records`' outcomes; a JSON request fails on its first bad record."""
        merged = self.merge(outcomes)
        names = [item.name for item in self.items]
        if not self.line_by_line:
            for name, outcome in zip(names, merged, strict=True):
                if isinstance(outcome, RecordError):
                    raise RequestError(f"{name}: {outcome.message}", outcome.status)
            if self.toolkit:
                return _dumps(merged[0]).encode("utf-8")
        return encode_response(merged, names, media_type)


def parse_media_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``"Application/JSON; charset=UTF-8"`` -> (``"application/json"``, ``{"charset": "UTF-8"}``)."""
    if not value:
        return "", {}
    main, *params = value.split(";")
    parsed = {}
    for param in params:
        key, _, raw = param.partition("=")
        if key.strip():
            parsed[key.strip().lower()] = raw.strip().strip('"')
    return main.strip().lower(), parsed


def request_media_type(content_type: str | None) -> tuple[str, str]:
    """The request's media type and charset; a missing Content-Type means JSON (curl's habit aside)."""
    media_type, params = parse_media_type(content_type)
    media_type = media_type or JSON
    if media_type != JSON and media_type not in JSONLINES_TYPES:
        raise RequestError(f"unsupported Content-Type {content_type!r}; send one of: {SUPPORTED}", 415)
    charset = params.get("charset", "utf-8")
    if not _is_text_encoding(charset):
        raise RequestError(f"unsupported charset {charset!r} in Content-Type; send utf-8", 415)
    return media_type, charset


def _is_text_encoding(charset: str) -> bool:
    """Whether ``bytes.decode(charset)`` can work: a known codec that decodes bytes to text.

    ``codecs.lookup`` also finds bytes-to-bytes codecs (``base64``, ``rot13``, ``zlib``...), which
    ``bytes.decode`` refuses with a LookupError, and raises ValueError on a NUL in the name; both
    are the client's charset, not a fault of the server.
    """
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return False
    # the flag bytes.decode itself checks; private, hence the default for codecs registered without it
    return bool(getattr(info, "_is_text_encoding", True))


def response_media_type(accept: str | None, request_type: str) -> str:
    """The best media type the Accept header allows; ``*/*``, ``application/*`` or none mean the request's."""
    if accept is None or not accept.strip():
        return request_type
    ranges = []
    for position, part in enumerate(accept.split(",")):
        media_type, params = parse_media_type(part)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if media_type and quality > 0:
            ranges.append((-quality, position, media_type))
    for _, _, media_type in sorted(ranges):
        if media_type in ("*/*", "application/*"):
            return request_type
        if media_type == JSON or media_type in JSONLINES_TYPES:
            return media_type
    raise RequestError(f"cannot answer with Accept {accept!r}; accept one of: {SUPPORTED}", 406)


def decode_request(
    body: bytes, media_type: str, charset: str = "utf-8", max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> DecodedRequest:
    """The request's items; ``max_depth`` bounds the JSON nesting (of each line in JSON Lines)."""
    if not body.strip():
        raise RequestError('the request body is empty; send records such as {"data": [{"text": "..."}]}')
    if media_type in JSONLINES_TYPES:
        return DecodedRequest(media_type, decode_jsonlines(body, charset, max_depth))
    items = decode_json(body, charset, max_depth)
    toolkit = len(items) == 1 and items[0].name == TOOLKIT_NAME
    return DecodedRequest(media_type, items, toolkit=toolkit)


def decode_json(body: bytes, charset: str = "utf-8", max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> list[Item]:
    """``{"data": [...]}``, one record, a list of records, or ``{"inputs": ..., "parameters": ...}``
    (the Hugging Face inference toolkit's form, one :class:`ToolkitRecord`)."""
    text = _decode_text(body, charset, "the request body")
    try:
        value = parse_json(text, max_depth)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            raise RequestError(
                f"invalid JSON: more than one JSON value ({exc}); for one JSON object per line send "
                f"Content-Type: {JSONLINES} (Batch Transform with SplitType=Line)"
            ) from None
        raise RequestError(f"invalid JSON in the request body: {exc}") from None
    if isinstance(value, dict) and "data" in value:
        return _items(value["data"], "data")
    if is_toolkit_form(value):
        return [_toolkit_item(TOOLKIT_NAME, value)]
    if isinstance(value, list):
        return _items(value, "")
    if isinstance(value, str) or (isinstance(value, dict) and "text" in value):
        return [_item("the record", value)]
    raise RequestError(
        'the JSON body must be {"data": [{"text": ...}, ...]}, {"text": ...} or {"inputs": ...}'
    )


def decode_jsonlines(
    body: bytes, charset: str = "utf-8", max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> list[Item]:
    """One item per line; the newline ending the last line does not start another one.

    Blank lines are records too (answered with an error) so that output line N stays the answer
    to input line N. Lines are cut on the newline byte, so that one undecodable line fails only
    itself, except in charsets where a newline is not that byte (UTF-16, UTF-32, EBCDIC): there a
    0x0A byte can be half of another character, so the body is decoded whole (all or nothing) first.
    """
    lines: list[bytes] | list[str]
    if _newline_is_byte(charset):
        lines = body.split(b"\n")
    else:
        lines = _decode_text(body, charset, "the request body").split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return [_line_item(number, raw, charset, max_depth) for number, raw in enumerate(lines, start=1)]


def _newline_is_byte(charset: str) -> bool:
    try:
        return "\n".encode(charset) == b"\n"
    except (UnicodeError, LookupError):
        return False


def _line_item(number: int, raw: bytes | str, charset: str, max_depth: int) -> Item:
    name = f"line {number}"
    try:
        text = raw if isinstance(raw, str) else _decode_text(raw, charset, "the line")
        text = text.rstrip("\r")
        if not text.strip():
            return Item(
                name, error=RecordError('the line is empty; expected a JSON object such as {"text": "..."}')
            )
        value = parse_json(text, max_depth)
    except json.JSONDecodeError as exc:
        return Item(name, error=RecordError(f"invalid JSON: {exc}"))
    except RequestError as exc:
        return Item(name, error=RecordError(str(exc), exc.status))
    if is_toolkit_form(value):
        return _toolkit_item(name, value)
    return _item(name, value)


TOOLKIT_NAME = "the request"


def _toolkit_item(name: str, value: dict[str, Any]) -> Item:
    try:
        return Item(name, record=read_toolkit_record(value))
    except FormError as exc:
        return Item(name, error=RecordError(str(exc)))


def parse_json(text: str, max_depth: int) -> Any:
    """``json.loads``, after refusing (400) what would make it fail as if the server were at fault.

    Python's parser recurses once per nesting level, so a body of 100,000 ``[`` raised RecursionError
    (a 500) before this check; and it raises a plain ValueError, not a JSONDecodeError, for an
    integer longer than ``sys.get_int_max_str_digits()``. JSONDecodeError is left to the callers,
    which word it for a body or a line.
    """
    depth = json_depth(text, max_depth)
    if depth > max_depth:
        raise RequestError(
            f"the JSON nests arrays and objects {depth} deep, more than this server's limit of "
            f"{max_depth} (HFSM_MAX_JSON_DEPTH)"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:  # the only other ValueError json.loads raises on a str: too many digits
        raise RequestError(
            f"invalid JSON: an integer has more than {_INT_DIGITS()} digits, more than this server "
            "reads; send it as a string"
        ) from None


def json_depth(text: str, stop_above: int = 0) -> int:
    """The deepest nesting of arrays and objects in a JSON text, found without recursing.

    Brackets inside strings do not count: escapes are removed first (outside strings a backslash
    is invalid JSON anyway), then strings (an unterminated one runs to the end), then all but
    brackets, and a running sum gives the depth, in linear time whatever the text. For invalid
    JSON the depth is at least that of its valid prefix, which is as deep as a parser gets before
    it fails. A text with at most ``stop_above`` opening brackets cannot be deeper than that, which
    is all a caller checking a limit needs to know: 0 is returned at once, without scanning.
    """
    if text.count("[") + text.count("{") <= stop_above:
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = ((codes == ord("[")) | (codes == ord("{"))).astype(np.int8) * 2 - 1
    return max(0, int(np.cumsum(steps, dtype=np.int32).max()))


def encode_response(outcomes: Sequence[Outcome], names: Sequence[str], media_type: str) -> bytes:
    """``{"predictions": [...]}`` or one JSON line per outcome (no final newline, see docs/serving.md).

    A :class:`RecordError` is written as ``{"error": "<name>: <message>"}`` in its place; callers
    answering JSON requests raise on errors before getting here.
    """
    answers = [
        {"error": f"{name}: {outcome.message}"} if isinstance(outcome, RecordError) else outcome
        for outcome, name in zip(outcomes, names, strict=True)
    ]
    if media_type in JSONLINES_TYPES:
        return "\n".join(_dumps(answer) for answer in answers).encode("utf-8")
    return _dumps({"predictions": answers}).encode("utf-8")


LINE_BREAKS_IN_TEXT = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})
"""Characters that ``str.splitlines`` (and JavaScript before ES2019) treat as line ends: escaped in
answers, so that every client counts one line per record. JSON only requires escaping controls
below U+0020, so ``json.dumps(ensure_ascii=False)`` writes them raw."""


def _dumps(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.translate(LINE_BREAKS_IN_TEXT)


def _decode_text(raw: bytes, charset: str, name: str) -> str:
    encoding = "utf-8-sig" if codecs.lookup(charset).name == "utf-8" else charset
    try:
        return raw.decode(encoding)
    except UnicodeError as exc:  # not only UnicodeDecodeError: the idna codec raises UnicodeError itself
        raise RequestError(f"{name} is not valid {charset}: {exc}") from None


def _items(values: Any, key: str) -> list[Item]:
    if not isinstance(values, list):
        raise RequestError(f"'{key}' must be an array of records")
    return [_item(f"{key}[{index}]", value) for index, value in enumerate(values)]


def _item(name: str, value: Any) -> Item:
    """A record from a string (its text), ``{"text": ...}`` or ``{"inputs": "..."}``."""
    if isinstance(value, str):
        return Item(name, record={"text": value})
    if isinstance(value, dict):
        if "text" not in value and isinstance(value.get("inputs"), str):
            value = {**value, "text": value["inputs"]}
        return Item(name, record=value)
    return Item(
        name,
        error=RecordError(
            f'a record must be a JSON object such as {{"text": "..."}} or a string, got {json_type(value)}'
        ),
    )
