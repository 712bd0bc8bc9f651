"""Progress of a batch transform: a bar on a terminal, a plain log line now and then elsewhere (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


class Progress:
    """Counts records done out of ``total``; thread-safe enough for one writer (the ordered result loop)."""

    def __init__(
        self, total: int, stream: TextIO | None = None, interval_s: float = 10.0, tty: bool | None = None
    ) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last_shown = self.started

    def advance(self, records: int) -> None:
        self.done += records
        now = time.monotonic()
        if self.tty:
            self._draw(now)
        elif now - self._last_shown >= self.interval_s:
            self._last_shown = now
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def finish(self) -> None:
        now = time.monotonic()
        if self.tty:
            self._draw(now)
            self.stream.write("\n")
        else:
            self.stream.write(self._line(now) + "\n")
        self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"transform: {self.done}/{self.total} records ({percent:.0f}%), "
            f"{self.done / elapsed:.1f} records/s, {elapsed:.0f}s"
        )

    def _draw(self, now: float) -> None:
        filled = int(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {self._line(now).removeprefix('transform: ')}")
        self.stream.flush()
