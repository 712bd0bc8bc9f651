"""A trained model folder turned into a function from request records to predictions.

Preprocessing is the training code's own (:func:`hfsm.training.features.encode_ner`, the same
tokenizer call for texts) and postprocessing is :mod:`hfsm.inference.postprocess`, so a served
model answers exactly what ``train`` wrote to ``test_predictions.jsonl``. Nothing here knows about
HTTP: a record that cannot be predicted yields a :class:`RecordError` in its place, so that the
caller decides whether one bad record fails the whole request (JSON) or only its own line
(JSON Lines). torch and transformers are imported on :meth:`Predictor.load`, never at import time,
so that the serving master process and the codecs stay light.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import ModelBundle
from ..data.records import Box, NerExample, parse_boxes, split_words, word_spans
from ..data.windows import WordTokenizer
from ..errors import UserError
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION, get_task
from ..training.features import EncodedSplit, encode_ner
from ..training.lora import ADAPTER_DIR, load_adapter
from ..training.model_loading import PREFIX_SPACE_MODEL_TYPES
from .postprocess import (
    classif_prediction,
    gather_word_probs,
    multilabel_prediction,
    ner_prediction,
    regression_prediction,
    sigmoid,
    softmax,
)

log = logging.getLogger("hfsm.predict")

PACKING_PROBE = (
    "The European Commission said on Thursday it disagreed with German advice",
    "Peter Blackburn",
    "BRUSSELS 1996-08-22 was quiet",
    "Germany",
)
"""Texts of different lengths whose windows pack two to a row: the batch that tests packing."""
PACKING_TOLERANCE = {"none": 1e-3, "int8": 5e-2, "autocast": 2e-2}
"""Largest packed-vs-padded logit difference relative to the largest logit. int8 dynamic quantization
scales activations per batch, so its outputs already depend on which rows share a batch; under
autocast every product is rounded to 8 significant bits, wherever its row sits."""

AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}

RECORD_CHUNK = 512
"""Records preprocessed and predicted together: bounds the memory that features and logits take,
whatever the number of records in a request (a Batch Transform mini-batch can hold many thousands)."""
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A surrogate code point in a Python str is always unpaired: json.loads joins the pairs."""


@dataclass(frozen=True)
class RecordError:
    """Why one record cannot be predicted; the other records of the request still can be.

    ``status`` is the HTTP status this error deserves when it fails a whole request.
    """

    message: str
    status: int = 400


Outcome = dict[str, Any] | RecordError


@dataclass(frozen=True)
class PredictOptions:
    """How to run the model; the server fills these from environment variables."""

    batch_size: int = 32
    """Features (NER windows or texts) per forward pass."""
    max_words: int = 100_000
    """Records with more whitespace-separated words are refused (status 413)."""
    trust_remote_code: bool = False
    device: str | None = None
    """``cuda``, ``cpu``, ... ; None: the first GPU if there is one, else the CPU."""
    torch_threads: int | None = None
    """CPU threads for torch's intra-op parallelism; None leaves torch's default."""
    quantize: str = "none"
    """``int8``: dynamic int8 quantization of the Linear layers (CPU only): about 2.5x the
    throughput for about 0.3 F1 point (bench/results); ``none``: the weights as trained."""
    pack_sequences: bool | None = None
    """NER: pack the windows of a forward pass into fewer rows when they differ in length. None:
    when :meth:`Predictor.warmup` finds the model computes them like padded ones; True: required."""
    autocast: str = "none"
    """``bf16``/``fp16``: forward passes under ``torch.autocast`` in that dtype: the weights stay
    float32, matrix products run in 16 bits (on CPUs with native bfloat16, AVX-512 BF16 or AMX, about
    1.7x float32 here for 99.98% identical word tags; fp16 on GPUs only). ``none``: float32."""


@dataclass(frozen=True)
class _Input:
    """A validated record."""

    text: str
    words: list[str]
    boxes: list[Box] | None


