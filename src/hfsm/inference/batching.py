"""Dynamic batching across concurrent requests inside one serving worker.

A real-time endpoint mostly receives single-record requests. One record per forward pass leaves
most of a CPU's (or GPU's) throughput unused, while a forward pass over eight short records costs
little more than over one. So every request hands its records to one batching thread, which
predicts the records of all the requests waiting at that moment together, and gives each request
its own outcomes back.

The wait is adaptive: the batcher knows how many requests have entered the server and not yet
reached it (:meth:`MicroBatcher.incoming`, around decoding), and it waits for them, at most
``max_wait_s``, only while there are some. It also remembers how many requests were in the server
at once during the last second or two: a batch with fewer requests than that waits, at most
``max_wait_s``, for the others, which are on their way back from clients that just got their
answers. Without this, eight closed-loop clients settle into two alternating batches of four
(measured on CoNLL sentences: batches of four predict 194 records/s, of eight 243). A lone request
is predicted at once, so batching costs nothing at concurrency 1; under load, batches fill up to
``max_records``.

Nothing here knows about HTTP or models: ``predict`` is any function from records to one outcome
per record, in order (the :class:`~hfsm.inference.predictor.Predictor`'s ``predict``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

log = logging.getLogger("hfsm.batching")

O = TypeVar("O")  # noqa: E741 - one outcome per record


class BatcherClosed(RuntimeError):
    """:meth:`MicroBatcher.predict` after :meth:`MicroBatcher.close`."""


def _closed_predict(records: Sequence[Any]) -> list[Any]:
    raise BatcherClosed("the model was unloaded")


class _Job(Generic[O]):
    """One request's records, and where its outcomes (or the fault that prevented them) go."""

    __slots__ = ("done", "error", "outcomes", "records")

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records
        self.outcomes: list[O] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class MicroBatcher(Generic[O]):
    """Thread-safe front of ``predict`` that merges the records of concurrent callers.

    ``max_records`` bounds a merged batch (a single larger request still runs, alone and whole);
    ``max_wait_s`` bounds how long the first request of a batch waits for others that are known
    to be on their way.
    """

    def __init__(
        self,
        predict: Callable[[Sequence[Any]], list[O]],
        max_records: int,
        max_wait_s: float,
        first_error: Callable[[Sequence[Any]], tuple[int, Any] | None] | None = None,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self._predict = predict
        self._first_error = first_error
        self.max_records = max_records
        self.max_wait_s = max_wait_s
        self._queue: deque[_Job[O]] = deque()
        self._incoming = 0
        self._in_flight = 0
        # most requests in flight at once during this second and the one before (see _concurrency)
        self._second = 0
        self._peak = 0
        self._previous_peak = 0
        self._announced = threading.local()
        self._changed = threading.Condition()
        self._closed = False
        # a daemon: it ends with the worker process (after gunicorn has drained the requests) or at close()
        self._thread = threading.Thread(target=self._run, name="hfsm-batcher", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = None) -> bool:
        """Stop once the requests already queued are answered; later calls to :meth:`predict` raise
        :class:`BatcherClosed`. True when the thread has ended within ``timeout``.

        The thread holds ``predict`` (and with it the model): a multi-model endpoint that unloads a
        model must end it, or the model's memory would never be freed.
        """
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request as on its way (being read and decoded) until it calls :meth:`predict`.

        The batcher waits for such requests before it starts a batch; without this mark it
        batches only what has already been queued.
        """
        with self._changed:
            self._incoming += 1
            self._in_flight += 1
            self._concurrency()  # rolls the one-second buckets over
            self._peak = max(self._peak, self._in_flight)
        self._announced.pending = True
        try:
            yield
        finally:
            self._arrived()
            with self._changed:
                self._in_flight -= 1

    def _concurrency(self) -> int:
        """Most requests in flight at once during the current and the previous whole second.

        Called with the lock held. Two one-second buckets make a window of one to two seconds: long
        enough to span many batches, short enough that a batch stops waiting soon after a burst.
        """
        second = int(time.monotonic())
        if second != self._second:
            self._previous_peak = self._peak if second == self._second + 1 else 0
            self._peak = self._in_flight
            self._second = second
        return max(self._peak, self._previous_peak)

    def _arrived(self) -> None:
        """The calling thread's request is no longer on its way (queued, or given up)."""
        if getattr(self._announced, "pending", False):
            self._announced.pending = False
            with self._changed:
                self._incoming -= 1
                self._changed.notify_all()

    def first_error(self, records: Sequence[Any]) -> tuple[int, Any] | None:
        """``first_error`` of the model, in the caller's thread: the first record it cannot predict
        (index, reason), checked before a request that would fail on it waits for forward passes."""
        check = self._first_error
        return None if check is None else check(records)

    def predict(self, records: Sequence[Any]) -> list[O]:
        """The outcomes of ``records``, in order; a fault of ``predict`` is raised in every caller it hit."""
        self._arrived()
        if not records:
            return []
        job: _Job[O] = _Job(records)
        with self._changed:
            if self._closed:
                raise BatcherClosed("the model was unloaded")
            self._queue.append(job)
            self._changed.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.outcomes is not None
        return job.outcomes

    # ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while jobs := self._next_batch():
            self._execute(jobs)
        # closed: whoever still holds the batcher no longer holds the model
        self._predict, self._first_error = _closed_predict, None

    def _next_batch(self) -> list[_Job[O]]:
        """Jobs for one forward call: the first queued one, then others while they fit and come;
        none once closed with nothing queued."""
        with self._changed:
            while not self._queue:
                if self._closed:
                    return []
                self._changed.wait()
            jobs = [self._queue.popleft()]
            size = len(jobs[0].records)
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_records:
                if self._queue:
                    if size + len(self._queue[0].records) > self.max_records:
                        break  # it starts the next batch
                    job = self._queue.popleft()
                    jobs.append(job)
                    size += len(job.records)
                    continue
                remaining = deadline - time.monotonic()
                expected = self._incoming > 0 or len(jobs) < self._concurrency()
                if not expected or remaining <= 0:
                    break
                self._changed.wait(remaining)
            return jobs

    def _execute(self, jobs: list[_Job[O]]) -> None:
        records = [record for job in jobs for record in job.records]
        if len(jobs) > 1:
            log.debug("%d requests share one forward pass (%d records)", len(jobs), len(records))
        try:
            outcomes = self._predict(records)
            if len(outcomes) != len(records):
                raise RuntimeError(f"predict returned {len(outcomes)} outcomes for {len(records)} records")
        except BaseException as exc:  # the callers get the fault; the thread lives on
            if len(jobs) > 1:
                # One request's records must not fail the others': retry each request alone.
                log.warning("a batch of %d requests failed (%s); predicting them one by one", len(jobs), exc)
                for job in jobs:
                    self._execute([job])
                return
            jobs[0].error = exc
            jobs[0].done.set()
            return
        start = 0
        for job in jobs:
            job.outcomes = outcomes[start : start + len(job.records)]
            start += len(job.records)
            job.done.set()
