"""LoRA fine-tuning with ``peft``: adapters on the encoder, the classifier head trained whole.

A LoRA job trains a few percent of the weights (low-rank updates of the attention and feed-forward
matrices, plus the new classifier head, which has no pretrained weights to adapt). At the end the
adapters are merged into the weights by default, so ``model/`` is an ordinary model and serving
does not know LoRA was used; unmerged, ``model/`` holds the base weights and ``model/adapter/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import UserError
from ..tasks import TaskSpec

log = logging.getLogger("hfsm.train")

ADAPTER_DIR = "adapter"
"""Subfolder of ``model/`` holding unmerged adapters (``merge_lora_weights=false``)."""


def with_lora(model: Any, config: TrainConfig, task: TaskSpec) -> Any:
    """``model`` wrapped with trainable LoRA adapters; only they and the classifier head train."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = None
    if config.lora_target_modules:
        targets = [name.strip() for name in config.lora_target_modules.split(",") if name.strip()]
    lora = LoraConfig(
        task_type=TaskType.TOKEN_CLS if task.token_level else TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
    )
    try:
        wrapped = get_peft_model(model, lora)
    except ValueError as exc:
        raise UserError(
            f"LoRA cannot be applied to this {model.config.model_type} model: {exc}. Name the layers to "
            "adapt with the hyperparameter 'lora_target_modules' (e.g. query,value)."
        ) from exc
    trainable, total = wrapped.get_nb_trainable_parameters()
    log.info("LoRA r=%d alpha=%d: %d of %d weights trainable (%.2f%%)", config.lora_r, config.lora_alpha,
             trainable, total, 100 * trainable / max(total, 1))  # fmt: skip
    return wrapped


def is_lora(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency of the image
        return False
    return isinstance(model, PeftModel)


def final_model(model: Any, model_dir: Path, merge: bool) -> Any:
    """The model to save in ``model_dir``: merged, or the base with its adapters saved beside it."""
    if merge:
        return model.merge_and_unload()
    model.save_pretrained(str(model_dir / ADAPTER_DIR))
    return model.unload()


def load_adapter(model: Any, model_dir: Path) -> Any:
    """Serving: the base model in ``model_dir`` with the unmerged adapters of ``model_dir/adapter``."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(model_dir / ADAPTER_DIR))
