"""The models of a multi-model endpoint, by the names SageMaker gives them.

SageMaker's multi-model contract: the platform copies a model's ``model.tar.gz`` from S3, unpacks it
under ``/opt/ml/models/<name>/model``, asks the container to load it (``POST /models``), routes
requests to it by name, and asks the container to unload the least recently used models when a load
answers 507 (not enough memory). So a load is admitted only when the model's weights fit the memory
left, and an unload must give the memory back: the model's batching thread is ended and nothing else
keeps a reference to it.

Loading happens in the request that asks for it (the platform waits for the answer), outside the
registry's lock, so that requests to other models go on meanwhile.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..allocator import release_free_memory
from ..bundle import describe_folder, pickled_weights_only
from ..devices import available_memory_bytes
from ..errors import RequestError
from ..inference.batching import MicroBatcher
from ..inference.onnx_engine import INT8_FILE, MODEL_FILE, ONNX_DIR
from ..inference.onnx_engine import weights_bytes as safetensors_bytes
from ..inference.predictor import ModelError, Outcome, PredictOptions
from ..inference.runtime import resolve_runtime
from ..training.checkpoints import safetensors_problem
from .state import PredictorLike

log = logging.getLogger("hfsm.serve")

LOAD_PEAK_FACTOR = 2.0
"""Memory a load needs at its peak, as a multiple of its weight files: the tensors, plus the file's
pages while they are read (and, for torch int8, the float32 weights while they are quantized)."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    url: str
    task: str
    runtime: str
    weights_bytes: int
    loaded_at: float
    predictor: MicroBatcher[Outcome]

    def description(self) -> dict[str, Any]:
        """The Get Model answer: SageMaker's two fields, then ours."""
        return {
            "modelName": self.name,
            "modelUrl": self.url,
            "task": self.task,
            "runtime": self.runtime,
            "weightsBytes": self.weights_bytes,
        }


def weights_bytes(model_dir: Path, runtime: str, options: PredictOptions) -> int:
    """The size of the weight files ``runtime`` reads from ``model_dir``: what the model takes in memory."""
    if runtime == "onnxruntime":
        graph = INT8_FILE if options.quantize == "int8" else MODEL_FILE
        files = list((model_dir / ONNX_DIR).glob(f"{graph}*"))  # the graph and any external data
        return sum(path.stat().st_size for path in files if path.is_file())
    if pickled_weights_only(model_dir):
        return sum(path.stat().st_size for path in model_dir.glob("pytorch_model*.bin"))
    return safetensors_bytes(model_dir)


