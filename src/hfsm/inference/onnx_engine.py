"""Forward passes with ONNX Runtime over the export in ``model/onnx/``: no torch, no ``transformers``.

Why a second engine: a worker that imports neither answers /ping 200 in about a second instead of
the ten that importing torch and ``transformers`` takes on a small CPU, and ONNX Runtime's CPU
kernels (fused layer norms and GELU, its own GEMMs, int8 products) and batches run side by side ran
the same MiniLM 1.5x (float32) and 2.1x (int8) as fast as torch's float32 server on a 2-core AVX2
EPYC. The export is written by ``train`` (``export_onnx=true``) or ``python -m hfsm local
export-onnx`` and checked against torch when written (:mod:`hfsm.inference.onnx_export`).

Batches are padded, longest first (packing needs the model's position handling, which the graph
has fixed at export). A forward call of one batch (a real-time request) runs on every thread: one
20-token record took 9.2 ms on two threads, 12.4 ms on one. A call of several batches (Batch
Transform, merged requests) runs them side by side, one thread each, on a second session of the same
graph: MiniLM-sized matrices split poorly across threads (two intra-op threads ran int8 CoNLL
batches 1.5x as fast as one thread, two batches at once 1.9x; the second session costs 27 MB for
MiniLM int8, 76 MB float32). A few records (merged requests) are cut into one batch per thread
where the threads' work comes out even (see :func:`batch_plan`), not into equal counts: the longest
records' batch would keep one thread busy while the other waits (eight-record calls on CoNLL
sentences, float32: 320 records/s with equal counts, 430-460 with even work, on a 2-core AVX-512 EPYC).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import ModelBundle
from ..data.windows import PAD_BOX
from ..errors import UserError
from .exported_tokenizer import ExportedTokenizer, TokenizerSpec

if TYPE_CHECKING:
    from .predictor import PredictOptions

log = logging.getLogger("hfsm.predict")

ONNX_DIR = "onnx"
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
MANIFEST_FILE = "export.json"
MANIFEST_VERSION = 1
DEFAULT_BATCH_SIZE = 8
"""Features per forward pass unless HFSM_BATCH_SIZE says otherwise: on CoNLL-2003 (MiniLM-L6, two
batches at once on 2 cores) 8 beat 4 and 16 by 3-13% for int8, and all three were within 2% for
float32."""


@dataclass(frozen=True)
class Manifest:
    """``onnx/export.json``: what the graph takes and gives, and what it was checked against."""

    inputs: tuple[str, ...]
    token_level: bool
    tokenizer: TokenizerSpec
    weights_bytes: int
    """Size of the safetensors weights it was exported from: a folder whose weights changed since has a
    stale export, which must not be served."""
    int8: bool
    raw: Mapping[str, Any]
    weights_sha256: str | None = None
    """Their SHA-256 (None in exports written before it was recorded): a model fine-tuned again has
    weights of the same size, and only their contents tell the export is stale."""

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format_version") != MANIFEST_VERSION:
                raise ValueError(
                    f"format_version {data.get('format_version')!r}, expected {MANIFEST_VERSION}"
                )
            return cls(
                inputs=tuple(data["inputs"]),
                token_level=bool(data["token_level"]),
                tokenizer=TokenizerSpec.from_json(data["tokenizer"]),
                weights_bytes=int(data["weights"]["bytes"]),
                int8=bool(data.get("int8")),
                raw=data,
                weights_sha256=data["weights"].get("sha256"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path} cannot be read ({exc}); export the model again") from exc


def weights_bytes(model_dir: Path) -> int:
    """Total size of the folder's safetensors weights (one file, or the shards of a large model)."""
    return sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))


