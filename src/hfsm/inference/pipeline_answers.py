"""What the transformers pipeline answers to a toolkit-form request, computed on our engines.

The Hugging Face inference DLC answers ``{"inputs": ..., "parameters": ...}`` with
``pipeline(inputs, **parameters)``. Here preprocessing is the pipeline's own tokenizer call
(offsets and special-tokens mask included), the forward passes are the engine's (length-sorted,
batched with concurrent requests), and postprocessing *is* ``transformers``'
``TokenClassificationPipeline.postprocess`` / ``TextClassificationPipeline.postprocess``, run on
an instance that holds only the tokenizer and the labels: so labels, spans, words and aggregation
are the pipeline's by construction, not by imitation.

Where the answers differ from the pipeline's, by design:

* a token-classification text longer than the model's window is cut into overlapping windows (each
  sub-token predicted in the window where it has the most context) and the logits stitched back
  into one sequence before postprocessing, so every word is tagged; the pipeline truncates it at
  ``model_max_length`` and drops the rest;
* a text-classification text longer than the window is truncated at the window; the pipeline fails.

``transformers.pipelines`` is imported on first use (about two seconds): the warm-up pays it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..data.windows import plan_windows
from .toolkit_form import (
    FormError,
    PipelineInput,
    TextParameters,
    TokenParameters,
    ToolkitRecord,
    shape_answer,
    text_parameters,
    token_parameters,
)


@dataclass(frozen=True)
class LabelConfig:
    """The part of a model's config that the pipelines' postprocessing reads."""

    id2label: dict[int, str]
    problem_type: str | None
    num_labels: int


class PipelineAnswers:
    """Toolkit-form answers for one model: ``forward`` is its engine's (features in, logits out)."""

    def __init__(
        self,
        tokenizer_factory: Callable[[], Any],
        forward: Callable[[Sequence[dict[str, Any]]], list[np.ndarray]],
        labels: LabelConfig,
        window: int,
        default_stride: int,
        use_bbox: bool,
        *,
        token_level: bool,
        fast_tokenizer: bool = True,
    ) -> None:
        self.token_level = token_level
        self.fast_tokenizer = fast_tokenizer
        self._tokenizer_factory = tokenizer_factory
        self._forward = forward
        self.labels = labels
        self.window = window
        self.default_stride = default_stride
        self.use_bbox = use_bbox
        self._ready = threading.Lock()
        self._postprocessors: tuple[Any, Any] | None = None

    def _prepared(self) -> tuple[Any, Any, Any]:
        """(tokenizer, token postprocessor, text postprocessor), built once."""
        with self._ready:
            if self._postprocessors is None:
                from transformers.pipelines.text_classification import TextClassificationPipeline
                from transformers.pipelines.token_classification import TokenClassificationPipeline

                tokenizer = self._tokenizer_factory()
                config = SimpleNamespace(
                    id2label=self.labels.id2label,
                    problem_type=self.labels.problem_type,
                    num_labels=self.labels.num_labels,
                )
                processors = []
                for cls in (TokenClassificationPipeline, TextClassificationPipeline):
                    # postprocess reads only .tokenizer and .model.config: no model is loaded twice
                    processor = cls.__new__(cls)
                    processor.tokenizer = tokenizer
                    processor.model = SimpleNamespace(config=config)
                    processors.append(processor)
                self.tokenizer = tokenizer
                self._postprocessors = (processors[0], processors[1])
        return self.tokenizer, *self._postprocessors

    def warmup(self) -> None:
        self._prepared()

    def parameters(self, record: ToolkitRecord) -> TokenParameters | TextParameters:
        """``record``'s parameters read for this model's task, or a FormError naming the bad one."""
        if not self.token_level:
            return text_parameters(record, self.window)
        parameters = token_parameters(record)
        if parameters.aggregation_strategy in ("first", "average", "max") and not self.fast_tokenizer:
            raise FormError(
                f"parameters.aggregation_strategy={parameters.aggregation_strategy!r} needs a fast "
                "tokenizer, and this model's is slow; use simple or none"
            )
        return parameters

    def answer(self, calls: Sequence[tuple[ToolkitRecord, TokenParameters | TextParameters]]) -> list[Any]:
        """Each record's pipeline answer, the texts of all of them predicted together."""
        flat = [(item, params) for record, params in calls for item in record.inputs]
        if self.token_level:
            answers = self.tokens([(item.text, params) for item, params in flat])  # type: ignore[misc]
        else:
            answers = self.texts(flat)  # type: ignore[arg-type]
        shaped = []
        position = 0
        for record, _ in calls:
            count = len(record.inputs)
            shaped.append(shape_answer(record, answers[position : position + count]))
            position += count
        return shaped

    # ---- token classification -------------------------------------------------------------

    def tokens(self, inputs: Sequence[tuple[str, TokenParameters]]) -> list[list[dict[str, Any]]]:
        """The pipeline's entity list for each text, every sub-token predicted whatever the length."""
        import torch
        from transformers.pipelines.token_classification import AggregationStrategy

        tokenizer, postprocessor, _ = self._prepared()
        encodings = [
            tokenizer(text, return_special_tokens_mask=True, return_offsets_mapping=True)
            for text, _ in inputs
        ]
        plans = [
            _token_windows(encoding, self.window, self._stride(params))
            for encoding, (_, params) in zip(encodings, inputs, strict=True)
        ]
        features = [feature for plan in plans for feature in plan.features(self.use_bbox)]
        logits = self._forward(features)
        answers = []
        position = 0
        for (text, params), encoding, plan in zip(inputs, encodings, plans, strict=True):
            stitched = plan.stitch(logits[position : position + len(plan.windows)])
            position += len(plan.windows)
            outputs = {
                "logits": torch.from_numpy(stitched[None]),
                "sentence": text,
                "input_ids": torch.tensor([encoding["input_ids"]]),
                "offset_mapping": torch.tensor([encoding["offset_mapping"]]),
                "special_tokens_mask": torch.tensor([encoding["special_tokens_mask"]]),
            }
            entities = postprocessor.postprocess(
                [outputs],
                aggregation_strategy=AggregationStrategy[params.aggregation_strategy.upper()],
                ignore_labels=list(params.ignore_labels),
            )
            answers.append([plain(entity) for entity in entities])
        return answers

    def _stride(self, params: TokenParameters) -> int:
        return self.default_stride if params.stride is None else params.stride

    # ---- text classification --------------------------------------------------------------

    def texts(self, inputs: Sequence[tuple[PipelineInput, TextParameters]]) -> list[Any]:
        """The pipeline's ``{"label", "score"}`` (or list of them, with ``top_k``) for each text."""
        import torch

        tokenizer, _, postprocessor = self._prepared()
        features = []
        for item, params in inputs:
            encoded = tokenizer(
                item.text,
                text_pair=item.text_pair,
                truncation=True,
                max_length=params.max_length or self.window,
            )
            features.append(dict(encoded))
        logits = self._forward(features)
        answers = []
        for row, (_, params) in zip(logits, inputs, strict=True):
            kwargs: dict[str, Any] = {"_legacy": not params.listed, "top_k": params.top_k}
            if params.function_to_apply is not None:
                from transformers.pipelines.text_classification import ClassificationFunction

                kwargs["function_to_apply"] = ClassificationFunction[params.function_to_apply.upper()]
            answer = postprocessor.postprocess({"logits": torch.from_numpy(np.asarray(row)[None])}, **kwargs)
            answers.append(plain(answer))
        return answers


