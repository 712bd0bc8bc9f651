"""Export a trained model folder to ONNX (``model/onnx/``), checked against torch before it is written.

What is written: ``model.onnx`` (float32), ``model.int8.onnx`` (dynamic int8 quantization of the
weight products, per output channel, the layer producing the logits left in float32, as in the
torch int8 path), ``tokenizer.json`` (the Rust tokenizer ``transformers`` used, see
:mod:`hfsm.inference.exported_tokenizer`) and ``export.json`` (inputs, tokenizer attributes, the
checks' results, versions). Nothing is written unless:

* the ONNX graph, run by the very engine that serves it, gives the torch model's logits (relative
  difference at most :data:`FP32_TOLERANCE`) on probe texts batched with padding, without padding,
  and longer than one window;
* the exported tokenizer gives ``transformers``' ids, word ids, token types and masks on probe
  words and texts (odd characters, truncation included).

The graph is traced by torch's TorchScript-based exporter (``dynamo=False``), although torch marks it
deprecated: in torch 2.13 the ``torch.export``-based exporter gave a BERT graph whose logits were
off by 6 (out of about 10) on padded batches here, which the first check above would refuse. The
trace is taken on a batch with padding, so that the attention mask is part of the graph.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..training.lora import ADAPTER_DIR
from .exported_tokenizer import TOKENIZER_FILE, ExportedTokenizer, TokenizerSpec
from .onnx_engine import (
    INT8_FILE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    MODEL_FILE,
    ONNX_DIR,
    Manifest,
    OnnxEngine,
    weights_bytes,
    weights_sha256,
)

log = logging.getLogger("hfsm.export")

OPSET = 17
FP32_TOLERANCE = 1e-3
"""Largest ONNX-vs-torch logit difference, relative to the largest logit, for a float32 export:
the same products in another order differ by about 1e-6."""

PROBE_TEXTS = (
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn",
    "BRUSSELS 1996-08-22",
    "The European Commission said on Thursday it disagreed with German advice to consumers to shun "
    "British lamb until scientists determine whether mad cow disease can be transmitted to sheep .",
    "Zürich naïve café coöperate – “quoted” 東京 😀 ❤️ \ufe0f",
    "a",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism 1234567890.5 U.S. e-mail",
)
"""Texts of many lengths and characters; one more, longer than any window, is made by :func:`probe_texts`."""


@dataclass(frozen=True)
class ExportReport:
    folder: Path
    inputs: tuple[str, ...]
    fp32_max_relative_diff: float
    int8: bool
    int8_max_relative_diff: float | None
    int8_top_agreement_pct: float | None
    seconds: float


def probe_texts(max_seq_length: int) -> list[str]:
    """:data:`PROBE_TEXTS` and a text longer than ``max_seq_length`` sub-tokens (several NER windows,
    truncation for the other tasks)."""
    long_text = " ".join(PROBE_TEXTS[3].split() * (max_seq_length // 20 + 2))
    return [*PROBE_TEXTS, long_text]


def export_onnx(model_dir: Path, *, int8: bool = True, trust_remote_code: bool = False) -> ExportReport:
    """Write ``model_dir/onnx`` from the model folder, replacing an earlier export; see the module."""
    from .predictor import PredictOptions, Predictor
    from .torch_engine import TorchEngine

    started = time.monotonic()
    model_dir = Path(model_dir)
    if (model_dir / ADAPTER_DIR / "adapter_config.json").is_file():
        raise UserError(
            f"{model_dir} holds an unmerged LoRA adapter ({ADAPTER_DIR}/): export needs one set of weights; "
            "train with merge_lora_weights=true"
        )
    options = PredictOptions(  # the export traces aten's Linear: oneDNN's op has no ONNX form
        runtime="torch",
        device="cpu",
        pack_sequences=False,
        onednn_linear=False,
        trust_remote_code=trust_remote_code,
    )
    predictor = Predictor.load(model_dir, options)
    engine = predictor.engine
    assert isinstance(engine, TorchEngine)
    hf_tokenizer = predictor.tokenizer
    if getattr(hf_tokenizer, "backend_tokenizer", None) is None:
        raise UserError(f"the tokenizer of {model_dir} is not a fast (Rust) tokenizer: it cannot be exported")
    features = predictor.features_of(probe_texts(predictor.bundle.max_seq_length))
    trace_batch = engine.collator(_distinct_lengths(features))
    names = tuple(key for key in trace_batch if key != "labels")
    token_level = predictor.task.token_level

    work = model_dir / f".{ONNX_DIR}-export-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _trace(engine.model, trace_batch, names, token_level, work / MODEL_FILE)
        spec = TokenizerSpec.of(hf_tokenizer)
        (work / TOKENIZER_FILE).write_text(hf_tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
        exported = ExportedTokenizer.load(work, spec)
        check_tokenizer(hf_tokenizer, exported, predictor.bundle.max_seq_length)
        manifest = Manifest(
            inputs=names,
            token_level=token_level,
            tokenizer=spec,
            weights_bytes=weights_bytes(model_dir),
            int8=int8,
            raw={},
            weights_sha256=weights_sha256(model_dir),
        )
        expected = engine.forward(features)
        fp32_diff = _max_relative_diff(
            expected, _run(work / MODEL_FILE, manifest, engine, features, exact=True)
        )
        if not fp32_diff <= FP32_TOLERANCE:
            raise UserError(
                f"the ONNX graph of {model_dir} does not compute what the model does (logits differ by "
                f"{fp32_diff:.2g} of the largest, more than {FP32_TOLERANCE}): nothing was written"
            )
        int8_diff = int8_agreement = None
        if int8:
            _quantize(work / MODEL_FILE, work / INT8_FILE)
            quantized = _run(work / INT8_FILE, manifest, engine, features, exact=False)
            int8_diff = _max_relative_diff(expected, quantized)
            int8_agreement = _top_agreement_pct(expected, quantized)
        report = ExportReport(
            folder=model_dir / ONNX_DIR,
            inputs=names,
            fp32_max_relative_diff=fp32_diff,
            int8=int8,
            int8_max_relative_diff=int8_diff,
            int8_top_agreement_pct=int8_agreement,
            seconds=time.monotonic() - started,
        )
        _write_manifest(work, manifest, report)
        target = model_dir / ONNX_DIR
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info(
        "ONNX export written to %s in %.1fs: inputs %s; float32 logits within %.1e of torch's%s",
        report.folder,
        report.seconds,
        ", ".join(names),
        report.fp32_max_relative_diff,
        ""
        if int8_diff is None
        else f"; int8 within {int8_diff:.1e}"
        + ("" if int8_agreement is None else f" (the same top label for {int8_agreement:.2f}%)"),
    )
    return report


def _distinct_lengths(features: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Up to 8 features of different lengths, longest first: a trace batch that has padding."""
    by_length: dict[int, dict[str, Any]] = {}
    for feature in features:
        by_length.setdefault(len(feature["input_ids"]), feature)
    chosen = [by_length[length] for length in sorted(by_length, reverse=True)[:8]]
    if len(chosen) < 2:
        raise UserError("the probe texts give features of a single length: cannot trace a padded batch")
    return chosen