class Predictor:
    """A loaded model with its tokenizer and ``hfsm.json``; :meth:`predict` is thread-safe.

    Calls are serialised by a lock: one forward pass already uses every core (or the GPU), and a
    fast tokenizer must not be used by two threads at once.
    """

    def __init__(
        self, model: Any, tokenizer: Any, bundle: ModelBundle, options: PredictOptions, device: str
    ) -> None:
        from ..data.collate import Collator

        self.model = model
        self.tokenizer = tokenizer
        self.bundle = bundle
        self.options = options
        self.device = device
        self.task = get_task(bundle.task)
        self.id2label = {int(key): name for key, name in model.config.id2label.items()}
        self.word_tokenizer = (
            WordTokenizer(tokenizer, bundle.max_seq_length) if self.task.token_level else None
        )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.collator = Collator(pad_id, pad_to_multiple_of=8 if device.startswith("cuda") else None)
        self.position_offset: int | None = None
        """First position id of packed windows; None: forward passes are padded (see :meth:`warmup`)."""
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: Path | str, options: PredictOptions | None = None) -> Predictor:
        """Load a folder written by ``train`` (safetensors weights only: no pickles are executed)."""
        import torch
        from transformers import AutoConfig, AutoTokenizer

        options = options or PredictOptions()
        model_dir = Path(model_dir)
        bundle = ModelBundle.load(model_dir)
        started = time.monotonic()
        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        trust = options.trust_remote_code
        try:
            config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust)
            extra = {"add_prefix_space": True} if config.model_type in PREFIX_SPACE_MODEL_TYPES else {}
            tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust, **extra)
            model = (
                get_task(bundle.task)
                .auto_model_class()
                .from_pretrained(model_dir, config=config, use_safetensors=True, trust_remote_code=trust)
            )
        except (OSError, ValueError) as exc:
            hint = "" if trust else " If the model needs custom code, set HFSM_TRUST_REMOTE_CODE=true."
            raise UserError(f"Cannot load the model in {model_dir}: {exc}.{hint}") from exc
        if (model_dir / ADAPTER_DIR / "adapter_config.json").is_file():  # merge_lora_weights=false
            model = load_adapter(model, model_dir)
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        check_autocast(options, device)
        model.to(device)
        model.eval()
        quantized = options.quantize == "int8"
        if quantized:
            model = quantize_int8(model, device)
        log.info(
            "loaded %s model (%s%s) from %s on %s in %.1fs",
            bundle.task,
            config.model_type,
            ", int8 dynamic quantization"
            if quantized
            else (f", {options.autocast} autocast" if options.autocast != "none" else ""),
            model_dir,
            device,
            time.monotonic() - started,
        )
        return cls(model, tokenizer, bundle, options, device)

    def warmup(self) -> None:
        """Run one real prediction so that the first request pays no lazy initialisation; then decide
        whether NER forward passes are packed."""
        words = ["Warm", "up"]
        record: dict[str, Any] = {"text": " ".join(words)}
        if self.bundle.use_bbox:
            record["bbox"] = [[0, 0, 10, 10], [12, 0, 20, 10]]
        outcome = self.predict([record])[0]
        if isinstance(outcome, RecordError):
            raise RuntimeError(f"warm-up prediction failed: {outcome.message}")
        if self.task.token_level and self.options.pack_sequences is not False:
            self._decide_packing()

    def _decide_packing(self) -> None:
        """Pack the windows of a forward pass if this model computes them like padded ones.

        Requests merged by dynamic batching hold texts of any lengths; padded, their forward pass
        computes mostly padding. Whether packing is exact depends on the model's code, so it is
        tested on :data:`PACKING_PROBE` (see :func:`hfsm.data.packing.check_packing`).
        """
        import torch

        from ..data.packing import check_packing, position_offset_candidates

        examples = [NerExample(words=text.split(), boxes=None, text=text) for text in PACKING_PROBE]
        if self.bundle.use_bbox:
            examples = [
                NerExample(words=e.words, boxes=[(0, 0, 10, 10)] * len(e.words), text=e.text)
                for e in examples
            ]
        features = self._ner_windows(examples).features
        batch = {key: tensor.to(self.device) for key, tensor in self.collator(features).items()}
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

    def predict(self, records: Sequence[Any]) -> list[Outcome]:
        """One prediction or one :class:`RecordError` per record, in order."""
        outcomes: list[Outcome | None] = [None] * len(records)
        valid: list[tuple[int, _Input]] = []
        for index, record in enumerate(records):
            parsed = self._validate(record)
            if isinstance(parsed, RecordError):
                outcomes[index] = parsed
            else:
                valid.append((index, parsed))
        with self._lock:
            for start in range(0, len(valid), RECORD_CHUNK):
                chunk = valid[start : start + RECORD_CHUNK]
                results = self._predict_inputs([item for _, item in chunk])
                for (index, _), result in zip(chunk, results, strict=True):
                    outcomes[index] = result
        return outcomes  # type: ignore[return-value]

    def _validate(self, record: Any) -> _Input | RecordError:
        if not isinstance(record, Mapping):
            return RecordError(f"a record must be a JSON object with a 'text' field, got {json_type(record)}")
        if "text" not in record:
            return RecordError("the record has no 'text' field")
        text = record["text"]
        if not isinstance(text, str):
            return RecordError(f"'text' must be a string, got {json_type(text)}")
        surrogate = None if text.isascii() else _LONE_SURROGATE.search(text)
        if surrogate is not None:
            # JSON's \ud800 escapes (and some charsets) decode to half a UTF-16 pair, which no tokenizer
            # takes (the Rust one raised TypeError: a 500) and no UTF-8 response could echo back
            return RecordError(
                f"'text' holds an unpaired surrogate {surrogate.group()!r} at character {surrogate.start()}; "
                "\\u escapes of characters beyond U+FFFF must come in pairs"
            )
        words = split_words(text)
        if len(words) > self.options.max_words:
            return RecordError(
                f"the text has {len(words)} words, more than this server's limit of "
                f"{self.options.max_words} per record (HFSM_MAX_WORDS)",
                status=413,
            )
        boxes = None
        if self.bundle.use_bbox:
            boxes_or_error = _boxes(record.get("bbox"), len(words))
            if isinstance(boxes_or_error, RecordError):
                return boxes_or_error
            boxes = boxes_or_error
        return _Input(text=text, words=words, boxes=boxes)

    def _predict_inputs(self, inputs: list[_Input]) -> list[dict[str, Any]]:
        if self.task.name == NER:
            return self._predict_ner(inputs)
        encoded = self.tokenizer(
            [item.text for item in inputs], truncation=True, max_length=self.bundle.max_seq_length
        )
        features = [{key: encoded[key][row] for key in encoded} for row in range(len(inputs))]
        logits = self._forward(features)
        if self.task.name == CLASSIF:
            return [classif_prediction(softmax(row), self.id2label) for row in logits]
        if self.task.name == MULTILABEL:
            threshold = self.bundle.threshold if self.bundle.threshold is not None else 0.5
            return [multilabel_prediction(sigmoid(row), self.id2label, threshold) for row in logits]
        if self.task.name == REGRESSION:
            return [regression_prediction(row) for row in logits]
        raise ValueError(self.task.name)  # pragma: no cover - tasks are validated by ModelBundle.load

    def _predict_ner(self, inputs: list[_Input]) -> list[dict[str, Any]]:
        """Windows of all records in one pass: every word gets exactly one tag, whatever its text's length."""
        examples = [NerExample(words=item.words, boxes=item.boxes, text=item.text) for item in inputs]
        split = self._ner_windows(examples)
        logits = self._forward(split.features)
        rows: list[list[tuple[list[int], np.ndarray]]] = [[] for _ in inputs]
        for feature, owner, feature_logits in zip(
            split.features, split.example_of_feature, logits, strict=True
        ):
            rows[owner].append((feature["word_index"], softmax(feature_logits)))
        n_labels = len(self.id2label)
        results = []
        for item, item_rows in zip(inputs, rows, strict=True):
            word_probs = gather_word_probs(item_rows, len(item.words), n_labels)
            results.append(
                ner_prediction(word_probs, self.id2label, item.text, word_spans(item.text), item.boxes)
            )
        return results

    def _ner_windows(self, examples: list[NerExample]) -> EncodedSplit:
        """The windows training would cut from these texts, and which text and words each one holds."""
        assert self.word_tokenizer is not None
        return encode_ner(
            examples,
            self.word_tokenizer,
            {},
            stride=self.bundle.stride,
            label_all_tokens=False,
            use_bbox=self.bundle.use_bbox,
        )

    def _forward(self, features: list[dict[str, Any]]) -> list[np.ndarray]:
        """Logits per feature (per position for token tasks), in the features' order.

        Features are batched longest first so that each batch pads little; padding positions are
        cut off again before the logits are returned.
        """
        import torch

        from ..data.packing import float_dtype, pack_batch, pack_rows

        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]), reverse=True)
        outputs: list[np.ndarray | None] = [None] * len(features)
        batch_size = max(1, self.options.batch_size)
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
                    outputs[index] = logits[row, : lengths[row]] if self.task.token_level else logits[row]
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


