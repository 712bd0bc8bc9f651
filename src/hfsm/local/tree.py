"""Lay out a SageMaker ``/opt/ml`` tree from a data folder and hyperparameters, as a training job sees it.

The local harness runs the very same ``train`` command as SageMaker, so the only thing it has to get
right is the tree: json-encoded hyperparameter values (as the SageMaker SDK writes them), the
resource and input-data configuration, and one folder per channel.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.reading import DATA_SUFFIXES, SPLIT_ALIASES
from ..errors import UserError
from ..sagemaker import decode_hyperparameters

RESOURCE_CONFIG = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
GENERATED = ("input", "model", "output", "checkpoints")
"""Sub-folders of the work folder that each run rebuilds (stale checkpoints would be resumed from)."""


@dataclass(frozen=True)
class LocalTree:
    """A SageMaker base folder on this machine (mounted as ``/opt/ml`` when training in the image)."""

    base: Path

    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def channels_dir(self) -> Path:
        return self.base / "input" / "data"

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_data_dir(self) -> Path:
        return self.base / "output" / "data"

    @property
    def metrics_file(self) -> Path:
        return self.output_data_dir / "metrics.json"

    @property
    def failure_file(self) -> Path:
        return self.base / "output" / "failure"

    def channels(self) -> list[str]:
        return sorted(p.name for p in self.channels_dir.iterdir() if p.is_dir())


def parse_value(text: str) -> Any:
    """``3`` → 3, ``true`` → True, ``"x"`` → x; anything that is not JSON stays a string (like the SDK)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_hyperparameter_args(items: Sequence[str]) -> dict[str, Any]:
    """Merge ``--hyperparameters`` arguments, in order: JSON files (a SageMaker ``hyperparameters.json``
    or a plain object) and ``key=value`` pairs; a later one overrides an earlier one."""
    merged: dict[str, Any] = {}
    for item in items:
        path = Path(item)
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise UserError(f"Hyperparameter file {path} is not valid JSON: {exc}") from exc
            if not isinstance(loaded, dict):
                raise UserError(f"Hyperparameter file {path} must hold a JSON object")
            merged.update(decode_hyperparameters(loaded))
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"Hyperparameter argument {item!r} is neither an existing JSON file nor key=value"
            )
        merged[key.strip()] = parse_value(value)
    return merged


def find_channels(data: Path) -> dict[str, Path]:
    """Channels from a data folder: ``DATA/{train,dev,test}.csv`` files, or ``DATA/{train,dev,test}/``
    folders (``validation``/``valid``/``val`` count as dev). Returns channel name → file or folder."""
    if not data.is_dir():
        raise UserError(f"--data {data} is not a folder")
    channels: dict[str, Path] = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            folder = data / alias
            files = [data / f"{alias}{suffix}" for suffix in DATA_SUFFIXES]
            found = folder if folder.is_dir() else next((f for f in files if f.is_file()), None)
            if found is not None:
                channels[split] = found
                break
    if "train" not in channels:
        raise UserError(f"--data {data} has no train.csv (or .tsv/.txt) and no train/ folder")
    return channels


def _input_data_config(channels: Sequence[str]) -> dict[str, dict[str, str]]:
    return {
        name: {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
        for name in channels
    }


def layout_tree(
    work: Path, data: Path, hyperparameters: Mapping[str, Any], model: Path | None = None
) -> LocalTree:
    """Write a fresh SageMaker tree in ``work``.

    Only the sub-folders a job owns (``input``, ``model``, ``output``, ``checkpoints``) are replaced, so
    pointing ``--work`` at a folder never deletes anything else; clearing ``checkpoints`` matters
    because ``train`` resumes from a checkpoint it finds there.
    """
    tree = LocalTree(work.resolve())
    tree.base.mkdir(parents=True, exist_ok=True)
    for name in GENERATED:
        shutil.rmtree(tree.base / name, ignore_errors=True)
    sources = find_channels(data)
    if model is not None:
        if not (model.is_dir() or model.name.endswith(".tar.gz")):
            raise UserError(f"--model {model} is neither a model folder nor a model.tar.gz")
        sources["model"] = model
    tree.config_dir.mkdir(parents=True)
    (tree.config_dir / "hyperparameters.json").write_text(
        json.dumps({key: json.dumps(value) for key, value in hyperparameters.items()}, indent=2),
        encoding="utf-8",
    )
    (tree.config_dir / "resourceconfig.json").write_text(
        json.dumps(RESOURCE_CONFIG, indent=2), encoding="utf-8"
    )
    (tree.config_dir / "inputdataconfig.json").write_text(
        json.dumps(_input_data_config(sorted(sources)), indent=2), encoding="utf-8"
    )
    for channel, source in sources.items():
        target = tree.channels_dir / channel
        if source.is_dir():
            shutil.copytree(source, target, symlinks=False)
        else:
            target.mkdir(parents=True)
            shutil.copy(source, target / source.name)
    tree.model_dir.mkdir()
    tree.output_data_dir.mkdir(parents=True)
    return tree
