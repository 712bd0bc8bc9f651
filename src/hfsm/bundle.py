"""What a trained model folder holds besides the Hugging Face files: ``hfsm.json``.

``train`` writes it next to ``config.json`` (labels live there as ``id2label``) and the
tokenizer; ``serve`` reads it to predict exactly as training evaluated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError
from .tasks import TASK_NAMES

BUNDLE_FILE = "hfsm.json"
FORMAT_VERSION = 1


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