def quantize_int8(model: Any, device: str) -> Any:
    """The model with its Linear layers as dynamically quantized int8 (weights int8, activations
    quantized per batch): the matrix products, most of a transformer's CPU time, run on int8
    kernels (VNNI where the CPU has it). CPU kernels only, hence refused on a GPU.

    Weights are quantized per output channel: on CoNLL-2003 (MiniLM-L6) one scale per tensor cost
    1.45 dev F1 points, one per channel about 0.3. The layer that produces the logits (out features =
    the number of labels) stays float: it is a fraction of a percent of the work, and rounding the
    logits themselves cost 0.02 of those points for no speed.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if not device.startswith("cpu"):
        raise UserError(
            f"HFSM_QUANTIZE=int8 runs on the CPU only, but the model is on {device}; "
            "unset it or set HFSM_DEVICE=cpu"
        )
    n_labels = model.config.num_labels
    layers = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module.out_features != n_labels
    }
    return quantize_dynamic(model, layers, dtype=torch.qint8)


def _boxes(value: Any, n_words: int) -> list[Box] | RecordError:
    if value is None:
        return RecordError(
            "this model reads word boxes: give 'bbox' with one [x0, y0, x1, y1] box per word "
            '(or the training file\'s form "x0 y0 x1 y1,x0 y0 x1 y1")'
        )
    if not isinstance(value, (str, list)):
        return RecordError(f"'bbox' must be a list of boxes or a string, got {json_type(value)}")
    # parse_boxes takes any sequence as a box and raised TypeError (a 500) on a number or null
    # instead, and OverflowError on a coordinate too large for a float (10**400)
    for number, box in enumerate(value if isinstance(value, list) else [], start=1):
        if not isinstance(box, (str, list)):
            return RecordError(
                f"'bbox': box {number}: a box must be [x0, y0, x1, y1] or \"x0 y0 x1 y1\", "
                f"got {json_type(box)}"
            )
    try:
        boxes = parse_boxes(value)
    except ValueError as exc:
        return RecordError(f"'bbox': {exc}")
    except OverflowError:
        return RecordError("'bbox': a box coordinate is outside 0..1000 (normalise boxes to the page)")
    if len(boxes) != n_words:
        return RecordError(
            f"the text has {n_words} words but 'bbox' has {len(boxes)} boxes; give one box per word"
        )
    return boxes


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages written to API users."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
