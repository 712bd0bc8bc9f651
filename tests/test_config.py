"""Hyperparameters: SageMaker's string encoding, validation and the closest-name hint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hfsm.config import HYPERPARAMETERS, parse_hyperparameters
from hfsm.errors import UserError
from hfsm.sagemaker import SageMakerEnv, decode_hyperparameters


def test_sdk_encoded_values_are_decoded() -> None:
    raw = {
        "task_name": '"ner"',
        "max_steps": "10",
        "learning_rate": "3e-05",
        "use_bbox": "true",
        "model_name": "bert-base-cased",
    }
    config = parse_hyperparameters(decode_hyperparameters(raw))
    assert config.task_name == "ner"
    assert config.max_steps == 10
    assert config.learning_rate == pytest.approx(3e-5)
    assert config.use_bbox is True
    assert config.model_name == "bert-base-cased"


@pytest.mark.parametrize("value", ["True", "TRUE", "true", True, "1", "yes"])
def test_booleans_accept_any_case(value: object) -> None:
    assert parse_hyperparameters({"task_name": "ner", "fp16": value}).fp16 is True


@pytest.mark.parametrize("value", ["False", "FALSE", "false", False, "0", "no"])
def test_false_booleans(value: object) -> None:
    assert parse_hyperparameters({"task_name": "ner", "group_by_length": value}).group_by_length is False


def test_unknown_name_names_the_closest_valid_one() -> None:
    with pytest.raises(
        UserError, match=r"Unknown hyperparameter 'learning_rat'.*Did you mean 'learning_rate'"
    ):
        parse_hyperparameters({"task_name": "ner", "learning_rat": 1e-5})


def test_sagemaker_keys_are_ignored() -> None:
    config = parse_hyperparameters(
        {"task_name": "classif", "sagemaker_program": "x", "sagemaker_region": "y"}
    )
    assert config.task_name == "classif"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "'task_name' is required"),
        ({"task_name": "nerr"}, "unknown task.*Did you mean 'ner'"),
        ({"task_name": "ner", "max_steps": "ten"}, "'max_steps' has an invalid value"),
        ({"task_name": "ner", "learning_rate": -1}, "'learning_rate'.*must be positive"),
        ({"task_name": "ner", "fp16": "maybe"}, "'fp16' has an invalid value"),
        ({"task_name": "ner", "per_device_train_batch_size": 0}, "at least 1"),
        ({"task_name": "ner", "max_seq_length": 64, "stride": 40}, "'stride'"),
        ({"task_name": "classif", "use_bbox": True}, "ner task only"),
        ({"task_name": "ner", "warmup_ratio": 1.5}, "warmup_ratio"),
        ({"task_name": "multilabel-classif", "multilabel_threshold": 2}, "multilabel_threshold"),
        ({"task_name": "ner", "eval_strategy": "steps"}, "eval_steps"),
        ({"task_name": "ner", "learning_rate": "NaN"}, "finite"),
    ],
)
def test_bad_values_fail_with_the_name(raw: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_hyperparameters(raw)


def test_readme_documents_every_hyperparameter_with_its_default() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for spec in HYPERPARAMETERS:
        row = re.search(rf"^\| `{re.escape(spec.name)}` \|([^|]*)\|", readme, flags=re.MULTILINE)
        assert row, f"README has no table row for {spec.name}"


def test_environment_reads_the_tree(tmp_path: Path) -> None:
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text('{"task_name": "\\"ner\\""}')
    (config / "checkpointconfig.json").write_text(f'{{"LocalPath": "{tmp_path / "ck"}"}}')
    env = SageMakerEnv.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    assert env.hyperparameters == {"task_name": "ner"}
    assert env.checkpoint_dir == tmp_path / "ck"
    assert env.model_dir == tmp_path / "model"
    assert env.failure_file == tmp_path / "output" / "failure"


def test_broken_hyperparameters_file_is_a_user_error(tmp_path: Path) -> None:
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        SageMakerEnv.from_base_dir(tmp_path)
