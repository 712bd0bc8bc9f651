"""Training hyperparameters: parsed once, validated, documented.

The table :data:`HYPERPARAMETERS` is the single source of truth: the parser, the error messages
and the README table (checked by a test) all come from it.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import UserError
from .tasks import TASK_NAMES


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", "yes", "no"}:
        return value.strip().lower() in {"true", "1", "yes"}
    raise ValueError("expected true or false")


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError("expected an integer")


def parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def parse_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError("expected a string")
    return str(value)


def parse_optional_str(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none", "null"}):
        return None
    return parse_str(value)


def parse_auto_str(value: Any) -> str | None:
    """``auto`` (or empty, ``none``: None, decided by the task), or a name."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return parse_optional_str(value)


def parse_auto_int(value: Any) -> int | None:
    """``auto`` (None: decided from other values), or an integer."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        return parse_int(value)
    except ValueError:
        raise ValueError("expected auto or an integer") from None


def parse_json_object(value: Any) -> dict[str, Any]:
    """A JSON object (given as one, or as its text); empty for ``none`` or an empty string."""
    if isinstance(value, str):
        if value.strip().lower() in {"", "none", "null"}:
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError('expected a JSON object such as {"min_lr": 1e-6}') from None
    if not isinstance(value, dict):
        raise ValueError('expected a JSON object such as {"min_lr": 1e-6}')
    return {str(key): item for key, item in value.items()}


def parse_auto_bool(value: Any) -> bool | None:
    """``auto`` (None: decided at run time), or a boolean."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        return parse_bool(value)
    except ValueError:
        raise ValueError("expected auto, true or false") from None


def parse_class_weights(value: Any) -> str | dict[str, float]:
    """``auto``, ``sqrt``, ``none``, or a JSON object of label name to a positive weight (others 1)."""
    if isinstance(value, str) and value.strip().lower() in {"auto", "sqrt", "none"}:
        return value.strip().lower()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError('expected auto, sqrt, none or a JSON object such as {"B-PER": 2.0}') from None
    if not isinstance(value, dict) or not value:
        raise ValueError('expected auto, sqrt, none or a JSON object such as {"B-PER": 2.0}')
    weights = {}
    for name, weight in value.items():
        number = parse_float(weight)
        if number <= 0:
            raise ValueError(f"the weight of {name!r} must be positive, got {weight!r}")
        weights[str(name)] = number
    return weights


