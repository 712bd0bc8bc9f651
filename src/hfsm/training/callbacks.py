"""Trainer callbacks: CloudWatch-friendly log lines and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .metrics import metric_lines

log = logging.getLogger("hfsm.train")


class LogLinesCallback(TrainerCallback):
    """One plain line per logging step and one ``dev_<metric>=<value>`` line per metric.

    Carriage-return progress bars read badly in CloudWatch, and metric_definitions need regexes:
    ``step 40/1200 epoch 0.33 train_loss=0.412345 learning_rate=4.833e-05 samples_per_second=85.3
    elapsed 0:00:07 eta 0:03:31``. Throughput is that of the interval since the previous line (what
    the job does now: a slow step shows at once); the ETA extrapolates the mean time per step since
    training (or its resume) began, evaluations and checkpoints included, so it is steadier.
    Samples are training features (NER windows) of the global batch, across all processes.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.start_step = 0
        self.last_time = self.started
        self.last_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # a resumed job starts at its checkpoint's step: time and steps count from there
        self.started = self.last_time = time.monotonic()
        self.start_step = self.last_step = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if "loss" in logs:
            now = time.monotonic()
            elapsed = now - self.started
            steps_done = state.global_step - self.start_step
            eta = (
                elapsed / steps_done * max(state.max_steps - state.global_step, 0) if steps_done > 0 else 0.0
            )
            global_batch = (
                args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            )
            interval = now - self.last_time
            samples = (state.global_step - self.last_step) * global_batch
            throughput = samples / interval if interval > 0 else 0.0
            self.last_time, self.last_step = now, state.global_step
            log.info(
                "step %d/%d epoch %.2f train_loss=%.6f learning_rate=%.3e samples_per_second=%.1f "
                "elapsed %s eta %s",
                state.global_step,
                state.max_steps,
                state.epoch or 0.0,
                logs["loss"],
                logs.get("learning_rate", 0.0),
                throughput,
                self.clock(elapsed),
                self.clock(eta),
            )

    @staticmethod
    def clock(seconds: float) -> str:
        """``h:mm:ss``: an hours-long ETA reads at a glance, unlike ``eta 10843s``."""
        whole = round(max(seconds, 0.0))
        return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"

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
    """On SIGTERM (spot interruption, StopTrainingJob) save a checkpoint and stop.

    SageMaker sends SIGKILL 120 s after SIGTERM, so the checkpoint is written as soon as the step in
    progress ends: at that step's end, or right after its evaluation when the signal arrives during
    one (a checkpoint of the evaluated step, instead of one more step first). An epoch cut short by
    the signal is neither evaluated nor saved again at its end: a partial epoch's evaluation would
    only spend the grace period, and its checkpoint is already written.

    With several processes (torchrun), they must stop at the same step, or the ones still training
    would wait for the others' gradients forever; the signal reaches them at slightly different
    moments, so at each step end and evaluation they agree (any process that got it stops them all).
    """

    def __init__(self) -> None:
        self.received = False
        """This process got SIGTERM."""
        self.agreed = False
        """Some process got SIGTERM, as all processes know at the latest step end or evaluation."""
        self.saved_step: int | None = None
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self.received = True

    def _agree(self) -> bool:
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([int(self.received)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.agreed = bool(flag.item())
        else:
            self.agreed = self.received
        return self.agreed

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._agree():
            control.should_save = True
            control.should_training_stop = True

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._agree():
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.saved_step = state.global_step
        if self.agreed:
            control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.agreed and not _at_epoch_boundary(state.epoch):
            control.should_evaluate = False
            control.should_save = self.saved_step != state.global_step


def _at_epoch_boundary(epoch: float | None) -> bool:
    """Whether the Trainer's fractional epoch counter sits at the end of a whole epoch."""
    return epoch is not None and abs(epoch - round(epoch)) < 1e-6


class LogAtCheckpointCallback(TrainerCallback):
    """Log the training loss at every checkpoint, so that its log history covers each step before it.

    :func:`~hfsm.training.checkpoints.mean_training_loss` needs the loss of every step of a resumed
    job; without this, the steps since the last logging step before a checkpoint would be missing.
    Must come after the callbacks that decide to save (the Trainer's own flow, :class:`SigtermCallback`).
    """

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_save:
            control.should_log = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_save:
            control.should_log = True


class TrainingAlreadyDone(Exception):
    """Raised by :class:`ResumeAtEndCallback`: the checkpoint resumed from is at the last step."""


class ResumeAtEndCallback(TrainerCallback):
    """Keep a job resumed from the checkpoint of its last step from training one step too many.

    A job interrupted after its last step (during the final evaluation or test predictions, or killed
    while writing ``model/``) resumes from the checkpoint of that step. The Trainer checks for the end
    of training only after a step, so it would train step ``max_steps + 1`` (when ``max_steps`` is not
    a whole number of epochs); instead, training ends before its loop starts, with the model and state
    of the checkpoint loaded, and the job goes on to evaluate and write the model.
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step > 0 and state.global_step >= state.max_steps:
            raise TrainingAlreadyDone(f"step {state.global_step} of {state.max_steps}")


class PackingStateCallback(TrainerCallback, ExportableState):
    """Carry the trainer's packing decision in every checkpoint and back into a resumed job.

    :class:`~hfsm.training.trainer.JobTrainer` decides on its first conclusive batch whether training
    batches are packed; a resumed job would decide again on its own first batch, pad that batch if
    the check is inconclusive there, and so draw other dropout masks than the uninterrupted run (the
    batch's shape differs). The decision is saved with the Trainer state of each checkpoint
    (``stateful_callbacks``) and restored before the first step, unless the re-run turned packing off.
    """

    def __init__(self, trainer: Any = None) -> None:
        self.trainer = trainer

    def state(self) -> dict:
        packing = getattr(self.trainer, "packing", None)
        offset = getattr(self.trainer, "position_offset", 0)
        return {"args": {}, "attributes": {"packing": packing, "position_offset": offset}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name)
        attributes = saved.get("attributes", {}) if isinstance(saved, dict) else {}
        decided = attributes.get("packing")
        if self.trainer is not None and self.trainer.packing is None and decided is not None:
            self.trainer.packing = bool(decided)
            self.trainer.position_offset = int(attributes.get("position_offset") or 0)
            log.info("packing decision restored from the checkpoint: %s", self.trainer.packing)
        # the Trainer fails to save a checkpoint whose resumed state lacks an entry for a stateful callback
        state.stateful_callbacks[name] = self.state()