@dataclass(frozen=True)
class _TokenPlan:
    """How one encoded text is cut into windows, and which window predicts each sub-token."""

    input_ids: list[int]
    extra: dict[str, list[int]]
    """Other per-token model inputs of the encoding (token_type_ids)."""
    windows: list[list[int]]
    """Positions of the full encoding that each window holds, in order."""
    owners: list[tuple[int, int]]
    """For each position of the full encoding: (window, index in that window) giving its logits."""

    def features(self, use_bbox: bool) -> list[dict[str, Any]]:
        features = []
        for positions in self.windows:
            feature: dict[str, Any] = {
                "input_ids": [self.input_ids[p] for p in positions],
                "attention_mask": [1] * len(positions),
            }
            for key, values in self.extra.items():
                feature[key] = [values[p] for p in positions]
            if use_bbox:  # what LayoutLM and LiLT take when they are given no boxes
                feature["bbox"] = [[0, 0, 0, 0]] * len(positions)
            features.append(feature)
        return features

    def stitch(self, logits: Sequence[np.ndarray]) -> np.ndarray:
        rows = [np.asarray(logits[window][index]) for window, index in self.owners]
        return np.stack(rows).astype(np.float32, copy=False)


def _token_windows(encoding: Any, window: int, stride: int) -> _TokenPlan:
    """Windows of at most ``window`` sub-tokens over one encoding: its special tokens around each,
    word pieces kept together where they fit, consecutive windows sharing ``stride`` sub-tokens."""
    input_ids = list(encoding["input_ids"])
    extra = {key: list(encoding[key]) for key in ("token_type_ids",) if key in encoding}
    n = len(input_ids)
    if n <= window:
        return _TokenPlan(input_ids, extra, [list(range(n))], [(0, p) for p in range(n)])
    special = encoding["special_tokens_mask"]
    lead = 0
    while lead < n and special[lead]:
        lead += 1
    trail = 0
    while trail < n - lead and special[n - 1 - trail]:
        trail += 1
    prefix, suffix = list(range(lead)), list(range(n - trail, n))
    budget = window - lead - trail
    word_ids = encoding.word_ids()
    units: list[list[int]] = []  # consecutive positions of one word, at most budget long
    for position in range(lead, n - trail):
        same_word = units and word_ids[position] is not None and word_ids[position] == word_ids[units[-1][-1]]
        if same_word and len(units[-1]) < budget:
            units[-1].append(position)
        else:
            units.append([position])
    planned = plan_windows([len(unit) for unit in units], budget, min(stride, budget // 2))
    windows: list[list[int]] = []
    owners: list[tuple[int, int]] = [(0, p) for p in prefix]
    for number, planned_window in enumerate(planned):
        positions = list(prefix)
        for unit_index in range(planned_window.start, planned_window.end):
            for position in units[unit_index]:
                if planned_window.own_start <= unit_index < planned_window.own_end:
                    owners.append((number, len(positions)))
                positions.append(position)
        positions.extend(suffix)
        windows.append(positions)
    last = len(windows) - 1
    owners.extend((last, len(windows[last]) - len(suffix) + i) for i in range(len(suffix)))
    return _TokenPlan(input_ids, extra, windows, owners)


def plain(value: Any) -> Any:
    """numpy and torch scalars as Python numbers, as the DLC's JSON encoder writes them."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return value.item()
    return value