def parse_threshold(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    number = parse_float(value)
    if not 0.0 < number < 1.0:
        raise ValueError("expected 'auto' or a number between 0 and 1")
    return number


def parse_choice(*choices: str) -> Callable[[Any], str]:
    """A parser for one of ``choices`` (any case): hyperparameters such as ``input_format`` and the
    serving environment variables such as ``HFSM_QUANTIZE``."""

    def parse(value: Any) -> str:
        text = parse_str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected {', '.join(choices[:-1])} or {choices[-1]}")
        return text

    return parse


DEFAULT_STRIDE = 32


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter(
        "task_name", parse_str, None, "Required. One of `ner`, `classif`, `multilabel-classif`, `regression`."
    ),
    Hyperparameter(
        "model_name",
        parse_optional_str,
        None,
        "Hugging Face hub id or local path of the model to fine-tune. Defaults to the `model` "
        "channel when one is given (network-isolated jobs).",
    ),
    Hyperparameter(
        "text_column", parse_str, "text", "Column holding the text (NER: words separated by spaces)."
    ),
    Hyperparameter("label_column", parse_str, "labels", "Column holding the labels."),
    Hyperparameter(
        "bbox_column", parse_str, "bbox", "Column holding word boxes (`x0 y0 x1 y1`, comma-separated)."
    ),
    Hyperparameter(
        "use_bbox",
        parse_bool,
        False,
        "Feed word boxes to the model (LayoutLM). Requires the box column in every split.",
    ),
    Hyperparameter(
        "input_format",
        parse_choice("auto", "tsv", "conll", "nemo", "jsonl"),
        "auto",
        "How the channels' files are read. `auto`: by extension (`.csv`/`.tsv`/`.txt` tab-separated, "
        "`.conll`/`.iob`/`.bio` CoNLL, `text_*.txt` + `labels_*.txt` NeMo pairs, `.jsonl`/`.json` JSON "
        "lines); `tsv`, `conll`, `nemo`, `jsonl`: every file of the channels in that format. Formats "
        "other than TSV are for `ner`.",
    ),
    Hyperparameter(
        "tokens_field", parse_str, "tokens", "JSON lines: the field holding the list of tokens of a row."
    ),
    Hyperparameter("tags_field", parse_str, "tags", "JSON lines: the field holding the list of IOB tags."),
    Hyperparameter(
        "repair_iob",
        parse_bool,
        False,
        "NER: rewrite orphan `I-X` tags (not continuing an `X` entity) to `B-X` in every split. They are "
        "counted and reported in the log either way; the entity spans stay those the default metrics and "
        "serving read, only the trained label changes.",
    ),
    Hyperparameter(
        "seqeval_mode",
        parse_choice("default", "strict"),
        "default",
        "NER dev/test metrics: `default` (seqeval's default, conlleval: an orphan `I-` starts an entity) "
        'or `strict` (seqeval `mode="strict", scheme=IOB2`: only exact `B-`/`I-` entities count).',
    ),
    Hyperparameter("num_train_epochs", parse_float, 3.0, "Number of training epochs."),
    Hyperparameter(
        "max_steps", parse_int, -1, "Stop after this many optimiser steps (overrides epochs when > 0)."
    ),
    Hyperparameter("per_device_train_batch_size", parse_int, 16, "Training batch size per device."),
    Hyperparameter("per_device_eval_batch_size", parse_int, 64, "Evaluation batch size per device."),
    Hyperparameter("gradient_accumulation_steps", parse_int, 1, "Batches accumulated per optimiser step."),
    Hyperparameter("learning_rate", parse_float, 5e-5, "Peak learning rate (AdamW)."),
    Hyperparameter("weight_decay", parse_float, 0.0, "AdamW weight decay."),
    Hyperparameter("warmup_ratio", parse_float, 0.0, "Fraction of steps with linear warm-up."),
    Hyperparameter(
        "optim",
        parse_str,
        "adamw_torch_fused",
        "Optimizer, by its `transformers` name (`adamw_torch_fused`, `adamw_torch`, `adafactor`, `sgd`, "
        "`adagrad`, `rmsprop`, ...).",
    ),
    Hyperparameter(
        "lr_scheduler_type",
        parse_str,
        "linear",
        "Learning-rate schedule, by its `transformers` name (`linear`, `cosine`, `cosine_with_restarts`, "
        "`polynomial`, `constant`, `constant_with_warmup`, `inverse_sqrt`, ...).",
    ),
    Hyperparameter(
        "lr_scheduler_kwargs",
        parse_json_object,
        {},
        'Arguments of the schedule, a JSON object: `{"min_lr": 1e-6}` for `cosine_with_min_lr`, '
        '`{"num_decay_steps": 100}` for `warmup_stable_decay`. Checked with the schedule at start.',
    ),
    Hyperparameter("max_grad_norm", parse_float, 1.0, "Gradient clipping norm (0: no clipping)."),
    Hyperparameter(
        "auto_find_batch_size",
        parse_bool,
        False,
        "Halve `per_device_train_batch_size` and retry when a step runs out of GPU memory.",
    ),
    Hyperparameter(
        "class_weights",
        parse_class_weights,
        "none",
        "ner and classif: weigh each label's loss. `auto`: inversely to its frequency in train (each "
        "label's items weigh N / (labels x its count)); `sqrt`: inversely to the square root of its "
        "frequency (milder: NER's `O` keeps weight); both scaled so that the items weigh 1 on average; "
        'a JSON object `{"B-PER": 2.0}` sets some (others 1); `none`: equal.',
    ),
    Hyperparameter(
        "apply_lora",
        parse_bool,
        False,
        "Train LoRA adapters (`peft`) on the attention and feed-forward layers, and the classifier head, "
        "instead of every weight.",
    ),
    Hyperparameter("lora_r", parse_int, 8, "LoRA rank."),
    Hyperparameter("lora_alpha", parse_int, 16, "LoRA scaling (alpha / r multiplies the update)."),
    Hyperparameter("lora_dropout", parse_float, 0.1, "Dropout on the LoRA path."),
    Hyperparameter(
        "lora_target_modules",
        parse_optional_str,
        None,
        "Comma-separated module names to adapt (e.g. `query,value`); default: peft's choice for the "
        "architecture.",
    ),
    Hyperparameter(
        "merge_lora_weights",
        parse_bool,
        True,
        "Merge the adapters into the weights at the end: `model/` is then a plain model that serves "
        "unchanged. `false`: `model/` holds the base weights and the adapters in `model/adapter/` "
        "(served with peft, slower).",
    ),
    Hyperparameter(
        "export_onnx",
        parse_bool,
        False,
        "Also write `model/onnx/`: the model as ONNX graphs (float32 and int8) and its tokenizer, each "
        "checked against torch on probe texts, for serving with ONNX Runtime (`HFSM_RUNTIME`): a worker "
        "that answers in about a second, without torch. A failed export is logged and recorded in "
        "`metrics.json` (`onnx_export`); the job and its model stand.",
    ),
    Hyperparameter(
        "max_seq_length",
        parse_int,
        256,
        "Sub-tokens per window, special tokens included. Longer NER texts are split into "
        "overlapping windows; longer classification texts are truncated. At most the model's positions.",
    ),
    Hyperparameter(
        "stride",
        parse_auto_int,
        None,
        "Sub-tokens shared by consecutive NER windows (context on each side of a window cut), at most "
        "half a window. `auto`: 32, or half a window when `max_seq_length` is below 68. Other tasks "
        "ignore it.",
    ),
    Hyperparameter(
        "label_all_tokens", parse_bool, False, "NER: train on every sub-token of a word, not only the first."
    ),
    Hyperparameter("seed", parse_int, 42, "Random seed for initialisation, shuffling and dropout."),
    Hyperparameter("fp16", parse_bool, False, "Mixed precision float16 (GPU only)."),
    Hyperparameter("bf16", parse_bool, False, "Mixed precision bfloat16 (recent GPUs and CPUs)."),
    Hyperparameter(
        "eval_strategy",
        parse_str,
        "auto",
        "`auto` (each epoch when a dev split exists, else never), `epoch`, `steps` or `no`.",
    ),
    Hyperparameter(
        "eval_steps",
        parse_int,
        0,
        "Evaluate every N steps (implies `eval_strategy=steps` when set and strategy is `auto`).",
    ),
    Hyperparameter(
        "metric_for_best_model",
        parse_auto_str,
        None,
        "Dev metric that picks the best checkpoint. Default per task: `f1` (ner), `f1_macro` "
        "(classif), `f1_micro` (multilabel-classif), `mse` (regression, lower is better).",
    ),
    Hyperparameter(
        "early_stopping_patience",
        parse_int,
        0,
        "Stop after this many evaluations without improvement of the best metric (0: off).",
    ),
    Hyperparameter(
        "multilabel_threshold",
        parse_threshold,
        None,
        "multilabel-classif decision threshold; `auto` tunes it on dev (micro F1), 0.5 without dev.",
    ),
    Hyperparameter("logging_steps", parse_int, 50, "Log loss and learning rate every N steps."),
    Hyperparameter(
        "save_steps",
        parse_int,
        0,
        "Checkpoint every N steps (0: at each evaluation, or each epoch without dev). With a dev split "
        "each checkpoint is evaluated: it then sets `eval_steps` when unset, and must be a multiple of it.",
    ),
    Hyperparameter(
        "save_total_limit",
        parse_int,
        2,
        "Checkpoints kept (the best one is always kept; with a dev split `1` keeps the newest too).",
    ),
    Hyperparameter(
        "pack_sequences",
        parse_auto_bool,
        None,
        "NER: pack the windows of each training batch into fewer rows (positions restarting per "
        "window, attention only within a window) instead of padding them: the same batches and "
        "gradients for about half the compute. `auto`: packed when the first batch gives the same "
        "logits packed as padded (BERT-like models), else padded; `true`: fail if it does not; "
        "`false`: padded.",
    ),
    Hyperparameter(
        "group_by_length",
        parse_bool,
        False,
        "Batch training examples of similar length together (random groups of 50 batches sorted by "
        "length, batches shuffled). Changes which examples share a batch: one CoNLL-2003 epoch scored "
        "0.854 dev F1 instead of 0.862, so it is off by default; `pack_sequences` saves the padding "
        "without changing the batches.",
    ),
    Hyperparameter("dataloader_num_workers", parse_int, 0, "Worker processes for data loading."),
    Hyperparameter(
        "distributed",
        parse_auto_bool,
        None,
        "`auto`: with several hosts (`instance_count` > 1) or several processes per host, train with "
        "torchrun across all of them (NCCL on GPUs, gloo on CPUs); `false`: one plain process on the "
        "first host (the others do nothing).",
    ),
    Hyperparameter(
        "processes_per_host",
        parse_int,
        0,
        "Training processes per host when `distributed` is on; 0: one per GPU, or one on a CPU host.",
    ),
    Hyperparameter(
        "trust_remote_code",
        parse_bool,
        False,
        "Allow model code from the model folder/hub (off: only built-in architectures).",
    ),
)

