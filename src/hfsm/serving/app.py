"""The Flask application of SageMaker's inference contract: /ping, /execution-parameters, /invocations
(and the multi-model routes of :mod:`.multi_model`, on the same base).

Every answer, errors included, is JSON. Statuses keep their meaning: 4xx are the caller's to fix
and say how; anything unexpected is a 500 with its traceback in the logs, never disguised as a 400.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from ..errors import RequestError, UserError
from ..inference import codecs
from ..inference.batching import MicroBatcher
from ..inference.predictor import Outcome, PredictOptions
from .settings import ServingSettings
from .state import ModelState, PredictorLike
from .user_code import Handler, PipelineModel, UserCode

log = logging.getLogger("hfsm.serve")

MAX_DISCARDED_BYTES = 100 * 1024 * 1024
"""Largest refused body that is read and thrown away to keep its connection usable (see
:func:`discard_unread_body`): 100 MB is the largest MaxPayloadInMB SageMaker lets a job ask for."""
DISCARD_SECONDS = 5.0
"""Longest time spent reading a refused body, so that a client trickling one cannot hold a thread."""


def load_predictor(model_dir: Path, options: PredictOptions) -> PredictorLike:
    from ..inference.predictor import Predictor
    from ..inference.runtime import resolve_runtime
    from ..logs import route_transformers_logs

    if resolve_runtime(model_dir, options) == "torch":
        # our line format on stdout; no per-file progress bars in an endpoint's logs. Not for ONNX
        # Runtime: importing transformers (and with it torch) would take most of the worker's start
        route_transformers_logs()
    return Predictor.load(model_dir, options)


def load_user_code(code: UserCode, settings: ServingSettings) -> Handler:
    """The script's hooks, its ``model_fn``'s model or ours (as a pipeline-like callable)."""

    def our_model(model_dir: Path) -> PipelineModel:
        return PipelineModel(load_predictor(model_dir, settings.predict))

    return Handler(code, settings.model_dir, our_model)


def answer_with_user_code(handler: Handler, settings: ServingSettings) -> Response:
    """input_fn -> predict_fn -> output_fn (or transform_fn) of the script, ours where it has none."""
    content_type = request.headers.get("Content-Type") or codecs.JSON
    accept = request.headers.get("Accept") or ""
    if not accept.strip() or accept.strip() in ("*/*", "application/*"):
        accept = content_type
    body, media_type = handler.invoke(read_body(settings.max_payload_bytes), content_type, accept)
    return Response(body, status=200, mimetype=media_type or codecs.JSON)


def create_app(
    settings: ServingSettings,
    loader: Callable[[], PredictorLike] | None = None,
    *,
    start_loading: bool = True,
) -> Flask:
    """An app whose model loads in the background from now on (or on ``app.extensions["hfsm"].start()``).

    ``loader`` defaults to loading ``settings.model_dir``; tests pass their own to control timing.
    """
    code = settings.user_code
    if loader is None and code is not None:
        loader = partial(load_user_code, code, settings)
    state = ModelState(
        loader or partial(load_predictor, settings.model_dir, settings.predict),
        batch_records=settings.merged_records,
        batch_wait_s=settings.batch_wait_ms / 1000,
        batched=code is None,
    )
    app = base_app(settings)
    app.extensions["hfsm"] = state

    @app.get("/ping")
    def ping() -> Response:
        status = state.status
        code = {"ready": 200, "loading": 503}.get(status, 500)
        body: dict[str, Any] = {"status": status}
        if state.error is not None:
            body["error"] = state.error
        return json_response(body, code)

    @app.post("/invocations")
    def invocations() -> Response:
        if code is not None:
            return answer_with_user_code(state.predictor(), settings)
        return answer_invocation(state.predictor(), settings)

    if start_loading:
        state.start()
    return app


def base_app(settings: ServingSettings) -> Flask:
    """What every endpoint answers the same way, with one model or several: the execution parameters,
    the statuses of errors, and connections kept usable after a refused body."""
    app = Flask("hfsm")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return json_response(
            {
                "MaxConcurrentTransforms": settings.max_concurrent_transforms,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": settings.max_payload_mb,
            },
            200,
        )

    @app.after_request
    def keep_connection_usable(response: Response) -> Response:
        discard_unread_body()
        return response

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        return json_response({"error": str(exc)}, exc.status)

    @app.errorhandler(UserError)
    def user_error(exc: UserError) -> Response:
        return json_response({"error": str(exc)}, 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = exc.get_response()  # keeps headers such as Allow on a 405
        message = exc.description or exc.name
        if exc.code == 413:
            message = (
                f"the request body is larger than {settings.max_payload_mb} MB (MaxPayloadInMB, set by "
                "SAGEMAKER_MAX_PAYLOAD_IN_MB); split it into smaller requests"
            )
        response.set_data(json.dumps({"error": message}))
        response.mimetype = "application/json"
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("internal error answering %s %s", request.method, request.path)
        return json_response(
            {
                "error": f"internal server error ({type(exc).__name__}); the traceback is in the "
                "endpoint's logs"
            },
            500,
        )

    return app


def answer_invocation(predictor: MicroBatcher[Outcome], settings: ServingSettings) -> Response:
    """Decode the request, predict its records (merged with concurrent requests'), encode the answer."""
    started = time.monotonic()
    with predictor.incoming():  # concurrent requests wait for this one to share a forward pass
        request_type, charset = codecs.request_media_type(request.headers.get("Content-Type"))
        response_type = codecs.response_media_type(request.headers.get("Accept"), request_type)
        decoded = codecs.decode_request(
            read_body(settings.max_payload_bytes), request_type, charset, settings.max_json_depth
        )
        if settings.max_records is not None and decoded.texts > settings.max_records:
            raise RequestError(
                f"the request holds {decoded.texts} records, more than this server's limit of "
                f"{settings.max_records} (HFSM_MAX_RECORDS); split it into smaller requests",
                413,
            )
        records = decoded.records()
        if not decoded.line_by_line:  # one bad record fails the request: before any forward pass
            decoded.raise_first_error()
            found = predictor.first_error(records)
            if found is not None:
                index, error = found
                raise RequestError(f"{decoded.items[index].name}: {error.message}", error.status)
        outcomes = predictor.predict(records)
    body = decoded.respond(outcomes, response_type)
    log.debug("%d records answered in %.0f ms", len(decoded.items), (time.monotonic() - started) * 1000)
    return Response(body, status=200, mimetype=response_type)


def read_body(max_bytes: int) -> bytes:
    """The whole request body, or a 413 when it is larger than ``max_bytes``, or a 400 when its HTTP
    framing is broken.

    A body with a Content-Length above the limit is refused by werkzeug before it is read. A chunked
    body has no length up front: werkzeug stops reading it at the limit and returns what it read
    without a word, which would answer the first megabyte of an oversized JSON Lines request and drop
    its other lines; a byte left in the stream past the limit makes it a 413. A malformed chunk
    (bad size, missing terminator) makes gunicorn raise a ParseException, which werkzeug does not
    turn into a 400 as it does a disconnection (OSError), so it is turned into one here. And as
    gunicorn ends the stream itself, werkzeug does not check that the body has its Content-Length:
    a body shorter than announced is refused here, not answered with the lines it did bring.
    """
    try:
        body = request.get_data(cache=False)
        if request.content_length is not None and len(body) < request.content_length:
            raise ClientDisconnected(
                f"the request body ended after {len(body)} bytes of the {request.content_length} "
                "its Content-Length announced"
            )
        if request.content_length is None and len(body) >= max_bytes:
            try:
                beyond = request.environ["wsgi.input"].read(1)
            except OSError:  # the client went away: what werkzeug answers for a short body
                raise ClientDisconnected() from None
            if beyond:
                raise RequestEntityTooLarge()
    except ParseException as exc:
        raise RequestError(f"the request body is not valid HTTP ({type(exc).__name__}: {exc})") from None
    g.hfsm_body_read = True  # else discard_unread_body reads what is left of a refused one
    return body


def discard_unread_body() -> None:
    """Read and drop what remains of a body the answer did not need (at most MAX_DISCARDED_BYTES).

    A request refused before its body is read (413 on its Content-Length, 415 or 406 on its headers,
    503 while loading) leaves the body on the socket. gunicorn then reads 64 KiB of it at most and
    closes the connection, after its answer has announced ``Connection: keep-alive`` (it ignores a
    ``Connection`` header set by the application), so the client's next request on that connection
    failed with "connection closed without response": the load test's 1.1 MB requests made one such
    error every few of them. Reading a refused body costs time, never memory (it is dropped chunk by
    chunk); a larger or slower one is left to gunicorn, which closes the connection.
    """
    if g.get("hfsm_body_read") or request.content_length == 0:
        return
    g.hfsm_body_read = True
    environ = request.environ
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if environ.get("wsgi.input_terminated"):
        stream = environ["wsgi.input"]  # the server ends it at the body's end (gunicorn does)
    elif request.content_length is not None and not chunked:
        stream = LimitedStream(environ["wsgi.input"], request.content_length)
    else:
        return  # no length known and no server to end the stream: reading could block
    deadline = time.monotonic() + DISCARD_SECONDS
    discarded = 0
    try:
        while discarded < MAX_DISCARDED_BYTES and time.monotonic() < deadline:
            chunk = stream.read(64 * 1024)
            if not chunk:
                return
            discarded += len(chunk)
    except (OSError, ClientDisconnected, ParseException):
        return  # the client went away or broke the framing: gunicorn closes the connection


def json_response(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")
