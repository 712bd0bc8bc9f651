"""What a model folder holds besides the Hugging Face files: ``hfsm.json``, or what stands in for it.

``train`` writes ``hfsm.json`` next to ``config.json`` (labels live there as ``id2label``) and the
tokenizer; ``serve`` reads it to predict exactly as training evaluated. A folder saved by plain
``transformers`` (``save_pretrained``, the Hugging Face inference DLC's ``model.tar.gz``) has none:
:func:`describe_folder` then infers the same facts from ``config.json``, the tokenizer's settings
and the environment (``HF_TASK``), the way the DLC's toolkit picks a pipeline, and says from what.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .architectures import BBOX_MODEL_TYPES, config_value, usable_positions
from .errors import UserError
from .tasks import CLASSIF, MULTILABEL, NER, REGRESSION, TASK_NAMES

BUNDLE_FILE = "hfsm.json"
FORMAT_VERSION = 1
DEFAULT_STRIDE = 32
"""Sub-tokens of context two consecutive NER windows share (at most half a window)."""
DEFAULT_WINDOW_LIMIT = 512
"""Longest window given to a folder without ``hfsm.json`` unless HFSM_MAX_SEQ_LENGTH says otherwise:
the BERT-sized models these tasks use have 512 positions, and attention's cost grows with the square."""
DEFAULT_MULTILABEL_THRESHOLD = 0.5
MIN_WINDOW = 8
"""Shortest window allowed: room for the special tokens and a few words."""

HF_TASKS = {
    "token-classification": NER,
    "ner": NER,
    "text-classification": "text-classification",
    "sentiment-analysis": "text-classification",
}
"""``HF_TASK`` values (the DLC's names for transformers' pipelines) this image serves, and what they
mean here; text classification becomes classif, multilabel or regression by the model's config."""
TOKEN_HEAD, SEQUENCE_HEAD = "ForTokenClassification", "ForSequenceClassification"