_BY_NAME = {spec.name: spec for spec in HYPERPARAMETERS}


@dataclass(frozen=True)
class TrainConfig:
    task_name: str
    model_name: str | None
    text_column: str
    label_column: str
    bbox_column: str
    use_bbox: bool
    input_format: str
    tokens_field: str
    tags_field: str
    repair_iob: bool
    seqeval_mode: str
    num_train_epochs: float
    max_steps: int
    per_device_train_batch_size: int
    per_device_eval_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    optim: str
    lr_scheduler_type: str
    lr_scheduler_kwargs: dict[str, Any]
    max_grad_norm: float
    auto_find_batch_size: bool
    class_weights: str | dict[str, float]
    apply_lora: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: str | None
    merge_lora_weights: bool
    export_onnx: bool
    max_seq_length: int
    stride: int
    label_all_tokens: bool
    seed: int
    fp16: bool
    bf16: bool
    eval_strategy: str
    eval_steps: int
    metric_for_best_model: str | None
    early_stopping_patience: int
    multilabel_threshold: float | None
    logging_steps: int
    save_steps: int
    save_total_limit: int
    pack_sequences: bool | None
    group_by_length: bool
    dataloader_num_workers: int
    distributed: bool | None
    processes_per_host: int
    trust_remote_code: bool


