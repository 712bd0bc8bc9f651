"""Every environment variable the server reads, read once into one immutable value.

SageMaker sets the ``SAGEMAKER_*`` variables (see its bring-your-own-container contract); the
``HFSM_*`` ones are this image's own. A bad value is a :class:`UserError` naming the variable, so
a misconfigured endpoint fails at start with a message instead of misbehaving under load.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..bundle import HF_TASKS, MIN_WINDOW, FolderHints
from ..config import parse_choice
from ..devices import available_cores, visible_gpus
from ..errors import UserError
from ..inference.codecs import DEFAULT_MAX_JSON_DEPTH, MAX_JSON_DEPTH_LIMIT
from ..inference.int8 import ENGINE_CHOICES
from ..inference.predictor import PredictOptions
from ..inference.runtime import RUNTIMES
from .user_code import UserCode

DEFAULT_BASE_DIR = "/opt/ml"
MERGED_RECORDS = 32
T = TypeVar("T")


@dataclass(frozen=True)
class ServingSettings:
    model_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    threads: int = 16
    """gthread threads per worker: /ping answers while another thread predicts, and concurrent
    requests are read in parallel so that the batcher can merge them."""
    batch_wait_ms: float = 5.0
    """How long a request waits for concurrent requests that are still being read, to share a forward pass."""
    timeout: int = 60
    graceful_timeout: int = 25
    """Seconds that requests in flight get after SIGTERM. gunicorn exits about this long after it
    when a request outlasts it; SageMaker sends SIGKILL 30 s after SIGTERM, so the default keeps
    a margin for the rest of the shutdown."""
    max_payload_mb: int = 6
    max_records: int | None = None
    """None: no cap. Batch Transform packs MULTI_RECORD payloads by size only, so any count cap can
    refuse a legitimate mini-batch of short lines; set one (HFSM_MAX_RECORDS) for real-time endpoints."""
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    """Deepest nesting of JSON arrays and objects read (per line in JSON Lines); deeper is a 400,
    refused before parsing, whose recursion would otherwise end in a RecursionError."""
    max_concurrent_transforms: int = 1
    access_log: bool = False
    log_level: str = "info"
    gpu_ids: tuple[str, ...] = ()
    """GPUs to share among the workers (one each, round-robin); empty on CPU."""
    predict: PredictOptions = field(default_factory=PredictOptions)
    multi_model: bool = False
    """A multi-model endpoint (SageMaker sets SAGEMAKER_MULTI_MODEL=true): no model at start, models
    loaded and unloaded by name through /models (see :mod:`.multi_model`)."""
    models_state_file: Path | None = None
    """Multi-model: where the worker records the models it has loaded, so that a replacement worker
    (the first one killed, out of memory) loads them again; set by ``serve`` in the master."""
    models_memory_mb: int | None = None
    """Multi-model: the most memory the loaded models' weights may take together; None: the memory
    the container has left decides."""
    hf_model_id: str | None = None
    """HF_MODEL_ID: a Hub model (or a local folder) to serve when the model folder is empty."""
    hf_model_revision: str | None = None
    hf_token: str | None = field(default=None, repr=False)
    """HF_TOKEN (or HF_API_TOKEN): for a gated or private Hub model; never logged."""
    user_code: UserCode | None = None
    """Custom inference code (``code/inference.py``); found by ``serve`` in the master."""

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1024 * 1024

    @property
    def merged_records(self) -> int:
        """Most records one merged batch of concurrent requests holds: HFSM_BATCH_SIZE, else 32."""
        return self.predict.batch_size or MERGED_RECORDS

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        env = os.environ if environ is None else environ
        base = Path(env.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE_DIR))
        model_dir = Path(env["HFSM_MODEL_DIR"]) if env.get("HFSM_MODEL_DIR") else base / "model"
        gpu_ids = visible_gpus(env)
        cores = available_cores()
        multi_model = _read(env, "SAGEMAKER_MULTI_MODEL", False, _bool)
        default_workers = 1 if multi_model else len(gpu_ids) or 1
        workers = _read(env, "SAGEMAKER_MODEL_SERVER_WORKERS", default_workers, _positive_int)
        if multi_model and workers > 1:
            raise UserError(
                f"SAGEMAKER_MODEL_SERVER_WORKERS={workers}: a multi-model endpoint "
                "(SAGEMAKER_MULTI_MODEL=true) runs one worker, which holds every loaded model once and "
                "uses all the cores; unset it"
            )
        torch_threads = _read(env, "HFSM_TORCH_THREADS", max(1, cores // workers), _positive_int)
        return cls(
            model_dir=model_dir,
            host=env.get("HFSM_BIND_HOST", "0.0.0.0") or "0.0.0.0",
            port=_read(env, "SAGEMAKER_BIND_TO_PORT", 8080, _port),
            workers=workers,
            threads=_read(env, "HFSM_SERVER_THREADS", 16, _positive_int),
            batch_wait_ms=_read(env, "HFSM_BATCH_WAIT_MS", 5.0, _milliseconds),
            timeout=_read(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 60, _positive_int),
            graceful_timeout=_read(env, "HFSM_GRACEFUL_TIMEOUT", 25, _positive_int),
            max_payload_mb=_read(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, _positive_int),
            max_records=_read(env, "HFSM_MAX_RECORDS", 0, _count) or None,
            max_json_depth=_read(env, "HFSM_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH, _json_depth),
            max_concurrent_transforms=_read(env, "HFSM_MAX_CONCURRENT_TRANSFORMS", workers, _positive_int),
            access_log=_read(env, "HFSM_ACCESS_LOG", False, _bool),
            log_level=_read(env, "HFSM_LOG_LEVEL", "info", _log_level),
            gpu_ids=gpu_ids,
            predict=PredictOptions(
                batch_size=_read(env, "HFSM_BATCH_SIZE", None, _positive_int),
                max_words=_read(env, "HFSM_MAX_WORDS", 100_000, _positive_int),
                trust_remote_code=_read(
                    env, "HFSM_TRUST_REMOTE_CODE", _read(env, "HF_TRUST_REMOTE_CODE", False, _bool), _bool
                ),
                device=env.get("HFSM_DEVICE") or None,
                torch_threads=torch_threads,
                quantize=_read(env, "HFSM_QUANTIZE", "none", _quantize),
                quantized_engine=_read(env, "HFSM_QUANTIZED_ENGINE", "auto", _quantized_engine),
                pack_sequences=_read(env, "HFSM_PACK_SEQUENCES", None, _auto_bool),
                autocast=_read(env, "HFSM_AUTOCAST", "none", _autocast),
                onednn_linear=_read(env, "HFSM_ONEDNN_LINEAR", None, _auto_bool),
                runtime=_read(env, "HFSM_RUNTIME", "auto", parse_choice(*RUNTIMES)),
                folder_hints=FolderHints(
                    task=_read(env, "HF_TASK", None, _hf_task),
                    max_seq_length=_read(env, "HFSM_MAX_SEQ_LENGTH", None, _window),
                    multilabel_threshold=_read(env, "HFSM_MULTILABEL_THRESHOLD", None, _threshold),
                ),
            ),
            multi_model=multi_model,
            models_memory_mb=_read(env, "HFSM_MODELS_MEMORY_MB", 0, _count) or None,
            hf_model_id=env.get("HF_MODEL_ID", "").strip() or None,
            hf_model_revision=env.get("HF_MODEL_REVISION", "").strip() or None,
            hf_token=(env.get("HF_TOKEN") or env.get("HF_API_TOKEN") or "").strip() or None,
        )


def _read(environ: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        raise UserError(f"environment variable {name}={raw!r}: {exc}") from None


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a positive integer") from None
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def _count(raw: str) -> int:
    """A limit where 0 means none."""
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number (0: no limit)") from None
    if value < 0:
        raise ValueError("expected a whole number (0: no limit)")
    return value


def _json_depth(raw: str) -> int:
    """1 to MAX_JSON_DEPTH_LIMIT: deeper documents would reach Python's recursion limit while parsed."""
    message = f"expected a whole number from 1 to {MAX_JSON_DEPTH_LIMIT}"
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(message) from None
    if not 1 <= value <= MAX_JSON_DEPTH_LIMIT:
        raise ValueError(message)
    return value


