"""A trained model folder turned into a function from request records to predictions.

Preprocessing is the training code's own (:func:`hfsm.training.features.encode_ner`, the same
tokenizer call for texts) and postprocessing is :mod:`hfsm.inference.postprocess`, so a served
model answers exactly what ``train`` wrote to ``test_predictions.jsonl``. Nothing here knows about
HTTP: a record that cannot be predicted yields a :class:`RecordError` in its place, so that the
caller decides whether one bad record fails the whole request (JSON) or only its own line
(JSON Lines). The forward passes are an engine's: torch (:mod:`hfsm.inference.torch_engine`) or ONNX
Runtime over an export (:mod:`hfsm.inference.onnx_engine`); torch and ``transformers`` are imported
on :meth:`Predictor.load` of the torch engine only, never at import time, so that the serving master
process, the codecs and a worker serving an ONNX export stay light.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..architectures import PREFIX_SPACE_MODEL_TYPES, usable_positions
from ..bundle import (
    FolderDescription,
    FolderHints,
    ModelBundle,
    describe_folder,
    read_config,
    tokenizer_max_length,
)
from ..data.records import Box, NerExample, parse_boxes, split_words, word_spans
from ..data.windows import WordTokenizer
from ..json_types import json_type
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION, get_task
from ..training.features import EncodedSplit, encode_ner
from .pipeline_answers import LabelConfig, PipelineAnswers
from .postprocess import (
    classif_prediction,
    gather_word_probs,
    multilabel_prediction,
    ner_prediction,
    regression_prediction,
    sigmoid,
    softmax,
)
from .runtime import resolve_runtime
from .toolkit_form import (
    FormError,
    PipelineInput,
    TextParameters,
    TokenParameters,
    ToolkitRecord,
)

log = logging.getLogger("hfsm.predict")

PACKING_PROBE = (
    "The European Commission said on Thursday it disagreed with German advice",
    "Peter Blackburn",
    "BRUSSELS 1996-08-22 was quiet",
    "Germany",
)
"""Texts of different lengths whose windows pack two to a row: the batch that tests packing."""

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

    batch_size: int | None = None
    """Features (NER windows or texts) per forward pass; None: the engine's own default, the fastest
    measured on CoNLL-2003 with MiniLM-L6 (torch 32, ONNX Runtime 8)."""
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
    quantized_engine: str = "auto"
    """torch with ``quantize="int8"``: the quantized engine its weights are packed for, which picks
    the int8 kernels (:mod:`hfsm.inference.int8`): ``onednn``, ``x86`` (torch's default, FBGEMM),
    ``fbgemm``, ``qnnpack``; ``auto``: ``onednn`` on x86-64 CPUs with AMX int8, else torch's
    default."""
    pack_sequences: bool | None = None
    """NER: pack the windows of a forward pass into fewer rows when they differ in length. None:
    when :meth:`Predictor.warmup` finds the model computes them like padded ones; True: required."""
    autocast: str = "none"
    """``bf16``/``fp16``: forward passes under ``torch.autocast`` in that dtype: the weights stay
    float32, matrix products run in 16 bits (on CPUs with native bfloat16, AVX-512 BF16 or AMX, about
    1.7x float32 here for 99.98% identical word tags; fp16 on GPUs only). ``none``: float32."""
    onednn_linear: bool | None = None
    """torch on the CPU in float32: the Linear layers on oneDNN's kernel instead of ``aten::addmm``
    (7.5% faster forward passes on a Zen 4 EPYC, 5-6% slower on a Xeon: see
    :mod:`hfsm.inference.onednn_linear`). None: on AMD x86-64 CPUs without int8 or autocast, if its
    self-check passes; True: on any CPU, refused where it cannot run; False: never."""
    folder_hints: FolderHints = field(default_factory=FolderHints)
    """What the environment says about a folder without ``hfsm.json`` (HF_TASK, ...)."""
    runtime: str = "auto"
    """``torch``: the model folder through ``transformers``; ``onnxruntime``: its ONNX export
    (``model/onnx``, CPU); ``auto``: the export when the folder has one and the options allow it
    (CPU, no autocast, no required packing), else torch (see :func:`resolve_runtime`)."""


class Engine(Protocol):
    """Forward passes: features in, logits out (see TorchEngine and OnnxEngine)."""

    name: str
    token_level: bool

    @property
    def id2label(self) -> dict[int, str]: ...

    @property
    def description(self) -> str: ...

    def forward(self, features: Sequence[dict[str, Any]]) -> list[np.ndarray]: ...

    def decide_packing(self, probe: Sequence[dict[str, Any]]) -> None: ...


@dataclass(frozen=True)
class _Input:
    """A validated record."""

    text: str
    words: list[str]
    boxes: list[Box] | None


@dataclass(frozen=True)
class _ToolkitInput:
    """A validated toolkit-form record, with its parameters read for this model's task."""

    record: ToolkitRecord
    parameters: TokenParameters | TextParameters


class Predictor:
    """A loaded model (an :class:`Engine`) with its tokenizer and ``hfsm.json``; :meth:`predict` is
    thread-safe.

    Calls are serialised by a lock: one forward pass already uses every core (or the GPU), and a
    fast tokenizer must not be used by two threads at once.
    """

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        bundle: ModelBundle,
        options: PredictOptions,
        model_dir: Path | None = None,
        description: FolderDescription | None = None,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.bundle = bundle
        self.options = options
        self.description = description or FolderDescription(bundle, False, "given")
        self.task = get_task(bundle.task)
        self.id2label = engine.id2label
        self.word_tokenizer = (
            WordTokenizer(tokenizer, bundle.max_seq_length) if self.task.token_level else None
        )
        self.pipeline = self._pipeline_answers(model_dir)
        self._lock = threading.Lock()

    def _pipeline_answers(self, model_dir: Path | None) -> PipelineAnswers:
        """Toolkit-form answers; their tokenizer is the pipeline's (ours adds a prefix space to
        words of byte-level BPE models, and an ONNX worker has no ``transformers`` tokenizer)."""
        config: dict[str, Any] = read_config(model_dir) if model_dir is not None else {}
        limits = [usable_positions(config), tokenizer_max_length(model_dir) if model_dir else None]
        known = [limit for limit in limits if limit is not None]
        window = min(known) if known else self.bundle.max_seq_length
        own_is_pipelines = (
            self.engine.name == "torch" and config.get("model_type") not in PREFIX_SPACE_MODEL_TYPES
        )

        def tokenizer() -> Any:
            if own_is_pipelines or model_dir is None:
                return self.tokenizer
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=self.options.trust_remote_code)

        # the config's own problem_type, as the pipeline reads it: a one-label head without one
        # gets a sigmoid there, and so here
        labels = LabelConfig(self.id2label, config.get("problem_type"), len(self.id2label))
        return PipelineAnswers(
            tokenizer,
            self.engine.forward,
            labels,
            window,
            self.bundle.stride,
            self.bundle.use_bbox,
            token_level=self.task.token_level,
            fast_tokenizer=getattr(self.tokenizer, "is_fast", True),
        )

    @classmethod
    def load(cls, model_dir: Path | str, options: PredictOptions | None = None) -> Predictor:
        """Load a folder written by ``train`` (safetensors weights or its ONNX export: no pickles are
        executed), with the engine :func:`resolve_runtime` picks."""
        options = options or PredictOptions()
        model_dir = Path(model_dir)
        description = describe_folder(model_dir, options.folder_hints)
        bundle = description.bundle
        engine: Engine
        if resolve_runtime(model_dir, options) == "onnxruntime":
            from .onnx_engine import OnnxEngine

            engine, tokenizer = OnnxEngine.load(model_dir, bundle, options)
        else:
            from .torch_engine import TorchEngine

            engine, tokenizer = TorchEngine.load(model_dir, bundle, options)
        return cls(engine, tokenizer, bundle, options, model_dir, description)

    def warmup(self) -> None:
        """Run one real prediction so that the first request pays no lazy initialisation; then let
        the engine decide whether NER forward passes are packed."""
        words = ["Warm", "up"]
        record: dict[str, Any] = {"text": " ".join(words)}
        if self.bundle.use_bbox:
            record["bbox"] = [[0, 0, 10, 10], [12, 0, 20, 10]]
        outcome = self.predict([record])[0]
        if isinstance(outcome, RecordError):
            raise RuntimeError(f"warm-up prediction failed: {outcome.message}")
        try:  # /ping must not say ready for a model whose answers cannot be encoded (NaN: a 500 each)
            json.dumps(outcome, allow_nan=False)
        except ValueError:
            raise ModelError(
                "the model answers NaN or infinite scores: its weights diverged in training (a "
                "learning_rate too high?); retrain it"
            ) from None
        if self.engine.name == "torch" or self.description.inferred:
            # the toolkit form's first request must not pay for importing transformers' pipelines;
            # an ONNX worker of a folder written by train imports them on its first such request
            toolkit = ToolkitRecord((PipelineInput(" ".join(words)),), "single")
            answer = self.predict([toolkit])[0]
            if isinstance(answer, RecordError):
                raise RuntimeError(f"warm-up prediction in the toolkit form failed: {answer.message}")
        if self.task.token_level and self.options.pack_sequences is not False:
            self.engine.decide_packing(self.packing_probe())

    def packing_probe(self) -> list[dict[str, Any]]:
        """The windows of :data:`PACKING_PROBE`: a batch whose rows differ in length."""
        return self.features_of(PACKING_PROBE)

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

    def first_error(self, records: Sequence[Any]) -> tuple[int, RecordError] | None:
        """The first record that cannot be predicted, and why: a request that fails whole on it
        (JSON) is refused before any forward pass, not after predicting every other record."""
        for index, record in enumerate(records):
            parsed = self._validate(record)
            if isinstance(parsed, RecordError):
                return index, parsed
        return None

    def _validate(self, record: Any) -> _Input | _ToolkitInput | RecordError:
        if isinstance(record, ToolkitRecord):
            return self._validate_toolkit(record)
        if not isinstance(record, Mapping):
            return RecordError(f"a record must be a JSON object with a 'text' field, got {json_type(record)}")
        if "text" not in record:
            return RecordError("the record has no 'text' field")
        text = record["text"]
        if not isinstance(text, str):
            return RecordError(f"'text' must be a string, got {json_type(text)}")
        problem = self._text_problem(text)
        if problem is not None:
            return problem
        words = split_words(text)
        boxes = None
        if self.bundle.use_bbox:
            boxes_or_error = _boxes(record.get("bbox"), len(words))
            if isinstance(boxes_or_error, RecordError):
                return boxes_or_error
            boxes = boxes_or_error
        return _Input(text=text, words=words, boxes=boxes)

    def _text_problem(self, text: str, name: str | None = None) -> RecordError | None:
        """Why a text cannot be predicted, if it cannot: a lone surrogate, or too many words."""
        surrogate = None if text.isascii() else _LONE_SURROGATE.search(text)
        if surrogate is not None:
            # JSON's \ud800 escapes (and some charsets) decode to half a UTF-16 pair, which no tokenizer
            # takes (the Rust one raises TypeError) and no UTF-8 response could echo back
            return RecordError(
                f"{name or repr('text')} holds an unpaired surrogate {surrogate.group()!r} at character "
                f"{surrogate.start()}; "
                "\\u escapes of characters beyond U+FFFF must come in pairs"
            )
        words = len(split_words(text))
        if words > self.options.max_words:
            return RecordError(
                f"{f'{name}: ' if name else ''}the text has {words} words, more than this server's limit of "
                f"{self.options.max_words} per record (HFSM_MAX_WORDS)",
                status=413,
            )
        return None

    def _validate_toolkit(self, record: ToolkitRecord) -> _ToolkitInput | RecordError:
        try:
            parameters = self.pipeline.parameters(record)
        except FormError as exc:
            return RecordError(str(exc))
        for index, item in enumerate(record.inputs):
            where = f"inputs[{index}]" if record.form == "many" else "inputs"
            for name, text in ((where, item.text), (f"{where}.text_pair", item.text_pair)):
                problem = None if text is None else self._text_problem(text, name)
                if problem is not None:
                    return problem
        return _ToolkitInput(record, parameters)

    def _predict_inputs(self, inputs: list[_Input | _ToolkitInput]) -> list[Any]:
        """Predictions of validated records: our form and the toolkit's, each in one engine call."""
        ours = [(i, item) for i, item in enumerate(inputs) if isinstance(item, _Input)]
        toolkit = [(i, item) for i, item in enumerate(inputs) if isinstance(item, _ToolkitInput)]
        results: list[Any] = [None] * len(inputs)
        if ours:
            for (index, _), result in zip(ours, self._predict_own([item for _, item in ours]), strict=True):
                results[index] = result
        if toolkit:
            answers = self.pipeline.answer([(item.record, item.parameters) for _, item in toolkit])
            for (index, _), answer in zip(toolkit, answers, strict=True):
                results[index] = answer
        return results

    def _predict_own(self, inputs: list[_Input]) -> list[dict[str, Any]]:
        if self.task.name == NER:
            return self._predict_ner(inputs)
        logits = self.engine.forward(self.text_features([item.text for item in inputs]))
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
        logits = self.engine.forward(split.features)
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

    def text_features(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Sequence tasks: one feature per text, truncated to ``max_seq_length`` as in training."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.bundle.max_seq_length)
        return [{key: encoded[key][row] for key in encoded} for row in range(len(texts))]

    def features_of(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """What ``texts`` become for this model's task (NER windows, with made-up word boxes for a bbox
        model): the inputs an export is traced and checked with."""
        if not self.task.token_level:
            return self.text_features(texts)
        examples = [NerExample(words=split_words(text), boxes=None, text=text) for text in texts]
        if self.bundle.use_bbox:
            examples = [
                NerExample(
                    words=e.words,
                    boxes=[(j % 900, 0, j % 900 + 50, 10) for j in range(len(e.words))],
                    text=e.text,
                )
                for e in examples
            ]
        return self._ner_windows(examples).features

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


class ModelError(RuntimeError):
    """A model folder that loads but cannot answer."""