def auto_stride(max_seq_length: int) -> int:
    """``stride=auto``: 32 sub-tokens of shared context, at most ``(max_seq_length - 4) // 2``."""
    return max(0, min(DEFAULT_STRIDE, (max_seq_length - 4) // 2))


@dataclass(frozen=True)
class ModelBundle:
    task: str
    max_seq_length: int
    stride: int
    use_bbox: bool = False
    threshold: float | None = None
    """multilabel-classif decision threshold (tuned on dev)."""
    format_version: int = FORMAT_VERSION

    def save(self, model_dir: Path) -> None:
        (model_dir / BUNDLE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, model_dir: Path) -> ModelBundle:
        path = model_dir / BUNDLE_FILE
        if not path.is_file():
            raise UserError(f"{model_dir} is not a model folder written by train: {BUNDLE_FILE} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{path} cannot be read ({exc}): the model folder is damaged") from None
        if not isinstance(data, dict) or data.get("task") not in TASK_NAMES:
            task = data.get("task") if isinstance(data, dict) else None
            raise UserError(f"{path}: unknown task {task!r}")
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass(frozen=True)
class FolderHints:
    """What the serving environment says about a model folder that ``train`` did not write."""

    task: str | None = None
    """``HF_TASK`` as given (the DLC's pipeline name); checked against ``hfsm.json`` where there is one."""
    max_seq_length: int | None = None
    """HFSM_MAX_SEQ_LENGTH: the window for a folder without ``hfsm.json``."""
    multilabel_threshold: float | None = None
    """HFSM_MULTILABEL_THRESHOLD: the decision threshold for a multilabel folder without ``hfsm.json``."""


@dataclass(frozen=True)
class FolderDescription:
    bundle: ModelBundle
    inferred: bool
    """True when ``bundle`` was inferred (no ``hfsm.json``); ``explanation`` says from what."""
    explanation: str


def describe_folder(model_dir: Path, hints: FolderHints | None = None) -> FolderDescription:
    """The folder's :class:`ModelBundle`: its ``hfsm.json``, or what its config and ``hints`` say."""
    hints = hints or FolderHints()
    hf_kind = _hf_task_kind(hints.task)
    if (model_dir / BUNDLE_FILE).is_file():
        bundle = ModelBundle.load(model_dir)
        if hf_kind is not None and (hf_kind == NER) != (bundle.task == NER):
            raise UserError(
                f"HF_TASK={hints.task!r}, but {model_dir / BUNDLE_FILE} says the model was trained for "
                f"{bundle.task}; unset HF_TASK or set it to "
                f"{'token-classification' if bundle.task == NER else 'text-classification'}"
            )
        return FolderDescription(bundle, False, f"{BUNDLE_FILE} written by train")
    return _infer(model_dir, hints, hf_kind)


def _hf_task_kind(task: str | None) -> str | None:
    if task is None:
        return None
    kind = HF_TASKS.get(task.strip().lower())
    if kind is None:
        raise UserError(
            f"HF_TASK={task!r} is not a task this image serves: it serves token classification "
            "(HF_TASK=token-classification or ner) and text classification (text-classification or "
            "sentiment-analysis: multiclass, multilabel and regression heads)"
        )
    return kind


def pickled_weights_only(model_dir: Path) -> bool:
    """True for a folder whose weights are ``pytorch_model.bin`` pickles, with no safetensors."""
    return not any(model_dir.glob("*.safetensors")) and any(model_dir.glob("pytorch_model*.bin"))


def read_config(model_dir: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, or a UserError saying why the folder cannot be served."""
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise UserError(f"{model_dir} is not a folder")
    if not path.is_file():
        held = sorted(p.name for p in model_dir.iterdir())[:10]
        raise UserError(
            f"{model_dir} is not a Hugging Face model folder: it has no config.json (it holds "
            f"{held or 'nothing'}); give a folder written by train or by save_pretrained, or set "
            "HF_MODEL_ID"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read ({exc}): the model folder is damaged") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a JSON object: the model folder is damaged")
    return config


def _infer(model_dir: Path, hints: FolderHints, hf_kind: str | None) -> FolderDescription:
    config = read_config(model_dir)
    architectures = config_value(config, "architectures") or []
    if not isinstance(architectures, list):
        architectures = []
    head = next(
        (a for a in architectures if isinstance(a, str) and a.endswith((TOKEN_HEAD, SEQUENCE_HEAD))), None
    )
    if architectures and head is None:
        raise UserError(
            f"{model_dir / 'config.json'}: architectures {architectures} has no token or sequence "
            "classification head (*ForTokenClassification, *ForSequenceClassification): this image "
            "serves token and text classifiers only"
        )
    head_kind = None if head is None else (NER if head.endswith(TOKEN_HEAD) else "text-classification")
    if hf_kind is not None and head_kind is not None and hf_kind != head_kind:
        raise UserError(
            f"HF_TASK={hints.task!r}, but {model_dir / 'config.json'} says the model is a {head}; "
            "unset HF_TASK or set the task that model does"
        )
    kind = hf_kind or head_kind
    if kind is None:
        raise UserError(
            f"{model_dir / 'config.json'} names no architecture, so the task cannot be told: set "
            "HF_TASK (token-classification or text-classification)"
        )
    reasons = [f"HF_TASK={hints.task}" if hf_kind else f"config.json architectures {head}"]
    task = NER if kind == NER else _sequence_task(config, reasons)
    window, window_reason = _window(model_dir, config, hints)
    reasons.append(window_reason)
    model_type = config_value(config, "model_type")
    use_bbox = model_type in BBOX_MODEL_TYPES
    if use_bbox:
        reasons.append(f"word boxes read (model_type {model_type})")
    threshold = None
    if task == MULTILABEL:
        threshold = hints.multilabel_threshold
        if threshold is None:
            threshold = DEFAULT_MULTILABEL_THRESHOLD
            reasons.append(f"threshold {threshold} (HFSM_MULTILABEL_THRESHOLD unset)")
        else:
            reasons.append(f"threshold {threshold} (HFSM_MULTILABEL_THRESHOLD)")
    bundle = ModelBundle(
        task=task,
        max_seq_length=window,
        stride=auto_stride(window),
        use_bbox=use_bbox,
        threshold=threshold,
    )
    return FolderDescription(bundle, True, f"no {BUNDLE_FILE}: {'; '.join(reasons)}")


def _sequence_task(config: dict[str, Any], reasons: list[str]) -> str:
    """classif, multilabel or regression, as transformers' text-classification pipeline reads the config."""
    problem_type = config_value(config, "problem_type")
    id2label = config_value(config, "id2label")
    num_labels = (
        len(id2label) if isinstance(id2label, dict) and id2label else config_value(config, "num_labels", 2)
    )
    if problem_type == "multi_label_classification":
        reasons.append("multilabel (problem_type multi_label_classification)")
        return MULTILABEL
    if problem_type == "regression" or (problem_type is None and num_labels == 1):
        reasons.append(f"regression ({'problem_type regression' if problem_type else 'one label'})")
        return REGRESSION
    reasons.append(f"multiclass ({num_labels} labels)")
    return CLASSIF


def tokenizer_max_length(model_dir: Path) -> int | None:
    """``model_max_length`` of the folder's tokenizer settings, where it is a real limit (transformers
    writes 1e30 for "none")."""
    try:
        settings = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    value = settings.get("model_max_length") if isinstance(settings, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if 0 < value < 1_000_000 else None


def _window(model_dir: Path, config: dict[str, Any], hints: FolderHints) -> tuple[int, str]:
    positions = usable_positions(config)
    if hints.max_seq_length is not None:
        if positions is not None and hints.max_seq_length > positions:
            raise UserError(
                f"HFSM_MAX_SEQ_LENGTH={hints.max_seq_length} is longer than the {positions} positions of "
                f"the model in {model_dir}; set at most {positions}"
            )
        return hints.max_seq_length, f"window {hints.max_seq_length} sub-tokens (HFSM_MAX_SEQ_LENGTH)"
    tokenizer_limit = tokenizer_max_length(model_dir)
    limits = {
        "positions": positions,
        "tokenizer model_max_length": tokenizer_limit,
        "default limit": DEFAULT_WINDOW_LIMIT,
    }
    name, window = min(((n, v) for n, v in limits.items() if v is not None), key=lambda item: item[1])
    if window < MIN_WINDOW:
        raise UserError(f"the model in {model_dir} takes {window} sub-tokens ({name}): too few to serve")
    known = ", ".join(f"{n} {v}" for n, v in limits.items() if v is not None)
    return window, f"window {window} sub-tokens (the least of {known})"
