"""Finding a checkpoint to resume from, ignoring ones cut off while being written."""

from __future__ import annotations

import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
REQUIRED = ("trainer_state.json", "config.json")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def is_complete(folder: Path) -> bool:
    """A checkpoint is usable once the Trainer wrote its state, config and weights."""
    return all((folder / name).is_file() for name in REQUIRED) and any(
        (folder / name).is_file() for name in WEIGHTS
    )


def latest_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    if not checkpoint_dir.is_dir():
        return None
    found = []
    for child in checkpoint_dir.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and is_complete(child):
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None
