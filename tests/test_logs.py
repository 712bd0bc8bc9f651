"""Log lines as CloudWatch shows them: one format on stdout, transformers' records included, no escapes."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_transformers_records_come_out_in_our_format_on_stdout_without_escapes() -> None:
    script = textwrap.dedent(
        """
        from hfsm.logs import configure_logging, route_transformers_logs
        from transformers.utils import logging as hf_logging

        configure_logging()
        route_transformers_logs()
        report = hf_logging.get_logger("transformers.modeling_utils")
        report.warning("\\x1b[1mBertForTokenClassification LOAD REPORT\\x1b[0m from: /opt/ml/model")
        report.info("below the library level: not shown")
        hf_logging.get_logger("transformers.trainer").warning("%s of %d", "\\x1b[31mred\\x1b[0m", 2)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={"CI": "true"}
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "transformers' own stderr handler is off"
    lines = done.stdout.splitlines()
    assert len(lines) == 2, lines  # once each, although CI=true makes transformers propagate too
    assert lines[0].endswith(
        " WARNING transformers.modeling_utils: BertForTokenClassification LOAD REPORT from: /opt/ml/model"
    )
    assert lines[1].endswith(" WARNING transformers.trainer: red of 2")
    assert "\x1b" not in done.stdout
