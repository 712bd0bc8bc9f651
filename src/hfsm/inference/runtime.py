"""Which engine runs a model folder's forward passes, decided without importing either."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..devices import visible_gpus
from ..errors import UserError
from .onnx_engine import INT8_FILE, MODEL_FILE, ONNX_DIR, has_export

if TYPE_CHECKING:
    from .predictor import PredictOptions

RUNTIMES = ("auto", "torch", "onnxruntime")


def resolve_runtime(
    model_dir: Path, options: PredictOptions, environ: Mapping[str, str] | None = None
) -> str:
    """``torch`` or ``onnxruntime`` for these options, without importing either.

    ``auto`` takes the ONNX export only where it answers like the torch model would have: on the CPU
    (this image's ONNX Runtime is the CPU build; a GPU keeps torch), without autocast (a torch option),
    without HFSM_PACK_SEQUENCES=true (the graph is padded), and for HFSM_QUANTIZE=int8 only where the
    export has its int8 graph.
    """
    if options.runtime not in RUNTIMES:
        raise UserError(f"HFSM_RUNTIME={options.runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if options.runtime == "torch":
        return "torch"
    on_cpu = options.device == "cpu" or (
        options.device is None and not visible_gpus(os.environ if environ is None else environ)
    )
    if options.runtime == "auto":
        torch_only = options.autocast != "none" or bool(options.pack_sequences)
        graph = INT8_FILE if options.quantize == "int8" else MODEL_FILE
        usable = (model_dir / ONNX_DIR / graph).is_file() and on_cpu and not torch_only
        return "onnxruntime" if usable else "torch"
    if not has_export(model_dir):
        raise UserError(
            f"HFSM_RUNTIME=onnxruntime, but {model_dir / ONNX_DIR / MODEL_FILE} does not exist: train with "
            "export_onnx=true, or run `python -m hfsm local export-onnx --model DIR` on the model folder"
        )
    if not on_cpu:
        raise UserError(
            "HFSM_RUNTIME=onnxruntime runs on the CPU only in this image; set HFSM_DEVICE=cpu, or "
            "HFSM_RUNTIME=torch to use the GPU"
        )
    if options.autocast != "none":
        raise UserError("HFSM_AUTOCAST is a torch option: unset it or set HFSM_RUNTIME=torch")
    if options.pack_sequences:
        raise UserError("HFSM_PACK_SEQUENCES=true needs torch: the ONNX graph is padded; set it to auto")
    return "onnxruntime"