def _trace(model: Any, batch: dict[str, Any], names: Sequence[str], token_level: bool, path: Path) -> None:
    import torch

    class Logits(torch.nn.Module):
        """The model as a function of positional inputs, answering only its logits."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True))).logits

    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch", 1: "sequence"} if token_level else {0: "batch"}
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        torch.onnx.export(
            Logits().eval(),
            tuple(batch[name] for name in names),
            str(path),
            input_names=list(names),
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    for warning in caught:  # tracer notes on Python branches; the checks below decide
        log.debug("export: %s", warning.message)


def _run(
    graph: Path, manifest: Manifest, engine: Any, features: Sequence[dict[str, Any]], *, exact: bool
) -> list[np.ndarray]:
    """The serving engine's logits over ``features`` in padded batches; with ``exact``, also one by one
    (no padding), which must agree (int8 cannot: it scales activations per batch, padding included)."""
    import onnxruntime as ort

    from .predictor import PredictOptions

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    labels = engine.id2label
    padded = OnnxEngine(session, manifest, labels, PredictOptions(batch_size=8), graph.name).forward(features)
    if not exact:
        return padded
    alone = OnnxEngine(session, manifest, labels, PredictOptions(batch_size=1), graph.name).forward(features)
    worst = _max_relative_diff(padded, alone)
    if worst > FP32_TOLERANCE * 10:
        raise UserError(
            f"the ONNX graph {graph.name} answers a text differently with and without padding in its batch "
            f"(by {worst:.2g}): nothing was written"
        )
    return padded


def _max_relative_diff(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> float:
    scale = max(1.0, max(float(np.abs(row).max()) for row in expected))
    return max(float(np.abs(a - b).max()) for a, b in zip(expected, actual, strict=True)) / scale


def _top_agreement_pct(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> float | None:
    """% of positions (texts) whose highest logit is the same label; None for regression (one output)."""
    same = total = 0
    for a, b in zip(expected, actual, strict=True):
        if a.shape[-1] < 2:
            return None
        same += int(np.sum(a.argmax(-1) == b.argmax(-1)))
        total += int(np.prod(a.shape[:-1]))
    return 100.0 * same / max(1, total)


def logits_producers(model_path: Path) -> list[str]:
    """Names of the nodes computing the logits from the last hidden state (the classifier's product),
    found by walking back from the ``logits`` output through bias additions and reshapes."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    initializers = {tensor.name for tensor in graph.initializer}
    name, found = "logits", []
    for _ in range(8):
        node = producer.get(name)
        if node is None:
            break
        if node.op_type in ("MatMul", "Gemm"):
            found.append(node.name)
            break
        inputs = [value for value in node.input if value and value not in initializers and value in producer]
        if not inputs:
            break
        name = inputs[0]
    return found


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantizer logs a line per activation to the root logger
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            # the quantizer first rewrites a Gemm as "<name>_MatMul" plus an Add: exclude that too
            nodes_to_exclude=[n for name in logits_producers(source) for n in (name, f"{name}_MatMul")],
        )
    finally:
        root.setLevel(level)


