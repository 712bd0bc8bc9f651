"""Trainer callbacks: CloudWatch-friendly log lines and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from transformers import TrainerCallback

from .metrics import metric_lines

log = logging.getLogger("hfsm.train")


class LogLinesCallback(TrainerCallback):
    """One plain line per logging step and one ``dev_<metric>=<value>`` line per metric.

    Carriage-return progress bars read badly in CloudWatch, and metric_definitions need regexes.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.monotonic()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if "loss" in logs:
            elapsed = time.monotonic() - self.started
            done = max(state.global_step, 1)
            eta = elapsed / done * max(state.max_steps - state.global_step, 0)
            log.info(
                "step %d/%d epoch %.2f train_loss=%.6f learning_rate=%.3e elapsed %.0fs eta %.0fs",
                state.global_step,
                state.max_steps,
                state.epoch or 0.0,
                logs["loss"],
                logs.get("learning_rate", 0.0),
                elapsed,
                eta,
            )

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any
    ) -> None:
        if not metrics or not state.is_world_process_zero:
            return
        scores = {
            k.removeprefix("eval_"): v
            for k, v in metrics.items()
            if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))
        }
        log.info("evaluation at step %d (epoch %.2f)", state.global_step, state.epoch or 0.0)
        for line in metric_lines("dev", scores):
            log.info(line)


class SigtermCallback(TrainerCallback):
    """On SIGTERM (spot interruption, StopTrainingJob) save a checkpoint and stop at the next step."""

    def __init__(self) -> None:
        self.received = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self.received = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.received:
            control.should_save = True
            control.should_training_stop = True
