"""The micro-batcher on its own: real threads, a recording predict function, no model."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from hfsm.inference.batching import MicroBatcher


class Recorder:
    """A predict function that answers ``record * 10`` and remembers each call's records."""

    def __init__(self, delay: float = 0.0, fail_on: Any = None) -> None:
        self.calls: list[list[Any]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, records: Sequence[Any]) -> list[Any]:
        with self.lock:
            self.calls.append(list(records))
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in records:
            raise RuntimeError(f"cannot predict {self.fail_on}")
        return [record * 10 for record in records]


def test_a_lone_request_is_answered_at_once_in_order() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_records=8, max_wait_s=1.0)
    started = time.monotonic()
    assert batcher.predict([1, 2, 3]) == [10, 20, 30]
    # nothing else is on its way, so the one-second maximum wait is not spent
    assert time.monotonic() - started < 0.5
    assert recorder.calls == [[1, 2, 3]]
    assert batcher.predict([]) == []


def test_concurrent_requests_share_calls_and_each_gets_its_own_outcomes() -> None:
    recorder = Recorder(delay=0.05)  # while one call runs, the other requests queue up
    batcher = MicroBatcher(recorder, max_records=64, max_wait_s=0.01)
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda n: batcher.predict([n, n + 1000]), range(48)))
    assert answers == [[n * 10, (n + 1000) * 10] for n in range(48)]
    assert len(recorder.calls) < 48  # requests were merged
    assert max(len(call) for call in recorder.calls) > 2


def test_a_batch_never_exceeds_max_records_but_a_big_request_runs_whole() -> None:
    recorder = Recorder(delay=0.02)
    batcher = MicroBatcher(recorder, max_records=5, max_wait_s=0.01)
    with ThreadPoolExecutor(max_workers=8) as pool:
        small = [pool.submit(batcher.predict, [n, n]) for n in range(12)]
        big = pool.submit(batcher.predict, list(range(100, 120)))
        assert [future.result() for future in small] == [[n * 10, n * 10] for n in range(12)]
        assert big.result() == [n * 10 for n in range(100, 120)]
    assert [len(call) for call in recorder.calls if len(call) > 5] == [20]
    assert all(len(call) <= 5 or call == list(range(100, 120)) for call in recorder.calls)


def test_the_first_request_waits_for_one_that_is_still_being_read() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_records=8, max_wait_s=2.0)
    reading = threading.Event()

    def slow_reader() -> list[Any]:
        with batcher.incoming():
            reading.set()
            time.sleep(0.2)  # decoding a request body
            return batcher.predict([2])

    with ThreadPoolExecutor(max_workers=2) as pool:
        second = pool.submit(slow_reader)
        reading.wait(5)
        with batcher.incoming():
            first = batcher.predict([1])
        assert first == [10]
        assert second.result() == [20]
    assert recorder.calls == [[1, 2]]  # one call for both


def test_the_wait_is_bounded_by_max_wait() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_records=8, max_wait_s=0.05)
    # a request announced (by this thread) that does not arrive in time
    with batcher.incoming(), ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        assert pool.submit(batcher.predict, [1]).result(timeout=5) == [10]
        assert 0.04 <= time.monotonic() - started < 1.0


def test_a_request_that_fails_before_predicting_stops_being_waited_for() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_records=8, max_wait_s=5.0)
    with pytest.raises(ValueError), batcher.incoming():
        raise ValueError("malformed body")
    started = time.monotonic()
    assert batcher.predict([3]) == [30]
    assert time.monotonic() - started < 1.0


def test_a_fault_reaches_only_the_request_it_belongs_to() -> None:
    recorder = Recorder(delay=0.05, fail_on=13)
    batcher = MicroBatcher(recorder, max_records=64, max_wait_s=0.01)

    def call(n: int) -> Any:
        try:
            return batcher.predict([n])
        except RuntimeError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(20)))
    assert answers[13] == "cannot predict 13"
    assert [answer for n, answer in enumerate(answers) if n != 13] == [[n * 10] for n in range(20) if n != 13]
    assert batcher.predict([1]) == [10]  # the thread lives on


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_records=0, max_wait_s=0.0)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_records=1, max_wait_s=-1.0)


def test_after_concurrent_traffic_a_short_batch_waits_for_the_requests_coming_back() -> None:
    """Closed-loop clients: once two requests were in the server at once, a batch of one waits for
    the next request even before it is being read (it is on its way back from its client), and
    only until it comes: with two requests the batch is as full as traffic has been."""
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_records=8, max_wait_s=1.0)
    together = threading.Barrier(2)

    def client(n: int) -> list[Any]:
        with batcher.incoming():
            together.wait(5)
            return batcher.predict([n])

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(client, range(2))) == [[0], [10]]

    def late_client() -> list[Any]:
        time.sleep(0.1)  # not yet read when the first request's batch is formed
        with batcher.incoming():
            return batcher.predict([5])

    with ThreadPoolExecutor(max_workers=1) as pool:
        late = pool.submit(late_client)
        started = time.monotonic()
        with batcher.incoming():
            assert batcher.predict([4]) == [40]
        assert late.result() == [50]
    assert recorder.calls[-1] == [4, 5], "one call for both"
    assert time.monotonic() - started < 0.8, "it waited for the request, not the whole maximum"


def test_one_request_at_a_time_is_never_delayed() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_records=8, max_wait_s=1.0)
    started = time.monotonic()
    for n in range(5):
        with batcher.incoming():
            assert batcher.predict([n]) == [n * 10]
    assert time.monotonic() - started < 0.5
    assert recorder.calls == [[n] for n in range(5)]
