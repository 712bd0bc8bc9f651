"""Shared fixtures: tiny backbones, SageMaker trees, and one trained model per task."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sagemaker_tree import DATA_DIR, TrainResult, make_tree, run_train
from tiny_models import make_base_model

TRAINED_CASES = {
    "ner": ("ner", "bert", {}),
    "classif": ("classif", "bert", {}),
    "multilabel": ("multilabel-classif", "bert", {}),
    "regression": ("regression", "bert", {}),
    "ner_bbox": ("ner", "layoutlm", {"use_bbox": True}),
}


@pytest.fixture(scope="session")
def base_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("base-models")
    return {kind: make_base_model(root / kind, kind) for kind in ("bert", "layoutlm")}


def quick_hyperparameters(task: str, model: Path, **extra: object) -> dict[str, object]:
    return {
        "task_name": task,
        "model_name": str(model),
        "max_steps": 12,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "max_seq_length": 64,
        "stride": 8,
        "eval_steps": 6,
        "logging_steps": 4,
        **extra,
    }


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, base_models: dict[str, Path]) -> dict[str, TrainResult]:
    """One model per case, trained by the real ``train`` command (a subprocess) on tests/data."""
    results = {}
    for name, (task, kind, extra) in TRAINED_CASES.items():
        base = make_tree(
            tmp_path_factory.mktemp(f"trained-{name}"),
            DATA_DIR / name,
            quick_hyperparameters(task, base_models[kind], **extra),
        )
        result = run_train(base)
        assert result.returncode == 0, f"training {name} failed:\n{result.output[-4000:]}"
        results[name] = result
    return results
