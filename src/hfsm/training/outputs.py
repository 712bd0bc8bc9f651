"""What the job writes and checks before it exits 0: outputs that cannot be written become an
:class:`OutputError` naming the path, results are strict JSON, and a model is written only when its
weights are finite and its files read back whole."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import OutputError, UserError
from .checkpoints import safetensors_problem


@contextmanager
def writing(what: str, path: Path) -> Iterator[None]:
    """Turn any failure to write an output (no space, read-only, a file where a folder belongs;
    tokenizers raise plain ``Exception`` for these) into an :class:`OutputError` naming the path."""
    try:
        yield
    except Exception as exc:
        raise OutputError(f"could not write {what} to {path}: {type(exc).__name__}: {exc}") from exc


def check_artifacts(model_dir: Path, metrics: Path) -> None:
    """Fail unless the files the endpoint and the caller need are there and whole.

    The job's contract is to never exit 0 without its artifacts: this is the last step before it does.
    """
    problems = []
    weights = model_dir / "model.safetensors"
    if not weights.is_file() and not (model_dir / "model.safetensors.index.json").is_file():
        problems.append(f"{weights} is missing")
    elif weights.is_file() and (problem := safetensors_problem(weights)):
        problems.append(problem)
    for path in (model_dir / "config.json", model_dir / "hfsm.json", metrics):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path} cannot be read back: {exc}")
    if problems:
        raise OutputError(f"the job's outputs are incomplete after writing them: {'; '.join(problems)}")


def check_weights_finite(model: Any, step: int, learning_rate: float) -> None:
    """Refuse to write a model whose training diverged: its weights hold NaN or infinities, it would
    answer NaN for every text, and an endpoint could only fail on it."""
    import torch

    broken = [name for name, weight in model.named_parameters() if not torch.isfinite(weight).all()]
    if broken:
        raise UserError(
            f"Training diverged: after step {step}, {len(broken)} weight tensors hold NaN or infinite values "
            f"(e.g. {broken[0]}). Lower learning_rate (now {learning_rate:g}), or keep max_grad_norm above 0."
        )


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value