def weights_sha256(model_dir: Path) -> str:
    """SHA-256 over the folder's safetensors weights, in name order (about 0.1 s for MiniLM's 87 MB)."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def has_export(model_dir: Path) -> bool:
    return (model_dir / ONNX_DIR / MODEL_FILE).is_file()


class OnnxEngine:
    """Logits of padded batches from an ONNX Runtime session."""

    name = "onnxruntime"

    def __init__(
        self,
        session: Any,
        manifest: Manifest,
        id2label: dict[int, str],
        options: PredictOptions,
        graph: str,
        batch_session: Any = None,
        threads: int = 1,
    ) -> None:
        self.session = session
        """Runs a lone batch, on all the threads."""
        self.batch_session = batch_session
        """Runs each of several batches on one thread, ``threads`` of them at once (None: one at a time)."""
        self.threads = threads if batch_session is not None else 1
        # session.run releases the GIL, so these threads run batches in parallel
        self._pool = (
            ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="hfsm-onnx")
            if self.threads > 1
            else None
        )
        self.inputs = manifest.inputs
        self.token_level = manifest.token_level
        self.id2label = id2label
        self.options = options
        self.graph = graph
        pad = manifest.tokenizer.pad_token_id
        self.pad_values: dict[str, Any] = {
            "input_ids": pad if pad is not None else 0,
            "bbox": list(PAD_BOX),
        }

    @property
    def description(self) -> str:
        at_once = f"{self.threads} batches at once" if self.threads > 1 else "one batch at a time"
        return f"onnxruntime, {self.graph}, {at_once}"

    @classmethod
    def load(
        cls, model_dir: Path, bundle: ModelBundle, options: PredictOptions
    ) -> tuple[OnnxEngine, ExportedTokenizer]:
        """The engine and the exported tokenizer of ``model_dir/onnx``."""
        import onnxruntime as ort

        started = time.monotonic()
        folder = model_dir / ONNX_DIR
        manifest = Manifest.load(folder)
        stale = manifest.weights_bytes != weights_bytes(model_dir) or (
            manifest.weights_sha256 is not None and manifest.weights_sha256 != weights_sha256(model_dir)
        )
        if stale:
            raise UserError(
                f"{folder} was exported from other weights than {model_dir}'s (their size or SHA-256 "
                "differs); export again with `python -m hfsm local export-onnx` or set HFSM_RUNTIME=torch"
            )
        graph = MODEL_FILE
        if options.quantize == "int8":
            if not manifest.int8:
                raise UserError(
                    f"HFSM_QUANTIZE=int8 with ONNX Runtime needs {folder / INT8_FILE}, which this export "
                    "does not have; export again (int8 is written by default) or set HFSM_RUNTIME=torch"
                )
            graph = INT8_FILE
        threads = options.torch_threads or len(os.sched_getaffinity(0))
        try:
            session = _session(ort, folder / graph, threads)
            batch_session = _session(ort, folder / graph, 1) if threads > 1 else None
            tokenizer = ExportedTokenizer.load(folder, manifest.tokenizer)
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            id2label = {int(key): name for key, name in config["id2label"].items()}
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"Cannot load the ONNX export in {folder}: {exc}") from exc
        except Exception as exc:  # onnxruntime's own errors (a truncated or foreign graph)
            if type(exc).__module__.startswith("onnxruntime"):
                raise UserError(f"Cannot load the ONNX export in {folder}: {exc}") from exc
            raise
        missing = [name for name in (i.name for i in session.get_inputs()) if name not in manifest.inputs]
        if missing:
            raise UserError(f"{folder / graph} takes inputs {missing} that {MANIFEST_FILE} does not list")
        engine = cls(session, manifest, id2label, options, graph, batch_session, threads)
        log.info(
            "loaded %s model (%s) from %s on cpu in %.1fs",
            bundle.task,
            engine.description,
            folder,
            time.monotonic() - started,
        )
        return engine, tokenizer

    def decide_packing(self, probe: Sequence[dict[str, Any]]) -> None:
        log.info("forward passes are padded (ONNX Runtime): batches are formed longest first")

    def forward(self, features: Sequence[dict[str, Any]]) -> list[np.ndarray]:
        """Logits per feature (per position for token tasks), in the features' order; batches are
        formed longest first so that each pads little, and padding is cut off again."""
        lengths = [len(feature["input_ids"]) for feature in features]
        order = sorted(range(len(features)), key=lengths.__getitem__, reverse=True)
        outputs: list[np.ndarray | None] = [None] * len(features)
        batches = [
            order[start : start + size]
            for start, size in batch_plan([lengths[i] for i in order], self.batch_size, self.threads)
        ]

        alone = self._pool is None or len(batches) == 1
        session = self.session if alone else self.batch_session

        def run(indices: list[int]) -> np.ndarray:
            chosen = [features[i] for i in indices]
            return session.run(None, self.pad(chosen, lengths[indices[0]]))[0]

        results = map(run, batches) if alone else self._pool.map(run, batches)  # type: ignore[union-attr]
        for indices, logits in zip(batches, results, strict=True):
            for row, index in enumerate(indices):
                outputs[index] = logits[row, : lengths[index]] if self.token_level else logits[row]
        return outputs  # type: ignore[return-value]

    @property
    def batch_size(self) -> int:
        return max(1, self.options.batch_size or DEFAULT_BATCH_SIZE)

    def pad(self, features: Sequence[dict[str, Any]], longest: int) -> dict[str, np.ndarray]:
        """The session's inputs for ``features``, padded to ``longest`` positions."""
        batch: dict[str, np.ndarray] = {}
        for name in self.inputs:
            if name == "attention_mask" and name not in features[0]:
                rows = [[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in features]
            else:
                if name not in features[0]:
                    raise ValueError(f"the ONNX graph takes {name!r}, which preprocessing did not produce")
                pad = self.pad_values.get(name, 0)
                rows = [list(f[name]) + [pad] * (longest - len(f[name])) for f in features]
            batch[name] = np.asarray(rows, dtype=np.int64)
        return batch


def _session(ort: Any, graph: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # threads sleep between runs instead of spinning: the request threads of the worker (HTTP, JSON)
    # need those cores between forward passes (single-record latency and 8-client throughput were
    # the same or better without spinning here)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def batch_plan(lengths: Sequence[int], batch_size: int, threads: int) -> list[tuple[int, int]]:
    """(start, size) of each batch of features whose ``lengths`` are sorted longest first.

    More features than one batch per thread: batches of ``batch_size``, which the threads take in turn.
    Fewer (merged real-time requests): one batch per thread at most, cut where the threads' work
    comes out most even. A batch costs about its rows times its longest row, and the call lasts as
    long as its costliest batch: eight sentences of 40 down to 8 tokens split 3 + 5 (120 and 100
    padded tokens), not 4 + 4 (160 and 72).
    """
    count = len(lengths)
    size = max(1, batch_size)
    if count == 0:
        return []
    if count > size * threads:
        return [(start, min(size, count - start)) for start in range(0, count, size)]
    # Bisect the cost of the costliest batch: the fewer batches a limit needs, the higher it is, and
    # at size x the longest row it needs ceil(count / size) <= threads. The smallest limit that fits
    # is itself some batch's cost, so it cuts exactly there (a few cuts per call, on the hot path).
    low, high = max(1, lengths[0]), size * max(1, lengths[0])  # the longest row alone; full batches
    while low < high:
        middle = (low + high) // 2
        plan = _cut(lengths, size, middle)
        if plan is not None and len(plan) <= threads:
            high = middle
        else:
            low = middle + 1
    return _cut(lengths, size, high) or []


def _cut(lengths: Sequence[int], batch_size: int, limit: int) -> list[tuple[int, int]] | None:
    """Batches in order, each as large as ``limit`` allows (rows x longest row); None if a row alone
    exceeds it. Taking as many rows as fit is never worse: the next batch's longest row only gets shorter."""
    plan = []
    start = 0
    while start < len(lengths):
        rows = min(batch_size, len(lengths) - start, limit // max(1, lengths[start]))
        if rows == 0:
            return None
        plan.append((start, rows))
        start += rows
    return plan
