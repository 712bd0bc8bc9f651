"""Tiny stdlib HTTP client for the harness (the image needs nothing beyond its runtime requirements).

Requests to loopback addresses bypass any ``*_proxy`` environment variables: a proxy cannot reach
a server listening on this machine's 127.0.0.1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


class HttpError(Exception):
    """A response with an error status; ``body`` is the server's explanation."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"{url}: HTTP {status}: {body.strip()[:2000]}")
        self.url = url
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urlsplit(url).hostname or ""
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60.0
) -> Response:
    """GET (``data`` None) or POST; an error status raises :class:`HttpError`, a dead server ``OSError``."""
    req = urllib.request.Request(
        url, data=data, headers=headers or {}, method="GET" if data is None else "POST"
    )
    try:
        with _opener(url).open(req, timeout=timeout) as reply:
            return Response(reply.status, reply.headers.get("Content-Type", ""), reply.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", errors="replace")
        raise HttpError(url, exc.code, body) from None


def get_json(url: str, timeout: float = 10.0) -> Any:
    return json.loads(request(url, timeout=timeout).body)


def is_up(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 200 (used for ``/ping``)."""
    try:
        return request(url, timeout=timeout).status == 200
    except (OSError, HttpError):
        return False
