"""The two kinds of failure the image distinguishes.

A :class:`UserError` is something the person launching the job or sending the request can fix:
bad data, a bad hyperparameter, a malformed request. Its message is written for that person and
shown as is (``output/failure``, an HTTP 4xx body). Anything else is a fault of the image itself
and is reported with its traceback in the logs.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: data, hyperparameters, configuration or an HTTP request."""


class DataError(UserError):
    """A training file that cannot be used, with the file, line (header = line 1) and column."""

    def __init__(
        self, message: str, *, path: str | None = None, row: int | None = None, field: str | None = None
    ) -> None:
        where = []
        if path is not None:
            where.append(f"file {path}")
        if row is not None:
            where.append(f"line {row}")
        if field is not None:
            where.append(f"column '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.path = path
        self.row = row
        self.field = field


class RequestError(UserError):
    """An HTTP request the server cannot answer; ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class OutputError(Exception):
    """The job's outputs (``model/``, ``output/data/``) could not be written: a full or read-only
    volume, or a path taken by something else. Not the user's data, and not a fault of the image's
    code either; the job fails (exit 2) rather than end without its artifacts."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint; a re-run resumes from it."""


class TrainingProcessesFailed(Exception):
    """A training process that torchrun started failed; the process of rank 0 wrote the reason to
    ``output/failure`` where it could (on the first host), the others only logged theirs."""

    def __init__(self, message: str, *, first_host: bool) -> None:
        super().__init__(message)
        self.first_host = first_host
