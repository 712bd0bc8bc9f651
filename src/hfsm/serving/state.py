"""The model of one worker, loaded in the background so that /ping answers from the first second.

SageMaker pings the container from the moment it starts and gives up on a container that does
not answer; loading a large model takes longer than a ping's timeout. So each worker starts
answering at once (503 while loading) and only says 200 once the model is loaded *and* a real
prediction (the warm-up) has succeeded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import RequestError
from ..inference.batching import MicroBatcher
from ..inference.predictor import Outcome, RecordError

log = logging.getLogger("hfsm.serve")

LOADING, READY, FAILED = "loading", "ready", "failed"


class PredictorLike(Protocol):
    def predict(self, records: Sequence[Any]) -> list[Outcome]: ...

    def first_error(self, records: Sequence[Any]) -> tuple[int, RecordError] | None: ...

    def warmup(self) -> None: ...


class ModelState:
    """Loads once in a daemon thread (a SIGTERM during loading must not wait for it).

    Requests reach the model through a :class:`MicroBatcher`, so that concurrent requests of one
    worker share forward passes (at most ``batch_records`` records, waiting at most
    ``batch_wait_s`` for requests already being read).
    """

    def __init__(
        self,
        loader: Callable[[], Any],
        *,
        batch_records: int,
        batch_wait_s: float,
        batched: bool = True,
    ) -> None:
        self._loader = loader
        self._batched = batched
        self._batch_records = batch_records
        self._batch_wait_s = batch_wait_s
        self._predictor: Any = None
        self._error: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="hfsm-model-loader", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once loading has finished, successfully or not."""
        return self._done.wait(timeout)

    @property
    def status(self) -> str:
        if self._predictor is not None:
            return READY
        return FAILED if self._error is not None else LOADING

    @property
    def error(self) -> str | None:
        return self._error

    def predictor(self) -> Any:
        """The ready model (behind its batcher, unless custom code handles requests), or the status
        a request must get instead."""
        if self._predictor is not None:
            return self._predictor
        if self._error is not None:
            raise RequestError(f"the model failed to load: {self._error}", 500)
        raise RequestError("the model is still loading; retry shortly", 503)

    def _load(self) -> None:
        started = time.monotonic()
        try:
            predictor = self._loader()
            predictor.warmup()
        except BaseException as exc:
            log.exception("the model failed to load")
            self._error = f"{type(exc).__name__}: {exc}"
        else:
            self._predictor = (
                MicroBatcher(
                    predictor.predict,
                    self._batch_records,
                    self._batch_wait_s,
                    first_error=predictor.first_error,
                )
                if self._batched
                else predictor
            )
            log.info("model ready (loaded and warmed up in %.1fs)", time.monotonic() - started)
        finally:
            self._done.set()
