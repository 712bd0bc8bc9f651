"""The Flask application of SageMaker's inference contract: /ping, /execution-parameters, /invocations.

Every answer, errors included, is JSON. Statuses keep their meaning: 4xx are the caller's to fix
and say how; anything unexpected is a 500 with its traceback in the logs, never disguised as a 400.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..errors import RequestError, UserError
from ..inference import codecs
from .settings import ServingSettings
from .state import ModelState, PredictorLike

log = logging.getLogger("hfsm.serve")


def load_predictor(settings: ServingSettings) -> PredictorLike:
    from transformers.utils import logging as hf_logging

    from ..inference.predictor import Predictor

    hf_logging.disable_progress_bar()  # per-file bars are noise in an endpoint's logs
    return Predictor.load(settings.model_dir, settings.predict)


def create_app(
    settings: ServingSettings,
    loader: Callable[[], PredictorLike] | None = None,
    *,
    start_loading: bool = True,
) -> Flask:
    """An app whose model loads in the background from now on (or on ``app.extensions["hfsm"].start()``).

    ``loader`` defaults to loading ``settings.model_dir``; tests pass their own to control timing.
    """
    state = ModelState(
        loader or partial(load_predictor, settings),
        batch_records=settings.predict.batch_size,
        batch_wait_s=settings.batch_wait_ms / 1000,
    )
    app = Flask("hfsm")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.extensions["hfsm"] = state

    @app.get("/ping")
    def ping() -> Response:
        status = state.status
        code = {"ready": 200, "loading": 503}.get(status, 500)
        body: dict[str, Any] = {"status": status}
        if state.error is not None:
            body["error"] = state.error
        return _json(body, code)

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return _json(
            {
                "MaxConcurrentTransforms": settings.max_concurrent_transforms,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": settings.max_payload_mb,
            },
            200,
        )

    @app.post("/invocations")
    def invocations() -> Response:
        started = time.monotonic()
        predictor = state.predictor()
        with predictor.incoming():  # concurrent requests wait for this one to share a forward pass
            request_type, charset = codecs.request_media_type(request.headers.get("Content-Type"))
            response_type = codecs.response_media_type(request.headers.get("Accept"), request_type)
            decoded = codecs.decode_request(request.get_data(cache=False), request_type, charset)
            if settings.max_records is not None and len(decoded.items) > settings.max_records:
                raise RequestError(
                    f"the request holds {len(decoded.items)} records, more than this server's limit of "
                    f"{settings.max_records} (HFSM_MAX_RECORDS); split it into smaller requests",
                    413,
                )
            if not decoded.line_by_line:
                decoded.raise_first_error()
            outcomes = predictor.predict(decoded.records())
        body = decoded.respond(outcomes, response_type)
        log.debug("%d records answered in %.0f ms", len(decoded.items), (time.monotonic() - started) * 1000)
        return Response(body, status=200, mimetype=response_type)

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        return _json({"error": str(exc)}, exc.status)

    @app.errorhandler(UserError)
    def user_error(exc: UserError) -> Response:
        return _json({"error": str(exc)}, 400)

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
        return _json(
            {
                "error": f"internal server error ({type(exc).__name__}); the traceback is in the "
                "endpoint's logs"
            },
            500,
        )

    if start_loading:
        state.start()
    return app


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")