def out_of_memory(exc: BaseException) -> bool:
    """Whether a load failed for want of memory: Python's MemoryError, torch's OutOfMemoryError (a
    RuntimeError), or ONNX Runtime's std::bad_alloc, which reaches us inside a UserError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "bad_alloc" in text or "Failed to allocate memory" in text


class ModelRegistry:
    """Thread-safe name -> loaded model map with SageMaker's statuses: 409 for a name already loaded
    (or being loaded), 404 for one that is not, 507 for a model that does not fit.

    ``memory_limit_bytes`` caps what the loaded models' weights may take together (None: only the
    memory the container has left counts); ``available_memory`` reads that memory (tests pass their own).
    """

    def __init__(
        self,
        loader: Callable[[Path], PredictorLike],
        options: PredictOptions,
        *,
        batch_records: int,
        batch_wait_s: float,
        memory_limit_bytes: int | None = None,
        available_memory: Callable[[], int | None] = available_memory_bytes,
        state_file: Path | None = None,
    ) -> None:
        self._loader = loader
        self._options = options
        self._batch_records = batch_records
        self._batch_wait_s = batch_wait_s
        self._memory_limit = memory_limit_bytes
        self._available_memory = available_memory
        self._models: dict[str, LoadedModel] = {}
        self._loading: dict[str, int] = {}
        """Names being loaded, with the weight bytes they will take (admission counts them)."""
        self._lock = threading.Lock()
        self._state_file = state_file
        self._pending: set[str] = set()
        """Names a replacement worker is still to load again: requests to them are told to retry (503)."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            model = self._models.get(name)
            loading = name in self._loading or name in self._pending
        if model is None and loading:
            raise RequestError(f"model {name!r} is being loaded; retry shortly", 503)
        if model is None:
            raise RequestError(f"model {name!r} is not loaded", 404)
        return model

    def to_restore(self) -> dict[str, str]:
        """The models a previous worker of this server had loaded (name -> url), from the state file."""
        if self._state_file is None or not self._state_file.is_file():
            return {}
        try:
            saved = json.loads(self._state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s): no models to load again", self._state_file, exc)
            return {}
        return {str(name): str(url) for name, url in saved.items()} if isinstance(saved, dict) else {}

    @property
    def restoring(self) -> bool:
        """True while a replacement worker loads again what its predecessor had loaded."""
        with self._lock:
            return bool(self._pending)

    def restore_in_background(self, models: dict[str, str]) -> None:
        """Load again, in a thread, the models a worker that died had loaded: SageMaker still routes
        to them. :attr:`restoring` is true from now until the last is done."""
        with self._lock:
            self._pending = set(models)
        threading.Thread(target=self._restore, args=(models,), name="hfsm-restore", daemon=True).start()

    def _restore(self, models: dict[str, str]) -> None:
        try:
            log.info("a previous worker had %d model(s) loaded: loading them again", len(models))
            for name, url in models.items():
                try:
                    self.load(name, url)
                except Exception:
                    log.exception("model %r (%s) could not be loaded again", name, url)
                finally:
                    with self._lock:
                        self._pending.discard(name)
        finally:
            self._save_state()

    def _save_state(self) -> None:
        if self._state_file is None:
            return
        with self._lock:
            text = json.dumps({name: model.url for name, model in self._models.items()})
        partial = self._state_file.with_suffix(".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, self._state_file)  # a worker killed mid-write leaves the previous list

    def page(self, limit: int, after: str | None = None) -> tuple[list[LoadedModel], str | None]:
        """Up to ``limit`` models by name, after the name ``after``, and the token of the next page
        (the last name given) when there are more. Names are stable tokens while models come and go."""
        with self._lock:
            names = sorted(name for name in self._models if after is None or name > after)
            models = [self._models[name] for name in names[:limit]]
        return models, (models[-1].name if len(names) > limit else None)

    def load(self, name: str, url: str) -> LoadedModel:
        model_dir = Path(url)
        with self._lock:
            if name in self._models or name in self._loading:
                state = "loaded" if name in self._models else "being loaded"
                raise RequestError(
                    f"model {name!r} is already {state}; unload it first to load it again", 409
                )
            self._loading[name] = 0
        try:
            return self._load(name, url, model_dir)
        finally:
            with self._lock:
                self._loading.pop(name, None)

    def _load(self, name: str, url: str, model_dir: Path) -> LoadedModel:
        if not model_dir.is_dir():
            raise RequestError(f"model {name!r}: {url} is not a folder", 400)
        if (model_dir / "code" / "inference.py").is_file():
            raise RequestError(
                f"model {name!r}: {url}/code/inference.py is custom inference code, which a multi-model "
                "endpoint does not run; serve that model on its own endpoint",
                400,
            )
        # a UserError (400) for a folder this image cannot serve
        bundle = describe_folder(model_dir, self._options.folder_hints).bundle
        runtime = resolve_runtime(model_dir, self._options)
        if runtime == "torch":
            for weights in sorted(model_dir.glob("*.safetensors")):
                problem = safetensors_problem(weights)
                if problem is not None:
                    raise RequestError(f"model {name!r}: {problem}; upload its model.tar.gz again", 400)
        size = weights_bytes(model_dir, runtime, self._options)
        self._admit(name, size)
        started = time.monotonic()
        try:
            predictor = self._loader(model_dir)
            predictor.warmup()
        except ModelError as exc:  # it loads but cannot answer (NaN weights): the model's to fix
            raise RequestError(f"model {name!r} cannot serve: {exc}", 400) from None
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            raise RequestError(
                f"model {name!r}: out of memory while loading ({type(exc).__name__}); unload other models",
                507,
            ) from None
        model = LoadedModel(
            name=name,
            url=url,
            task=bundle.task,
            runtime=runtime,
            weights_bytes=size,
            loaded_at=time.time(),
            predictor=MicroBatcher(
                predictor.predict, self._batch_records, self._batch_wait_s, first_error=predictor.first_error
            ),
        )
        with self._lock:
            self._models[name] = model
        if not self.restoring:
            self._save_state()
        log.info(
            "model %r loaded from %s (%s, %s, %.0f MB of weights) in %.1fs",
            name, url, bundle.task, runtime, size / 2**20, time.monotonic() - started,
        )  # fmt: skip
        return model

    def _admit(self, name: str, size: int) -> None:
        """Reserve ``size`` for ``name``, or answer 507 so that SageMaker unloads other models first."""
        with self._lock:
            taken = sum(m.weights_bytes for m in self._models.values()) + sum(self._loading.values())
            if self._memory_limit is not None and taken + size > self._memory_limit:
                raise RequestError(
                    f"model {name!r} needs {size / 2**20:.0f} MB for its weights and the loaded models "
                    f"take {taken / 2**20:.0f} MB of the {self._memory_limit / 2**20:.0f} MB allowed "
                    "(HFSM_MODELS_MEMORY_MB); unload other models",
                    507,
                )
            available = self._available_memory()
            # loads in progress have not taken their memory yet: count what they will take
            pending = sum(self._loading.values())
            peak = int(size * LOAD_PEAK_FACTOR)
            if available is not None and available - pending < peak:
                raise RequestError(
                    f"model {name!r} needs about {peak / 2**20:.0f} MB to load ({LOAD_PEAK_FACTOR:g}x its "
                    f"{size / 2**20:.0f} MB of weights) and {max(0, available - pending) / 2**20:.0f} MB "
                    "are available; unload other models",
                    507,
                )
            self._loading[name] = size

    def unload(self, name: str) -> None:
        """Forget ``name`` and free its memory once the requests already queued for it are answered."""
        with self._lock:
            if name in self._loading:
                raise RequestError(
                    f"model {name!r} is being loaded; unload it once its load has answered", 409
                )
            model = self._models.pop(name, None)
        if model is None:
            raise RequestError(f"model {name!r} is not loaded", 404)
        if not model.predictor.close(timeout=60):
            log.warning("model %r: requests still running 60 s after its unload", name)
        del model
        self._save_state()
        gc.collect()  # what reference cycles the model's objects are in: free them now, not some day
        release_free_memory()  # else the allocator keeps it, and the next load is refused for it
        log.info("model %r unloaded", name)