assert {f.name for f in fields(TrainConfig)} == set(_BY_NAME), "HYPERPARAMETERS and TrainConfig disagree"


def _closest(name: str) -> str:
    """A hint for an unknown name: the closest valid one, or where a hub token goes instead.

    ``hub_token`` and the like are not hyperparameters: SageMaker shows hyperparameters with the job,
    and the token is read from the environment. The hint never repeats the value given.
    """
    names = list(_BY_NAME)
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
    if not match and "token" in name.lower():
        return (
            " A Hugging Face hub token is read from the HF_TOKEN environment variable (the Estimator's "
            "`environment`), not from hyperparameters."
        )
    match = match or difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def parse_hyperparameters(raw: Mapping[str, Any]) -> TrainConfig:
    """Turn decoded SageMaker hyperparameters into a validated :class:`TrainConfig`.

    Unknown names fail (a typo would otherwise silently train with a default); the keys SageMaker
    adds are ignored: ``sagemaker_*`` (the SDK) and ``_tuning_objective_metric`` and the like (a
    hyperparameter tuning job: its names start with ``_``, which none of ours does).
    """
    values: dict[str, Any] = {spec.name: spec.default for spec in HYPERPARAMETERS}
    for name, value in raw.items():
        if name.startswith(("sagemaker_", "_")):
            continue
        spec = _BY_NAME.get(name)
        if spec is None:
            raise UserError(f"Unknown hyperparameter '{name}'.{_closest(name)}")
        try:
            values[name] = spec.parse(value)
        except (ValueError, TypeError) as exc:
            raise UserError(
                f"Hyperparameter '{name}' has an invalid value {json.dumps(value)}: {exc}"
            ) from exc
    if values["stride"] is None:  # auto
        values["stride"] = max(0, min(DEFAULT_STRIDE, (values["max_seq_length"] - 4) // 2))
    config = TrainConfig(**values)
    _validate(config)
    return config


def _validate(config: TrainConfig) -> None:
    def bad(name: str, why: str) -> UserError:
        return UserError(f"Hyperparameter '{name}' = {getattr(config, name)!r}: {why}")

    if config.task_name is None:
        raise UserError(f"Hyperparameter 'task_name' is required: one of {', '.join(TASK_NAMES)}.")
    if config.task_name not in TASK_NAMES:
        match = difflib.get_close_matches(config.task_name, TASK_NAMES, n=1)
        hint = f" Did you mean '{match[0]}'?" if match else ""
        raise bad("task_name", f"unknown task; expected one of {', '.join(TASK_NAMES)}.{hint}")
    for name in (
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "logging_steps",
    ):
        if getattr(config, name) < 1:
            raise bad(name, "must be at least 1")
    for name in (
        "eval_steps",
        "save_steps",
        "early_stopping_patience",
        "dataloader_num_workers",
        "save_total_limit",
        "processes_per_host",
    ):
        if getattr(config, name) < 0:
            raise bad(name, "must not be negative")
    if config.max_steps == 0 or config.max_steps < -1:
        raise bad("max_steps", "must be a positive number of steps, or -1 to train for num_train_epochs")
    if config.max_steps == -1 and config.num_train_epochs <= 0:
        raise bad("num_train_epochs", "must be positive")
    if config.learning_rate <= 0:
        raise bad("learning_rate", "must be positive")
    if config.weight_decay < 0:
        raise bad("weight_decay", "must not be negative")
    if not 0.0 <= config.warmup_ratio < 1.0:
        raise bad("warmup_ratio", "must be in [0, 1)")
    if config.max_grad_norm < 0:
        raise bad("max_grad_norm", "must not be negative")
    if config.lora_r < 1 or config.lora_alpha < 1:
        raise bad("lora_r" if config.lora_r < 1 else "lora_alpha", "must be at least 1")
    if not 0.0 <= config.lora_dropout < 1.0:
        raise bad("lora_dropout", "must be in [0, 1)")
    if config.class_weights != "none" and config.task_name not in ("ner", "classif"):
        raise bad("class_weights", "weights labels of ner and classif only")
    if not 8 <= config.max_seq_length <= 100_000:
        raise bad("max_seq_length", "must be between 8 and 100000")
    half_window = (config.max_seq_length - 4) // 2
    if config.task_name == "ner" and not 0 <= config.stride <= half_window:
        raise bad("stride", f"must be between 0 and {half_window} (half a window)")
    if config.fp16 and config.bf16:
        raise bad("fp16", "fp16 and bf16 cannot both be on")
    if config.eval_strategy not in {"auto", "epoch", "steps", "no"}:
        raise bad("eval_strategy", "must be one of auto, epoch, steps, no")
    if config.eval_strategy == "steps" and config.eval_steps == 0:
        raise bad("eval_steps", "must be set when eval_strategy is 'steps'")
    if config.export_onnx and config.apply_lora and not config.merge_lora_weights:
        raise bad("export_onnx", "exports one set of weights: set merge_lora_weights=true (the default)")
    if config.use_bbox and config.task_name != "ner":
        raise bad("use_bbox", "word boxes are supported for the ner task only")
