"""The Trainer's arguments from the job's hyperparameters: schedule, checkpoints, best-model metric."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import UserError
from ..tasks import CLASSIF, LOWER_IS_BETTER, MULTILABEL, NER, REGRESSION, TaskSpec
from .distributed import ddp_arguments

METRIC_NAMES = {
    NER: {"precision", "recall", "f1", "accuracy", "loss"},
    CLASSIF: {"accuracy", "f1_macro", "f1_micro", "loss"},
    MULTILABEL: {"f1_micro", "f1_macro", "subset_accuracy", "loss"},
    REGRESSION: {"mse", "mae", "pearson", "spearman", "loss"},
}


def _best_metric(config: TrainConfig, task: TaskSpec) -> tuple[str, bool]:
    name = config.metric_for_best_model or task.best_metric
    name = name.removeprefix("eval_").removeprefix("dev_")
    if name not in METRIC_NAMES[task.name]:
        raise UserError(
            f"Hyperparameter 'metric_for_best_model' = {name!r} is not a {task.name} metric; "
            f"choose one of {', '.join(sorted(METRIC_NAMES[task.name]))}."
        )
    return name, name not in LOWER_IS_BETTER


def training_arguments(config: TrainConfig, task: TaskSpec, checkpoint_dir: Path, has_dev: bool) -> Any:
    import torch
    from transformers import TrainingArguments
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    strategy, eval_steps = config.eval_strategy, config.eval_steps
    if strategy == "auto" and not has_dev:
        strategy = "no"
    elif strategy == "auto" and not eval_steps and config.save_steps:
        # checkpoints are evaluated to keep the best: evaluate at each one
        strategy, eval_steps = "steps", config.save_steps
    elif strategy == "auto":
        strategy = "steps" if eval_steps else "epoch"
    if strategy != "no" and not has_dev:
        raise UserError(f"eval_strategy '{strategy}' needs a dev split (a 'dev' channel or dev.csv).")
    if config.fp16 and not torch.cuda.is_available():
        raise UserError("fp16 needs a GPU; use bf16 on CPU or turn fp16 off.")
    evaluating = strategy != "no"
    if strategy == "steps":
        save_strategy, save_steps = "steps", config.save_steps or eval_steps
        if save_steps % eval_steps:
            raise UserError(
                f"save_steps={config.save_steps} must be a multiple of eval_steps={eval_steps}: with a dev "
                "split each checkpoint is evaluated, so that the best one is kept"
            )
    elif strategy == "epoch":
        if config.save_steps:
            raise UserError(
                f"save_steps={config.save_steps} with eval_strategy=epoch: with a dev split each checkpoint "
                "is evaluated, so they are saved each epoch; set eval_strategy=steps (or auto) to "
                "evaluate and checkpoint every save_steps"
            )
        save_strategy, save_steps = "epoch", 500
    else:
        save_strategy, save_steps = ("steps", config.save_steps) if config.save_steps else ("epoch", 500)
    metric, greater = _best_metric(config, task)
    arguments = TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=float(config.warmup_ratio),
        optim=_choice("optim", config.optim, [name.value for name in OptimizerNames]),
        lr_scheduler_type=_choice(
            "lr_scheduler_type", config.lr_scheduler_type, [name.value for name in SchedulerType]
        ),
        max_grad_norm=config.max_grad_norm,
        auto_find_batch_size=config.auto_find_batch_size,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        seed=config.seed,
        fp16=config.fp16,
        bf16=config.bf16,
        eval_strategy=strategy,
        eval_steps=eval_steps or None,
        save_strategy=save_strategy,
        save_steps=save_steps,
        # 1 would make the Trainer delete every checkpoint but the best when training ends, and a job
        # interrupted after its last step would then train again from the best: keep the newest too
        save_total_limit=(max(2, config.save_total_limit) if evaluating else config.save_total_limit) or None,
        load_best_model_at_end=evaluating,
        metric_for_best_model=metric if evaluating else None,
        greater_is_better=greater if evaluating else None,
        logging_steps=config.logging_steps,
        logging_strategy="steps",
        report_to="none",
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        dataloader_num_workers=config.dataloader_num_workers,
        save_only_model=False,
        use_cpu=not torch.cuda.is_available(),
        **ddp_arguments(os.environ, torch.cuda.is_available()),
        lr_scheduler_kwargs=config.lr_scheduler_kwargs,
    )
    check_optimizer_and_schedule(arguments)
    return arguments


def check_optimizer_and_schedule(arguments: Any) -> None:
    """Build the optimizer's class and a schedule on a stand-in parameter now, so that an optimizer
    whose package the image lacks (``adamw_8bit`` needs bitsandbytes) or a schedule missing its
    arguments fails at start, as a hyperparameter to fix, not after the model and data have loaded."""
    import torch
    from transformers import Trainer
    from transformers.optimization import get_scheduler

    try:
        Trainer.get_optimizer_cls_and_kwargs(arguments)
    except (ImportError, ValueError) as exc:
        raise UserError(
            f"Hyperparameter 'optim' = {arguments.optim.value!r} cannot run in this image: {exc}"
        ) from None
    stand_in = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=arguments.learning_rate)
    try:
        get_scheduler(
            arguments.lr_scheduler_type,
            stand_in,
            num_warmup_steps=0,
            num_training_steps=10,
            scheduler_specific_kwargs=arguments.lr_scheduler_kwargs,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"Hyperparameter 'lr_scheduler_type' = {arguments.lr_scheduler_type.value!r} with "
            f"lr_scheduler_kwargs={json.dumps(arguments.lr_scheduler_kwargs)}: {exc}"
        ) from None


def _choice(name: str, value: str, choices: list[str]) -> str:
    """``value`` if ``transformers`` knows it, else a UserError naming the closest choices."""
    if value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UserError(f"Hyperparameter '{name}' = {value!r} is not one of transformers' choices.{hint}")
