"""Resolve and load the model to fine-tune: a local folder, the ``model`` channel or a hub id."""

from __future__ import annotations

import gzip
import logging
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

from ..architectures import BBOX_MODEL_TYPES, PREFIX_SPACE_MODEL_TYPES, usable_positions
from ..config import TrainConfig
from ..errors import UserError
from ..sagemaker import SageMakerEnv
from ..tasks import TaskSpec

log = logging.getLogger("hfsm.train")


def _unpack_if_archive(channel: Path) -> Path:
    archives = sorted(channel.glob("*.tar.gz"))
    if (channel / "config.json").is_file() or not archives:
        return channel
    target = Path(tempfile.mkdtemp(prefix="hfsm-model-"))
    try:
        with tarfile.open(archives[0]) as archive:
            archive.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(
            f"The model archive {archives[0]} cannot be unpacked ({type(exc).__name__}: {exc}); it is "
            "truncated or not a .tar.gz: upload the whole model.tar.gz again."
        ) from None
    nested = [p.parent for p in target.rglob("config.json")]
    return min(nested, key=lambda p: len(p.parts)) if nested else target


def resolve_model_source(config: TrainConfig, env: SageMakerEnv) -> str:
    channel = env.channel_dir("model")
    if config.model_name:
        candidate = Path(config.model_name)
        if candidate.exists():
            return str(_unpack_if_archive(candidate) if candidate.is_dir() else candidate)
        if candidate.is_absolute() or config.model_name.startswith(("./", "../", "~")):
            raise UserError(f"Hyperparameter 'model_name' = {config.model_name!r}: no such folder.")
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
    positions = usable_positions(model_config)
    if positions is not None and config.max_seq_length > positions:
        raise UserError(
            f"Hyperparameter 'max_seq_length' = {config.max_seq_length} is longer than the {positions} "
            f"positions of '{source}' ({model_config.model_type}): its first long text would fail; set "
            f"max_seq_length to at most {positions} (longer NER texts are split into windows anyway)."
        )
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
    if tokenizer.pad_token is None:
        # decoder-only models (GPT-2, Llama) have none: batches of several texts need one, and a
        # sequence classifier finds each text's last token by it. Their end-of-text token is the usual one.
        substitute = tokenizer.eos_token or tokenizer.unk_token
        if substitute is None:
            raise UserError(
                f"The tokenizer of '{source}' has no padding, end-of-text or unknown token to pad with."
            )
        tokenizer.pad_token = substitute
        log.info("the tokenizer has no padding token: padding with %r", substitute)
    if getattr(model_config, "pad_token_id", None) is None:
        model_config.pad_token_id = tokenizer.pad_token_id
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
