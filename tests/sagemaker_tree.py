"""Build SageMaker ``/opt/ml`` trees for tests and run ``train`` on them as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"


@dataclass
class TrainResult:
    base: Path
    returncode: int
    output: str

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_data(self) -> Path:
        return self.base / "output" / "data"

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text(encoding="utf-8") if path.exists() else None

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.output_data / "metrics.json").read_text(encoding="utf-8"))


def make_tree(
    base: Path, data: Path | dict[str, Path] | None, hyperparameters: dict[str, Any], layout: str = "channels"
) -> Path:
    """``layout='channels'``: one channel per split; ``'single'``: train.csv/dev.csv/test.csv in ``train``.

    ``data`` may also map channel names to folders or files to copy as they are.
    Hyperparameter values are json-encoded as the SageMaker SDK does.
    """
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(
        json.dumps({k: json.dumps(v) for k, v in hyperparameters.items()}), encoding="utf-8"
    )
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}),
        encoding="utf-8",
    )
    channels = base / "input" / "data"
    channels.mkdir(parents=True, exist_ok=True)
    if isinstance(data, dict):
        for channel, source in data.items():
            target = channels / channel
            target.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copy(source, target / source.name)
    elif data is not None:
        if layout == "single":
            shutil.copytree(data, channels / "train")
        else:
            for split in ("train", "dev", "test"):
                if (data / f"{split}.csv").exists():
                    (channels / split).mkdir()
                    shutil.copy(data / f"{split}.csv", channels / split / f"{split}.csv")
    return base


def run_train(base: Path, timeout: float = 600, extra_env: dict[str, str] | None = None) -> TrainResult:
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(extra_env or {}),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "hfsm", "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return TrainResult(base, completed.returncode, completed.stdout + completed.stderr)