def check_tokenizer(hf_tokenizer: Any, exported: ExportedTokenizer, max_seq_length: int) -> None:
    """Refuse an exported tokenizer that encodes any probe differently from ``transformers``' own."""
    texts = probe_texts(max_seq_length)
    word_batches = [text.split() for text in texts]
    calls: list[tuple[str, Any, dict[str, Any]]] = [
        (
            "words",
            word_batches,
            {
                "is_split_into_words": True,
                "add_special_tokens": False,
                "return_attention_mask": False,
                "return_token_type_ids": False,
            },
        ),
        ("texts", texts, {"truncation": True, "max_length": max_seq_length}),
        ("one text", "hello", {"add_special_tokens": True}),
        ("one text, no special tokens", "hello", {"add_special_tokens": False}),
    ]
    for what, inputs, kwargs in calls:
        theirs, ours = hf_tokenizer(inputs, **kwargs), exported(inputs, **kwargs)
        keys = [key for key in theirs if key in ("input_ids", "attention_mask", "token_type_ids")]
        differing = [key for key in keys if key not in ours or list(theirs[key]) != list(ours[key])]
        if set(ours) - set(theirs):
            differing.append(f"extra keys {sorted(set(ours) - set(theirs))}")
        if isinstance(inputs, list):
            rows = range(len(inputs))
            if any(theirs.word_ids(row) != ours.word_ids(row) for row in rows):
                differing.append("word_ids")
        if differing:
            raise UserError(
                f"the exported tokenizer encodes the probe {what} differently from transformers' "
                f"({', '.join(differing)}): nothing was written"
            )


def _write_manifest(folder: Path, manifest: Manifest, report: ExportReport) -> None:
    import onnx
    import onnxruntime
    import torch
    import transformers

    data = {
        "format_version": MANIFEST_VERSION,
        "inputs": list(manifest.inputs),
        "output": "logits",
        "token_level": manifest.token_level,
        "opset": OPSET,
        "tokenizer": manifest.tokenizer.to_json(),
        "weights": {"bytes": manifest.weights_bytes, "sha256": manifest.weights_sha256},
        "int8": manifest.int8,
        "checks": {
            "fp32_max_relative_diff": report.fp32_max_relative_diff,
            "fp32_tolerance": FP32_TOLERANCE,
            "int8_max_relative_diff": report.int8_max_relative_diff,
            "int8_top_agreement_pct": report.int8_top_agreement_pct,
            "probe_texts": len(probe_texts(1)),
        },
        "exported_with": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