def _hf_task(raw: str) -> str:
    if raw.lower() not in HF_TASKS:
        raise ValueError(
            "this image serves token-classification (or ner) and text-classification (or "
            "sentiment-analysis: multiclass, multilabel and regression heads)"
        )
    return raw.lower()


def _window(raw: str) -> int:
    value = _positive_int(raw)
    if value < MIN_WINDOW:
        raise ValueError(f"expected at least {MIN_WINDOW} sub-tokens")
    return value


def _threshold(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number between 0 and 1") from None
    if not 0 < value < 1:
        raise ValueError("expected a number between 0 and 1")
    return value


def _milliseconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of milliseconds") from None
    if not 0 <= value <= 1000:
        raise ValueError("expected a number of milliseconds between 0 and 1000")
    return value


def _port(raw: str) -> int:
    value = _positive_int(raw)
    if value > 65535:
        raise ValueError("expected a TCP port (1-65535)")
    return value


_quantize = parse_choice("none", "int8")
_quantized_engine = parse_choice(*ENGINE_CHOICES)
_autocast = parse_choice("none", "bf16", "fp16")
_log_level = parse_choice("debug", "info", "warning", "error", "critical")


def _auto_bool(raw: str) -> bool | None:
    """``auto`` (None: decided when the model is loaded) or a boolean."""
    if raw.lower() == "auto":
        return None
    try:
        return _bool(raw)
    except ValueError:
        raise ValueError("expected auto, true or false") from None


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")
