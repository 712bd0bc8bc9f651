"""Resolve and load the model to fine-tune: a local folder, the ``model`` channel or a hub id."""

from __future__ import annotations

import logging
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import UserError
from ..sagemaker import SageMakerEnv
from ..tasks import TaskSpec

log = logging.getLogger("hfsm.train")

# Byte-level BPE tokenizers need a leading space per word when words are fed pre-split.
PREFIX_SPACE_MODEL_TYPES = {"roberta", "longformer", "bart", "gpt2", "deberta", "lilt", "layoutlmv3"}
# Architectures whose forward pass takes word boxes without page images.
BBOX_MODEL_TYPES = {"layoutlm", "lilt"}


def _unpack_if_archive(channel: Path) -> Path:
    archives = sorted(channel.glob("*.tar.gz"))
    if (channel / "config.json").is_file() or not archives:
        return channel
    target = Path(tempfile.mkdtemp(prefix="hfsm-model-"))
    with tarfile.open(archives[0]) as archive:
        archive.extractall(target, filter="data")
    nested = [p.parent for p in target.rglob("config.json")]
    return min(nested, key=lambda p: len(p.parts)) if nested else target


def resolve_model_source(config: TrainConfig, env: SageMakerEnv) -> str:
    channel = env.channel_dir("model")
    if config.model_name:
        candidate = Path(config.model_name)
        if candidate.exists():
            return str(_unpack_if_archive(candidate) if candidate.is_dir() else candidate)
        return config.model_name
    if channel.is_dir():
        return str(_unpack_if_archive(channel))
    raise UserError(
        "No model to fine-tune: set the hyperparameter 'model_name' (a hub id or a path) "
        "or give a 'model' channel holding a Hugging Face model folder."
    )


def load_tokenizer_and_model(
    source: str, task: TaskSpec, labels: list[str], config: TrainConfig
) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    trust = config.trust_remote_code
    try:
        model_config = AutoConfig.from_pretrained(source, trust_remote_code=trust)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Cannot load model '{source}': {exc}. Without network access, give the model as the 'model' "
            "channel or a local path."
        ) from exc
    if config.use_bbox and model_config.model_type not in BBOX_MODEL_TYPES:
        raise UserError(
            f"use_bbox is true but '{source}' is a {model_config.model_type} model; word boxes need "
            f"one of: {', '.join(sorted(BBOX_MODEL_TYPES))}."
        )
    extra = {"add_prefix_space": True} if model_config.model_type in PREFIX_SPACE_MODEL_TYPES else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust, **extra)
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot load the tokenizer of '{source}': {exc}") from exc
    if not getattr(tokenizer, "is_fast", True):
        raise UserError(f"The tokenizer of '{source}' is not a fast tokenizer; word alignment needs one.")
    num_labels = 1 if task.problem_type == "regression" else len(labels)
    id2label = {i: name for i, name in enumerate(labels)} if labels else {0: "value"}
    model_config.num_labels = num_labels
    model_config.id2label = id2label
    model_config.label2id = {name: i for i, name in id2label.items()}
    if task.problem_type:
        model_config.problem_type = task.problem_type
    try:
        model = task.auto_model_class().from_pretrained(
            source,
            config=model_config,
            ignore_mismatched_sizes=True,
            use_safetensors=True,
            trust_remote_code=trust,
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot load the weights of '{source}' (safetensors only): {exc}") from exc
    return tokenizer, model
