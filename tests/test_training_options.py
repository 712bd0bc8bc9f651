"""What users bring from AutoTrain, Azure ML and NeMo: LoRA, class weights, optimizer and schedule choices."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import quick_hyperparameters
from hfsm.config import parse_hyperparameters
from hfsm.errors import UserError
from hfsm.inference.predictor import PredictOptions, Predictor
from hfsm.tasks import get_task
from hfsm.training.arguments import training_arguments
from hfsm.training.checkpoints import latest_complete_checkpoint
from hfsm.training.losses import TaskLoss, class_weight_vector
from sagemaker_tree import DATA_DIR, TrainResult, make_tree, run_train


def train(tmp_path: Path, model: Path, case: str = "ner", task: str = "ner", **hyper: object) -> TrainResult:
    return run_train(make_tree(tmp_path, DATA_DIR / case, quick_hyperparameters(task, model, **hyper)))


def served_like_written(result: TrainResult) -> None:
    """The model folder, loaded as an endpoint loads it, predicts what the job wrote for the test split."""
    lines = [
        json.loads(line) for line in (result.output_data / "test_predictions.jsonl").read_text().splitlines()
    ]
    predictor = Predictor.load(result.model_dir, PredictOptions(torch_threads=1))
    for line, answer in zip(
        lines, predictor.predict([{"text": line["text"]} for line in lines]), strict=True
    ):
        assert answer["pred"] == line["pred"]
        assert answer["proba"] == pytest.approx(line["proba"], abs=1e-4)


@pytest.fixture(scope="module")
def lora_runs(
    tmp_path_factory: pytest.TempPathFactory, base_models: dict[str, Path]
) -> dict[str, TrainResult]:
    runs = {}
    for name, merge in (("merged", True), ("adapter", False)):
        runs[name] = train(
            tmp_path_factory.mktemp(f"lora-{name}"),
            base_models["bert"],
            apply_lora=True,
            lora_r=4,
            lora_alpha=8,
            merge_lora_weights=merge,
            learning_rate=5e-3,
        )
    return runs


def test_lora_trains_a_fraction_of_the_weights_and_merges_into_a_plain_model(lora_runs: dict) -> None:
    result = lora_runs["merged"]
    assert result.returncode == 0, result.output[-3000:]
    found = re.search(r"LoRA r=4 alpha=8: (\d+) of (\d+) weights trainable", result.output)
    assert found and int(found.group(1)) < int(found.group(2)) / 5, result.output[-2000:]
    assert not (result.model_dir / "adapter").exists()
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    from safetensors import safe_open

    with safe_open(str(result.model_dir / "model.safetensors"), "pt") as weights:
        names = weights.keys()
    assert not [name for name in names if "lora" in name], "merged: no adapter weights left"
    served_like_written(result)


def test_unmerged_lora_keeps_the_adapters_and_serves_them(lora_runs: dict) -> None:
    result = lora_runs["adapter"]
    assert result.returncode == 0, result.output[-3000:]
    assert (result.model_dir / "adapter" / "adapter_config.json").is_file()
    assert (result.model_dir / "adapter" / "adapter_model.safetensors").is_file()
    served_like_written(result)
    # the job's adapter checkpoints can be resumed from
    assert latest_complete_checkpoint(result.base / "checkpoints") is not None


def test_lora_without_known_target_modules_names_the_hyperparameter(
    tmp_path: Path, base_models: dict[str, Path]
) -> None:
    result = train(tmp_path, base_models["bert"], apply_lora=True, lora_target_modules="no_such_layer")
    assert result.returncode == 1, result.output[-3000:]
    assert result.failure is not None and "lora_target_modules" in result.failure


def test_auto_class_weights_balance_the_labels() -> None:
    weights = class_weight_vector("auto", {0: 90, 1: 9, 2: 1}, ["O", "B-PER", "I-PER", "B-LOC"])
    assert weights == pytest.approx([100 / (3 * 90), 100 / (3 * 9), 100 / 3, 1.0])
    assert class_weight_vector({"B-PER": 3.0}, {}, ["O", "B-PER"]) == [1.0, 3.0]
    # sqrt: 1/sqrt(count) scaled so that the 91 items weigh 91 in all: 7/9, 7/3, 7; unseen B-LOC 1
    sqrt = class_weight_vector("sqrt", {0: 81, 1: 9, 2: 1}, ["O", "B-PER", "I-PER", "B-LOC"])
    assert sqrt == pytest.approx([7 / 9, 7 / 3, 7.0, 1.0])
    assert class_weight_vector("none", {0: 1}, ["O"]) is None
    with pytest.raises(UserError, match=r"names labels the data does not have: \['B-XYZ'\]"):
        class_weight_vector({"B-XYZ": 2.0}, {}, ["O", "B-PER"])


def test_weighted_loss_weighs_each_item_by_its_label() -> None:
    logits, labels = (
        torch.randn(3, 4, 3),
        torch.tensor([[0, 1, -100, 2], [2, 2, 0, -100], [1, -100, -100, 0]]),
    )
    weights = [0.5, 2.0, 1.0]
    loss = TaskLoss("ner", weights)({"logits": logits}, labels, num_items_in_batch=9)
    per_item = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), reduction="none")
    expected = sum(
        per_item[i] * weights[label] for i, label in enumerate(labels.reshape(-1).tolist()) if label >= 0
    )
    torch.testing.assert_close(loss, expected / 9)


def test_job_logs_and_uses_auto_class_weights(tmp_path: Path, base_models: dict[str, Path]) -> None:
    result = train(tmp_path, base_models["bert"], case="classif", task="classif", class_weights="auto")
    assert result.returncode == 0, result.output[-3000:]
    logged = re.search(r"class weights: (\{.*\})", result.output)
    assert logged, result.output[-3000:]
    weights = ast.literal_eval(logged.group(1))
    assert len(weights) == len(json.loads((result.model_dir / "config.json").read_text())["id2label"])
    assert max(weights.values()) > min(weights.values())


@pytest.mark.parametrize(
    ("task", "hyper", "message"),
    [
        ("ner", {"class_weights": {"B-XYZ": 2}}, "names labels the data does not have"),
        ("regression", {"class_weights": "auto"}, "weights labels of ner and classif only"),
        ("ner", {"optim": "adamw_torhc"}, "Did you mean 'adamw_torch'"),
        ("ner", {"lr_scheduler_type": "cosin"}, "Did you mean 'cosine'"),
        ("ner", {"class_weights": "balanced"}, "expected auto, sqrt, none or a JSON object"),
        ("ner", {"lora_dropout": 1.5}, "lora_dropout"),
    ],
)
def test_bad_choices_fail_with_the_hyperparameter(
    tmp_path: Path, base_models: dict[str, Path], task: str, hyper: dict, message: str
) -> None:
    case = {"ner": "ner", "regression": "regression"}[task]
    result = train(tmp_path, base_models["bert"], case=case, task=task, **hyper)
    assert result.returncode == 1, result.output[-3000:]
    assert (
        result.failure is not None and result.failure.startswith("UserError: ") and message in result.failure
    )


def test_optimizer_schedule_clipping_and_batch_search_reach_the_trainer(tmp_path: Path) -> None:
    config = parse_hyperparameters(
        {
            "task_name": "ner",
            "optim": "sgd",
            "lr_scheduler_type": "cosine",
            "max_grad_norm": 0.5,
            "auto_find_batch_size": True,
        }
    )
    args = training_arguments(config, get_task("ner"), tmp_path, has_dev=False)
    assert (args.optim.value, args.lr_scheduler_type.value) == ("sgd", "cosine")
    assert (args.max_grad_norm, args.auto_find_batch_size) == (0.5, True)


def test_another_optimizer_and_schedule_train(tmp_path: Path, base_models: dict[str, Path]) -> None:
    result = train(
        tmp_path, base_models["bert"], optim="adamw_torch", lr_scheduler_type="cosine", max_grad_norm=0.5
    )
    assert result.returncode == 0, result.output[-3000:]
    state = json.loads(
        sorted((result.base / "checkpoints").glob("checkpoint-*/trainer_state.json"))[-1].read_text()
    )
    rates = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0]
