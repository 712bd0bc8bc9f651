"""What users bring from AutoTrain, Azure ML and NeMo: LoRA, class weights, optimizer and schedule choices."""

from __future__ import annotations

import ast
import json
import re
import shutil
import tarfile
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


@pytest.mark.parametrize(
    ("hyper", "has_dev", "expected"),
    [
        # (eval_strategy, eval_steps, save_strategy, save_steps, save_total_limit)
        ({}, True, ("epoch", None, "epoch", 500, 2)),
        ({"save_steps": 6}, True, ("steps", 6, "steps", 6, 2)),  # each checkpoint is evaluated
        ({"eval_steps": 4, "save_steps": 8}, True, ("steps", 4, "steps", 8, 2)),
        ({"eval_steps": 4}, True, ("steps", 4, "steps", 4, 2)),
        ({"save_steps": 6}, False, ("no", None, "steps", 6, 2)),
        ({"save_total_limit": 1}, True, ("epoch", None, "epoch", 500, 2)),  # the newest is kept too
        ({"save_total_limit": 1}, False, ("no", None, "epoch", 500, 1)),
    ],
)
def test_checkpoints_follow_save_steps_and_keep_the_newest(
    tmp_path: Path, hyper: dict, has_dev: bool, expected: tuple
) -> None:
    config = parse_hyperparameters({"task_name": "ner", **hyper})
    args = training_arguments(config, get_task("ner"), tmp_path, has_dev=has_dev)
    got = (args.eval_strategy.value, args.eval_steps, args.save_strategy.value, args.save_steps)
    assert (*got, args.save_total_limit) == expected


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"eval_steps": 4, "save_steps": 6}, "save_steps=6 must be a multiple of eval_steps=4"),
        ({"eval_strategy": "epoch", "save_steps": 6}, "save_steps=6 with eval_strategy=epoch"),
        ({"optim": "lomo"}, "'optim' = 'lomo' cannot run in this image"),
        ({"lr_scheduler_type": "warmup_stable_decay"}, "num_decay_steps"),
        ({"metric_for_best_model": "f1_macro"}, "not a ner metric"),
    ],
)
def test_settings_that_cannot_work_fail_before_training(tmp_path: Path, hyper: dict, message: str) -> None:
    config = parse_hyperparameters({"task_name": "ner", **hyper})
    with pytest.raises(UserError, match=re.escape(message)):
        training_arguments(config, get_task("ner"), tmp_path, has_dev=True)


def test_schedule_arguments_reach_the_trainer(tmp_path: Path) -> None:
    config = parse_hyperparameters(
        {
            "task_name": "ner",
            "lr_scheduler_type": "cosine_with_min_lr",
            "lr_scheduler_kwargs": '{"min_lr": 1e-7}',
        }
    )
    args = training_arguments(config, get_task("ner"), tmp_path, has_dev=False)
    assert args.lr_scheduler_kwargs == {"min_lr": 1e-7}
    with pytest.raises(UserError, match="JSON object"):
        parse_hyperparameters({"task_name": "ner", "lr_scheduler_kwargs": "[1]"})


def test_positions_the_model_takes() -> None:
    from transformers import BertConfig, DebertaV2Config, RobertaConfig

    from hfsm.architectures import usable_positions

    assert usable_positions(BertConfig(max_position_embeddings=512)) == 512
    assert usable_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert usable_positions(DebertaV2Config(position_biased_input=False)) is None


def test_a_decoder_only_model_trains_a_classifier_and_pads_like_it(tmp_path: Path) -> None:
    """GPT-2 has no padding token; its sequence classifier reads each text's last real token, so the
    token batches are padded with must be the one its config names: one text answers the same alone
    and in a padded batch."""
    from tiny_models import make_gpt2_model

    model = make_gpt2_model(tmp_path / "gpt2")
    result = train(tmp_path / "job", model, case="classif", task="classif")
    assert result.returncode == 0, result.output[-3000:]
    assert "padding with '<|endoftext|>'" in result.output
    predictor = Predictor.load(result.model_dir, PredictOptions(torch_threads=1))
    short = {"text": "my card"}
    long = {"text": "I would like to know why my card payment was declined twice today"}
    alone = predictor.predict([short])[0]
    batched = predictor.predict([short, long])[0]
    assert batched["scores"] == pytest.approx(alone["scores"], abs=1e-5)
    written = (result.output_data / "test_predictions.jsonl").read_text().splitlines()
    lines = [json.loads(line) for line in written]
    answers = predictor.predict([{"text": line["text"]} for line in lines])
    assert [a["pred"] for a in answers] == [line["pred"] for line in lines]


def test_a_checkpoint_of_another_job_is_refused(
    tmp_path: Path, trained: dict[str, TrainResult], base_models: dict[str, Path]
) -> None:
    """A reused checkpoint location: the Trainer would resume the other job's model under this job's
    labels (same shapes) or fail deep in loading (other shapes)."""
    other = trained["ner"]
    # the same backbone, other labels
    hyper = quick_hyperparameters("classif", base_models["bert"])
    base = make_tree(tmp_path / "tree", DATA_DIR / "classif", hyper)
    shutil.copytree(other.base / "checkpoints", base / "checkpoints")
    result = run_train(base)
    assert result.returncode == 1, result.output[-3000:]
    assert result.failure is not None and "is not this job's: it was trained for the labels" in result.failure


def test_a_truncated_model_archive_is_a_user_error(tmp_path: Path, base_models: dict[str, Path]) -> None:
    hyper = {k: v for k, v in quick_hyperparameters("ner", Path()).items() if k != "model_name"}
    base = make_tree(tmp_path / "tree", DATA_DIR / "ner", hyper)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(base_models["bert"].iterdir()):
            tar.add(path, arcname=path.name)
    channel = base / "input" / "data" / "model"
    channel.mkdir(parents=True)
    (channel / "model.tar.gz").write_bytes(archive.read_bytes()[:5000])
    result = run_train(base)
    assert result.returncode == 1, result.output[-3000:]
    assert result.failure is not None and "cannot be unpacked" in result.failure
