"""Log lines that read well in CloudWatch: one format, one stream (stdout), no terminal escapes.

SageMaker ships a container's stdout and stderr to CloudWatch line by line, where ANSI colour codes
show up as ``[1m`` garbage and lines without a timestamp or level cannot be searched like the rest.
``transformers`` logs through a handler of its own (stderr, ``[transformers] message``) and puts
bold escapes into its weight-loading report even when no terminal is attached.
"""

from __future__ import annotations

import logging
import os
import re
import sys

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PlainText(logging.Filter):
    """Strips ANSI escape sequences from each record's message (a filter that never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b" in message:
            record.msg, record.args = _ANSI_ESCAPE.sub("", message), None
        return True


def configure_logging() -> None:
    """Our format on stdout for every logger, at ``HFSM_LOG_LEVEL`` (libraries at WARNING)."""
    logging.basicConfig(
        level=os.environ.get("HFSM_LOG_LEVEL", "INFO").upper(),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(PlainText())
    for noisy in ("transformers", "accelerate", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def route_transformers_logs() -> None:
    """Send ``transformers``' records through the root handlers (our format, stdout, no escapes)
    instead of its own stderr handler, and turn its progress bars off (carriage returns)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
