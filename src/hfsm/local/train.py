"""``hfsm local train``: the real ``train`` command on a local SageMaker tree, in a process or the image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from .engine import container_engine, train_command
from .tree import LocalTree, layout_tree


def stage_model_path(
    hyperparameters: dict[str, Any], model: Path | None
) -> tuple[dict[str, Any], Path | None]:
    """In the image, a host path in ``model_name`` does not exist: hand it over as the ``model`` channel
    instead, as one would upload it to S3 for a network-isolated job."""
    name = hyperparameters.get("model_name")
    if model is None and isinstance(name, str) and Path(name).exists():
        staged = {key: value for key, value in hyperparameters.items() if key != "model_name"}
        return staged, Path(name)
    return hyperparameters, model


def run_train(tree: LocalTree, image: str | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run ``train`` on ``tree`` and return its exit code; its log goes to this process's stdout/stderr."""
    environ = dict(os.environ if environ is None else environ)
    if image:
        command = train_command(container_engine(environ), image, tree.base)
        return subprocess.run(command, check=False).returncode
    env = {
        **environ,
        "SAGEMAKER_BASE_DIR": str(tree.base),
        "HF_HUB_OFFLINE": environ.get("HF_HUB_OFFLINE", "1"),
    }
    return subprocess.run([sys.executable, "-m", "hfsm", "train"], env=env, check=False).returncode


def summary_lines(tree: LocalTree) -> list[str]:
    """Where the results are, and the dev/test metrics in one line each."""
    lines = [f"model:   {tree.model_dir}", f"metrics: {tree.metrics_file}"]
    if not tree.metrics_file.is_file():
        return lines
    metrics = json.loads(tree.metrics_file.read_text(encoding="utf-8"))
    for split in ("dev", "test"):
        detail = metrics.get(split)
        if isinstance(detail, dict):
            numbers = {
                k: v for k, v in detail.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(numbers.items()))
            lines.append(f"{split + ':':9}{shown}")
    predictions = tree.output_data_dir / "test_predictions.jsonl"
    if predictions.is_file():
        lines.append(f"test predictions: {predictions}")
    return lines


def local_train(
    work: Path,
    data: Path,
    hyperparameters: dict[str, Any],
    model: Path | None = None,
    image: str | None = None,
) -> LocalTree:
    """Lay out the tree, train, print the summary; a failed job raises with the text of ``output/failure``."""
    if image:
        hyperparameters, model = stage_model_path(hyperparameters, model)
    tree = layout_tree(work, data, hyperparameters, model)
    print(f"SageMaker tree: {tree.base} (channels: {', '.join(tree.channels())})", flush=True)
    code = run_train(tree, image)
    if code != 0:
        reason = (
            tree.failure_file.read_text(encoding="utf-8") if tree.failure_file.is_file() else "see the log"
        )
        raise UserError(f"train exited with code {code}: {reason}")
    for line in summary_lines(tree):
        print(line, flush=True)
    return tree
