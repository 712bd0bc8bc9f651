"""Forward passes with torch and ``transformers``: the model as trained, on CPU or GPU.

Options that only torch has live here: dynamic int8 quantization, autocast, and packing the
windows of a batch into fewer rows (which needs the model's own position handling, checked on a
probe batch at warm-up).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..architectures import PREFIX_SPACE_MODEL_TYPES
from ..bundle import ModelBundle, pickled_weights_only
from ..errors import UserError
from ..tasks import get_task
from ..training.lora import ADAPTER_DIR, load_adapter
from . import int8, onednn_linear

if TYPE_CHECKING:
    from .predictor import PredictOptions

log = logging.getLogger("hfsm.predict")

PACKING_TOLERANCE = {"none": 1e-3, "int8": 5e-2, "autocast": 2e-2}
"""Largest packed-vs-padded logit difference relative to the largest logit. int8 dynamic quantization
scales activations per batch, so its outputs already depend on which rows share a batch; under
autocast every product is rounded to 8 significant bits, wherever its row sits."""

AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
DEFAULT_BATCH_SIZE = 32
"""Features per forward pass unless HFSM_BATCH_SIZE says otherwise (16 and 64 were slower on CoNLL-2003)."""


def load_torch_model(model_dir: Path, bundle: ModelBundle, trust_remote_code: bool) -> tuple[Any, Any]:
    """(model, tokenizer) of a model folder, on the CPU, float32, eval mode.

    Safetensors weights are read where there are any. A folder with only ``pytorch_model.bin``
    (older ``save_pretrained``) is read with ``torch.load(weights_only=True)``, which rebuilds
    tensors and plain containers and refuses any other object: a pickle that would run code is a
    start error saying how to convert it, never executed.
    """
    from transformers import AutoConfig, AutoTokenizer

    pickled = pickled_weights_only(model_dir)
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        extra = {"add_prefix_space": True} if config.model_type in PREFIX_SPACE_MODEL_TYPES else {}
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code, **extra)
        model = (
            get_task(bundle.task)
            .auto_model_class()
            .from_pretrained(
                model_dir, config=config, use_safetensors=not pickled, trust_remote_code=trust_remote_code
            )
        )
    except (OSError, ValueError) as exc:
        hint = (
            "" if trust_remote_code else " If the model needs custom code, set HFSM_TRUST_REMOTE_CODE=true."
        )
        raise UserError(f"Cannot load the model in {model_dir}: {exc}.{hint}") from exc
    except Exception as exc:
        if type(exc).__name__ != "UnpicklingError":  # what weights_only=True raises on any object
            raise
        raise UserError(
            f"{model_dir}/pytorch_model.bin holds objects other than tensors, which this image does not "
            "unpickle (torch.load with weights_only=True refuses them). Convert the weights to "
            "safetensors on a machine you trust (see 'Serving a model trained elsewhere' in "
            "docs/serving.md) and package that folder"
        ) from None
    if (model_dir / ADAPTER_DIR / "adapter_config.json").is_file():  # merge_lora_weights=false
        model = load_adapter(model, model_dir)
    model.eval()
    return model, tokenizer


class TorchEngine:
    """Logits of padded (or packed) batches from a ``transformers`` model."""

    name = "torch"

    def __init__(
        self,
        model: Any,
        pad_token_id: int,
        options: PredictOptions,
        device: str,
        token_level: bool,
        onednn_linear: bool = False,
        quantized_engine: str | None = None,
    ) -> None:
        from ..data.collate import Collator

        self.model = model
        self.options = options
        self.device = device
        self.token_level = token_level
        self.collator = Collator(pad_token_id, pad_to_multiple_of=8 if device.startswith("cuda") else None)
        self.onednn_linear = onednn_linear
        """Whether the Linear layers run on oneDNN (:func:`onednn_linear.route_linear_layers`)."""
        self.quantized_engine = quantized_engine
        """The quantized engine the int8 weights were packed for (:mod:`.int8`); None: not int8."""
        self.position_offset: int | None = None
        """First position id of packed windows; None: padded forward passes (see :meth:`decide_packing`)."""

    @property
    def id2label(self) -> dict[int, str]:
        return {int(key): name for key, name in self.model.config.id2label.items()}

    @property
    def description(self) -> str:
        if self.options.quantize == "int8":
            return f"torch, int8 dynamic quantization ({self.quantized_engine} kernels)"
        if self.options.autocast != "none":
            return f"torch, {self.options.autocast} autocast"
        return "torch, oneDNN Linear" if self.onednn_linear else "torch"

    @classmethod
    def load(cls, model_dir: Path, bundle: ModelBundle, options: PredictOptions) -> tuple[TorchEngine, Any]:
        """The engine and the ``transformers`` tokenizer of ``model_dir``."""
        import torch

        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        started = time.monotonic()
        model, tokenizer = load_torch_model(model_dir, bundle, options.trust_remote_code)
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        check_autocast(options, device)
        model.to(device)
        quantized_engine: str | None = None
        if options.quantize == "int8":
            quantized_engine = int8.choose_engine(options.quantized_engine)
            model = int8.quantize_int8(model, device, quantized_engine)
        elif options.quantized_engine != "auto":
            log.warning(
                "HFSM_QUANTIZED_ENGINE=%s has no effect without HFSM_QUANTIZE=int8", options.quantized_engine
            )
        onednn = onednn_linear.decide(options.onednn_linear, device, options.quantize, options.autocast)
        if onednn:
            onednn_linear.route_linear_layers(model)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        engine = cls(
            model, pad_id, options, device, get_task(bundle.task).token_level, onednn, quantized_engine
        )
        log.info(
            "loaded %s model (%s; %s) from %s on %s in %.1fs",
            bundle.task,
            model.config.model_type,
            engine.description,
            model_dir,
            device,
            time.monotonic() - started,
        )
        return engine, tokenizer

    def decide_packing(self, probe: Sequence[dict[str, Any]]) -> None:
        """Pack the windows of a forward pass if this model computes them like padded ones.

        Requests merged by dynamic batching hold texts of any lengths; padded, their forward pass
        computes mostly padding. Whether packing is exact depends on the model's code, so it is
        tested on ``probe`` features (see :func:`hfsm.data.packing.check_packing`).
        """
        import torch

        from ..data.packing import check_packing, position_offset_candidates

        batch = {key: tensor.to(self.device) for key, tensor in self.collator(list(probe)).items()}
        tolerance = PACKING_TOLERANCE[
            "autocast" if self.options.autocast != "none" else self.options.quantize
        ]
        with torch.inference_mode(), self._precision():
            check = check_packing(self.model, batch, tolerance, position_offset_candidates(self.model.config))
        name = type(self.model).__name__
        if check.position_offset is not None:
            self.position_offset = check.position_offset
            log.info("forward passes are packed: %s computes packed windows like padded ones", name)
        elif self.options.pack_sequences:
            raise UserError(
                f"HFSM_PACK_SEQUENCES=true, but {name} does not compute packed windows like padded ones "
                f"({check.reason or 'nothing to compare'}); set it to auto or false"
            )
        else:
            log.info("forward passes are padded: %s cannot be packed (%s)", name, check.reason)

    def forward(self, features: Sequence[dict[str, Any]]) -> list[np.ndarray]:
        """Logits per feature (per position for token tasks), in the features' order.

        Features are batched longest first so that each batch pads little; padding positions are
        cut off again before the logits are returned.
        """
        import torch

        from ..data.packing import float_dtype, pack_batch, pack_rows

        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]), reverse=True)
        outputs: list[np.ndarray | None] = [None] * len(features)
        batch_size = max(1, self.options.batch_size or DEFAULT_BATCH_SIZE)
        with torch.inference_mode(), self._precision():
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                batch = self.collator([features[i] for i in chosen])
                batch = {key: tensor.to(self.device) for key, tensor in batch.items()}
                lengths = [len(features[i]["input_ids"]) for i in chosen]
                if self.position_offset is not None and len(pack_rows(lengths, lengths[0])) < len(chosen):
                    packed = pack_batch(batch, float_dtype(self.model), self.position_offset)
                    logits = self.model(**packed.inputs).logits.float().cpu().numpy()
                    for place, index in zip(packed.placements, chosen, strict=True):
                        outputs[index] = logits[place.row, place.offset : place.offset + place.length]
                    continue
                logits = self.model(**batch).logits.float().cpu().numpy()
                for row, index in enumerate(chosen):
                    outputs[index] = logits[row, : lengths[row]] if self.token_level else logits[row]
        return outputs  # type: ignore[return-value]

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` for ``HFSM_AUTOCAST``; nothing for float32."""
        if self.options.autocast == "none":
            return contextlib.nullcontext()
        import torch

        dtype = getattr(torch, AUTOCAST_DTYPES[self.options.autocast])
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)


def check_autocast(options: PredictOptions, device: str) -> None:
    """Refuse autocast settings that cannot work on ``device``; warn where it would be slow."""
    if options.autocast == "none":
        return
    import torch

    if options.autocast not in AUTOCAST_DTYPES:
        raise UserError(f"HFSM_AUTOCAST={options.autocast!r}: expected none, bf16 or fp16")
    if options.quantize != "none":
        raise UserError("HFSM_AUTOCAST and HFSM_QUANTIZE=int8 cannot be combined: choose one")
    if device.startswith("cpu"):
        if options.autocast == "fp16":
            raise UserError("HFSM_AUTOCAST=fp16 runs on GPUs only; use bf16 on a CPU")
        native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)()
        if not native:
            log.warning(
                "HFSM_AUTOCAST=bf16 on a CPU without native bfloat16 (AVX-512 BF16 or AMX): "
                "expect it slower than float32"
            )
    elif device.startswith("cuda") and options.autocast == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError("HFSM_AUTOCAST=bf16: this GPU has no bfloat16; use fp16")
