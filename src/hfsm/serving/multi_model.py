"""The Flask application of a multi-model endpoint: SageMaker's multi-model contract for custom
containers, over the same decoding, batching and errors as a single-model endpoint.

Routes: ``POST /models`` (load), ``GET /models`` (list, paginated), ``GET /models/<name>``,
``DELETE /models/<name>`` (unload), ``POST /models/<name>/invoke`` (predict, exactly what
``/invocations`` answers for one model), and ``/ping``, which is 200 as soon as the server runs: it
holds no model until the platform loads one.

One gunicorn worker serves them all, so that each model is in memory once and a load, an unload or
the list is the same for every request (requests to several workers would each see their own). The
worker uses every core through torch's or ONNX Runtime's threads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, request

from ..errors import RequestError
from ..inference.batching import BatcherClosed
from ..inference.codecs import parse_json
from .app import answer_invocation, base_app, json_response, load_predictor, read_body
from .registry import ModelRegistry
from .settings import ServingSettings
from .state import PredictorLike

DEFAULT_PAGE_SIZE = 100
MAX_NAME_BYTES = 1024
"""Longest model name, percent-encoded: gunicorn refuses request lines over 4094 bytes (414), and a
model loaded under a longer name could never be invoked nor unloaded."""


def create_multi_model_app(
    settings: ServingSettings,
    loader: Callable[[Path], PredictorLike] | None = None,
    available_memory: Callable[[], int | None] | None = None,
) -> Flask:
    """``loader`` defaults to loading a model folder with ``settings.predict``; ``available_memory``
    to what the container has left (tests pass their own)."""
    registry = ModelRegistry(
        loader or partial(load_predictor, options=settings.predict),
        settings.predict,
        batch_records=settings.merged_records,
        batch_wait_s=settings.batch_wait_ms / 1000,
        memory_limit_bytes=settings.models_memory_mb * 2**20 if settings.models_memory_mb else None,
        **({"available_memory": available_memory} if available_memory is not None else {}),
        state_file=settings.models_state_file,
    )
    app = base_app(settings)
    app.extensions["hfsm"] = registry
    lost = registry.to_restore()
    if lost:  # this worker replaces one that died: SageMaker still routes to the models it had
        registry.restore_in_background(lost)

    @app.get("/ping")
    def ping() -> Response:
        if registry.restoring:
            return json_response({"status": "loading", "models": len(registry)}, 503)
        return json_response({"status": "ready", "models": len(registry)}, 200)

    @app.post("/invocations")
    def invocations() -> Response:
        raise RequestError(
            "this is a multi-model endpoint: requests name their model (TargetModel in InvokeEndpoint, "
            "POST /models/<name>/invoke in the container)",
            404,
        )

    @app.post("/models")
    def load() -> Response:
        name, url = load_request(read_body(settings.max_payload_bytes), settings.max_json_depth)
        model = registry.load(name, url)
        return json_response({"status": f"model {name!r} loaded", **model.description()}, 200)

    @app.get("/models")
    def list_models() -> Response:
        limit = page_size(request.args.get("limit"))
        models, token = registry.page(limit, request.args.get("next_page_token") or None)
        body: dict[str, Any] = {"models": [{"modelName": m.name, "modelUrl": m.url} for m in models]}
        if token is not None:
            body["nextPageToken"] = token
        return json_response(body, 200)

    @app.get("/models/<name>")
    def describe(name: str) -> Response:
        return json_response(registry.get(name).description(), 200)

    @app.delete("/models/<name>")
    def unload(name: str) -> Response:
        registry.unload(name)
        return json_response({"status": f"model {name!r} unloaded"}, 200)

    @app.post("/models/<name>/invoke")
    def invoke(name: str) -> Response:
        try:
            return answer_invocation(registry.get(name).predictor, settings)
        except BatcherClosed:
            raise RequestError(f"model {name!r} was unloaded while this request waited", 404) from None

    return app


def load_request(body: bytes, max_depth: int) -> tuple[str, str]:
    """``model_name`` and ``url`` of a Load Model request, or a 400 that says what is wrong."""
    try:
        document = parse_json(body.decode("utf-8"), max_depth)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"a Load Model request is a JSON object with model_name and url: {exc}") from None
    if not isinstance(document, dict):
        raise RequestError("a Load Model request is a JSON object with model_name and url")
    fields = []
    for key in ("model_name", "url"):
        value = document.get(key)
        if not isinstance(value, str) or not value.strip():
            raise RequestError(f"a Load Model request needs {key!r}, a non-empty string")
        fields.append(value)
    if len(quote(fields[0], safe="")) > MAX_NAME_BYTES:
        raise RequestError(
            f"model_name of {len(fields[0])} characters: longer than {MAX_NAME_BYTES} bytes in a URL, it "
            "could not be addressed as /models/<name> (HTTP request lines end at 4 KB)"
        )
    if "/" in fields[0]:
        raise RequestError(
            f"model_name {fields[0]!r}: a name with '/' could not be addressed as /models/<name>"
        )
    return fields[0], fields[1]


def page_size(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_PAGE_SIZE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise RequestError(f"limit={raw!r}: expected a positive number of models per page")
    return value
