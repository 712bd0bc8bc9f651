"""SageMaker's bring-your-own-container contract as one immutable value.

Everything SageMaker hands a container (the base folder, hyperparameters, channels, resource and
checkpoint configuration) is read once by :meth:`SageMakerEnv.from_environ` and passed around as a
value; nothing is read at import time, so tests build their own trees.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

DEFAULT_BASE_DIR = "/opt/ml"


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from exc


def decode_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-decode each value where possible.

    The SageMaker SDK json-encodes every hyperparameter value and SageMaker stores them as strings,
    so ``"3"`` means 3 and ``"\\"bert\\""`` means ``bert``; a bare string that is not JSON stays as is.
    """
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            try:
                decoded[key] = json.loads(value)
            except json.JSONDecodeError:
                decoded[key] = value
        else:
            decoded[key] = value
    return decoded


@dataclass(frozen=True)
class SageMakerEnv:
    """Paths and configuration of one container run."""

    base_dir: Path
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    resource_config: Mapping[str, Any] = field(default_factory=dict)
    input_data_config: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_config: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SageMakerEnv:
        environ = os.environ if environ is None else environ
        base_dir = Path(environ.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE_DIR))
        return cls.from_base_dir(base_dir)

    @classmethod
    def from_base_dir(cls, base_dir: Path) -> SageMakerEnv:
        config_dir = base_dir / "input" / "config"

        def optional(name: str) -> Any:
            path = config_dir / name
            return _read_json(path) if path.is_file() else {}

        hyperparameters = optional("hyperparameters.json")
        if not isinstance(hyperparameters, dict):
            raise UserError(f"{config_dir / 'hyperparameters.json'} must hold a JSON object")
        return cls(
            base_dir=base_dir,
            hyperparameters=decode_hyperparameters(hyperparameters),
            resource_config=optional("resourceconfig.json"),
            input_data_config=optional("inputdataconfig.json"),
            checkpoint_config=optional("checkpointconfig.json"),
        )

    @property
    def input_data_dir(self) -> Path:
        return self.base_dir / "input" / "data"

    def channel_dir(self, name: str) -> Path:
        return self.input_data_dir / name

    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        local_path = self.checkpoint_config.get("LocalPath") if self.checkpoint_config else None
        return Path(local_path) if local_path else self.base_dir / "checkpoints"

    @property
    def current_host(self) -> str:
        return str(self.resource_config.get("current_host", "algo-1"))

    @property
    def hosts(self) -> list[str]:
        return list(self.resource_config.get("hosts", [self.current_host]))
