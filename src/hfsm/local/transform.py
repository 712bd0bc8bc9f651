"""``hfsm local transform``: a SageMaker Batch Transform job against a running model server.

It does what SageMaker's transform agent does for ``SplitType=Line`` and ``AssembleWith=Line``: ask
the container for ``/execution-parameters``, split each input file into line records, pack
consecutive records into payloads of at most ``MaxPayloadInMB`` (``MULTI_RECORD``) or send them one
by one (``SINGLE_RECORD``), keep ``MaxConcurrentTransforms`` requests in flight, and write
``NAME.out`` with one output line per input record, in input order. Blank lines are not records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from .http import HttpError, request
from .progress import Progress

MB = 1024 * 1024
STRATEGIES = ("MULTI_RECORD", "SINGLE_RECORD")


@dataclass(frozen=True)
class ExecutionParameters:
    """What ``GET /execution-parameters`` answers; SageMaker's own defaults when the container has none."""

    max_concurrent_transforms: int = 1
    batch_strategy: str = "MULTI_RECORD"
    max_payload_mb: int = 6

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionParameters:
        params = cls(
            max_concurrent_transforms=int(data.get("MaxConcurrentTransforms", 1)),
            batch_strategy=str(data.get("BatchStrategy", "MULTI_RECORD")).upper(),
            max_payload_mb=int(data.get("MaxPayloadInMB", 6)),
        )
        params.check()
        return params

    def check(self) -> None:
        if self.batch_strategy not in STRATEGIES:
            raise UserError(f"BatchStrategy {self.batch_strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if self.max_concurrent_transforms < 1:
            raise UserError("MaxConcurrentTransforms must be at least 1")
        if not 0 <= self.max_payload_mb <= 100:
            raise UserError("MaxPayloadInMB must be between 0 (no limit) and 100")


def fetch_execution_parameters(endpoint: str) -> ExecutionParameters:
    """The container's preferred settings; a container without the route (404) gets SageMaker's defaults."""
    try:
        response = request(f"{endpoint}/execution-parameters", timeout=30)
    except HttpError as exc:
        if exc.status == 404:
            return ExecutionParameters()
        raise
    return ExecutionParameters.from_json(json.loads(response.body))


def split_records(data: bytes) -> list[bytes]:
    """``SplitType=Line``: one record per non-blank line, line ending removed (``\\n`` or ``\\r\\n``)."""
    return [line for line in (raw.rstrip(b"\r") for raw in data.split(b"\n")) if line.strip()]


def payload(records: Sequence[bytes]) -> bytes:
    """Records joined the way SageMaker joins them for ``SplitType=Line``: each one ends with a newline."""
    return b"".join(record + b"\n" for record in records)


def pack_records(records: Sequence[bytes], strategy: str, max_payload_bytes: int) -> Iterator[list[bytes]]:
    """Group consecutive records into payloads; ``max_payload_bytes`` 0 means no limit.

    A record that alone exceeds the limit fails the job, as it does on SageMaker (raise MaxPayloadInMB).
    """
    batch: list[bytes] = []
    size = 0
    for number, record in enumerate(records, start=1):
        record_size = len(record) + 1
        if max_payload_bytes and record_size > max_payload_bytes:
            raise UserError(
                f"record {number} is {record_size} bytes, more than MaxPayloadInMB "
                f"({max_payload_bytes} bytes); raise --max-payload-mb"
            )
        if batch and (
            strategy == "SINGLE_RECORD" or (max_payload_bytes and size + record_size > max_payload_bytes)
        ):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record_size
    if batch:
        yield batch


@dataclass(frozen=True)
class Invoker:
    """POSTs payloads to ``/invocations`` (or ``path``: ``/models/<name>/invoke`` on a multi-model
    endpoint); retries a dead connection or a 5xx like SageMaker does."""

    endpoint: str
    content_type: str
    accept: str
    timeout_s: float = 600.0
    max_retries: int = 3
    path: str = "/invocations"

    def __call__(self, records: list[bytes]) -> list[bytes]:
        headers = {"Content-Type": self.content_type, "Accept": self.accept}
        body = payload(records)
        for attempt in range(self.max_retries + 1):
            try:
                response = request(
                    f"{self.endpoint}{self.path}", data=body, headers=headers, timeout=self.timeout_s
                )
                break
            except HttpError as exc:
                if exc.status < 500 or attempt == self.max_retries:
                    raise UserError(
                        f"{self.path} failed for a payload of {len(records)} record(s): {exc}"
                    ) from exc
            except OSError as exc:
                if attempt == self.max_retries:
                    raise UserError(f"{self.path} could not be reached at {self.endpoint}: {exc}") from exc
            time.sleep(min(2**attempt, 8))
        # "\n" only: str.splitlines also breaks at U+2028, U+0085, ... which a text may hold
        text = response.body.decode("utf-8").removesuffix("\n")
        lines = text.split("\n") if text else []
        if len(lines) != len(records):
            raise UserError(
                f"{self.path} answered {len(lines)} line(s) for {len(records)} record(s); "
                "AssembleWith=Line needs one output line per input line (is --accept a lines format?)"
            )
        return [line.encode("utf-8") for line in lines]


def input_files(source: Path) -> list[tuple[Path, Path]]:
    """(file, name relative to the input) pairs: one file, or every file under a folder (an S3 prefix)."""
    if source.is_file():
        return [(source, Path(source.name))]
    if not source.is_dir():
        raise UserError(f"--input {source} does not exist")
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserError(f"--input {source} holds no file")
    return [(path, path.relative_to(source)) for path in files]


@dataclass(frozen=True)
class TransformResult:
    outputs: list[Path]
    records: int
    requests: int
    seconds: float


def transform(
    source: Path, output: Path, invoke: Invoker, params: ExecutionParameters, progress_stream: Any = None
) -> TransformResult:
    """Transform every input file into ``OUTPUT/NAME.out``; output lines follow input order exactly."""
    params.check()
    started = time.monotonic()
    files = input_files(source)
    loaded = [(path, name, split_records(path.read_bytes())) for path, name in files]
    limit = params.max_payload_mb * MB
    progress = Progress(sum(len(records) for _, _, records in loaded), stream=progress_stream)
    outputs: list[Path] = []
    requests = 0
    with ThreadPoolExecutor(max_workers=params.max_concurrent_transforms) as pool:
        try:
            for _path, name, records in loaded:
                batches = list(pack_records(records, params.batch_strategy, limit))
                target = output / name.parent / f"{name.name}.out"
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                with partial.open("wb") as handle:
                    for batch, lines in zip(batches, pool.map(invoke, batches), strict=True):
                        handle.write(payload(lines))
                        progress.advance(len(batch))
                partial.replace(target)
                requests += len(batches)
                outputs.append(target)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # a failed job stops sending requests
            raise
    progress.finish()
    return TransformResult(outputs, progress.total, requests, time.monotonic() - started)


def with_overrides(
    params: ExecutionParameters, max_concurrent: int | None, strategy: str | None, max_payload_mb: int | None
) -> ExecutionParameters:
    """The job's own settings win over the container's, as in CreateTransformJob."""
    changes: dict[str, Any] = {}
    if max_concurrent is not None:
        changes["max_concurrent_transforms"] = max_concurrent
    if strategy is not None:
        changes["batch_strategy"] = strategy.upper()
    if max_payload_mb is not None:
        changes["max_payload_mb"] = max_payload_mb
    return replace(params, **changes)
