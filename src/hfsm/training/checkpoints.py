"""Finding a checkpoint to resume from, ignoring ones cut off while being written.

A checkpoint folder is cut off when the process is killed while the Trainer writes it (SIGKILL at the
end of a spot interruption's grace period, out of memory) or when only part of it came back from S3
(SageMaker uploads ``/opt/ml/checkpoints`` file by file while the job runs). Resuming from such a
folder would fail on every re-run of the job, so a folder is used only when every file the Trainer
reads on resume is whole; otherwise the newest whole one before it is used.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("hfsm.train")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
REQUIRED = (TRAINER_STATE, "config.json")
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
"""A LoRA (peft) job's checkpoints hold the adapters instead of the model's config and weights."""
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TORCH_FILES = ("optimizer.pt", "scheduler.pt")
"""Written by ``torch.save`` (zip archives) for every checkpoint of this job (``save_only_model=False``)."""


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file: its header gives the exact size of the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            header_size = int.from_bytes(prefix, "little")
            if header_size > size - 8:
                return f"{path.name} is truncated (header of {header_size} bytes, file of {size})"
            header = json.loads(handle.read(header_size))
        end = max(
            (int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"),
            default=0,
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"{path.name} cannot be read: {exc}"
    if size != 8 + header_size + end:
        return f"{path.name} has {size} bytes, its header says {8 + header_size + end}"
    return None


def _weights_problem(folder: Path) -> str | None:
    single = folder / WEIGHTS[0]
    if single.is_file():
        return safetensors_problem(single)
    index = folder / WEIGHTS[1]
    if not index.is_file():
        return "no model.safetensors"
    try:
        weight_map = _json(index)["weight_map"]
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, Mapping) else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{index.name} cannot be read: {exc}"
    if not shards:
        return f"{index.name} names no shard"
    for shard in shards:
        problem = safetensors_problem(folder / shard)
        if problem:
            return problem
    return None


def _torch_files_problem(folder: Path, required: Sequence[str]) -> str | None:
    """``torch.save`` writes a zip archive whose directory comes last: a cut-off file has none."""
    for name in required:
        if not (folder / name).is_file():
            return f"no {name}"
    if not any(folder.glob("rng_state*.pth")):
        return "no rng_state.pth"
    for path in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):
        if not zipfile.is_zipfile(path):
            return f"{path.name} is truncated"
    return None


def incomplete_reason(folder: Path, step: int | None = None) -> str | None:
    """Why the checkpoint ``folder`` cannot be resumed from, or None when it is whole.

    The Trainer writes ``trainer_state.json`` last, so its presence alone means little once files
    arrive out of order (an S3 sync) or a file was cut off; every file read on resume is checked:
    the trainer state parses and names this step, the weights are as long as their header says,
    and the optimizer, scheduler and RNG states are whole zip archives.
    """
    adapter = (folder / ADAPTER_CONFIG).is_file()
    required = (TRAINER_STATE, ADAPTER_CONFIG) if adapter else REQUIRED
    for name in required:
        if not (folder / name).is_file():
            return f"no {name}"
    parsed = {}
    for name in required:
        try:
            parsed[name] = _json(folder / name)
        except (OSError, ValueError) as exc:
            return f"{name} cannot be read: {exc}"
    state = parsed[TRAINER_STATE]
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{TRAINER_STATE} has no global_step"
    if step is not None and state["global_step"] != step:
        return f"{TRAINER_STATE} is for step {state['global_step']}"
    weights = safetensors_problem(folder / ADAPTER_WEIGHTS) if adapter else _weights_problem(folder)
    return weights or _torch_files_problem(folder, TORCH_FILES)


def is_complete(folder: Path) -> bool:
    """A checkpoint is usable once every file the Trainer reads on resume is whole."""
    match = _CHECKPOINT.match(folder.name)
    return incomplete_reason(folder, int(match.group(1)) if match else None) is None


def latest_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest whole checkpoint in ``checkpoint_dir``; newer cut-off ones are logged and skipped."""
    if not checkpoint_dir.is_dir():
        return None
    found = []
    for child in checkpoint_dir.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    for step, folder in sorted(found, reverse=True):
        reason = incomplete_reason(folder, step)
        if reason is None:
            return folder
        log.warning("checkpoint %s is incomplete (%s): not resuming from it", folder, reason)
    return None


def foreign_checkpoint_reason(folder: Path, model_type: str, id2label: Mapping[int, str]) -> str | None:
    """Why the checkpoint in ``folder`` is not this job's, or None.

    A checkpoint prefix reused from another job (the same ``checkpoint_s3_uri`` for a new dataset) is
    resumed without a word by the Trainer when the shapes agree, and the model then carries another
    job's labels under this job's names; with other shapes it fails deep in loading. Its
    ``config.json`` says which architecture and labels it was trained for.
    """
    path = folder / "config.json"
    if not path.is_file():
        return None  # a LoRA checkpoint: the adapters only, checked by peft when loaded
    try:
        saved = _json(path)
        saved_labels = {int(key): str(name) for key, name in saved.get("id2label", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        return f"its config.json cannot be read ({exc})"
    if saved.get("model_type") != model_type:
        return f"it holds a {saved.get('model_type')} model, this job trains a {model_type} model"
    if saved_labels != dict(id2label):
        ours, theirs = sorted(id2label.values()), sorted(saved_labels.values())
        return f"it was trained for the labels {theirs[:8]}{' ...' if len(theirs) > 8 else ''}, " + (
            f"this job's are {ours[:8]}{' ...' if len(ours) > 8 else ''}"
        )
    return None


def mean_training_loss(log_history: Sequence[Mapping[str, Any]], global_step: int) -> float | None:
    """The mean training loss over all ``global_step`` steps, across resumes; None if the log has gaps.

    The Trainer's own ``train_loss`` averages the steps run by the current process only, so a job
    resumed at step 50 of 60 would report the loss of its last 10 steps. The loss is logged at each
    checkpoint (:class:`~hfsm.training.callbacks.LogAtCheckpointCallback`), so the log history that a
    checkpoint restores covers every step before it; each logged ``loss`` is the mean over the steps
    since the previous one.
    """
    total, previous = 0.0, 0
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        step = int(entry["step"])
        if step <= previous:
            continue
        total += float(entry["loss"]) * (step - previous)
        previous = step
    return total / global_step if global_step > 0 and previous == global_step else None
