"""The Hugging Face inference toolkit's request form: ``{"inputs": ..., "parameters": {...}}``.

Clients written for the Hugging Face inference DLC send this and parse what the transformers
pipeline returns for it. This module reads the form into a :class:`ToolkitRecord` (pure, no
``transformers``) and checks its parameters for a task; :mod:`.pipeline_answers` computes the
answer, :func:`shape_answer` gives it the pipeline's nesting.

Parameters follow the pipelines' ``__call__`` keywords:

* token classification: ``aggregation_strategy`` (none, simple, first, average, max),
  ``ignore_labels`` (labels left out; default ``["O"]``), ``stride`` (sub-tokens of context two
  windows of a long text share);
* text classification: ``top_k`` (an integer, or ``null`` for every label; its presence gives the
  list form, as in the pipeline), ``function_to_apply`` (sigmoid, softmax, none), ``max_length``
  (truncate there instead of at the model's window), ``truncation`` and ``padding`` (the tokenizer's:
  texts are always truncated at the window, never failed; padding changes no answer);
* both: ``batch_size`` (no effect: requests are batched dynamically).

Any other parameter is refused with its name: the pipeline would pass it on and fail vaguely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..json_types import json_type as _json_type

AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")
CLASSIFICATION_FUNCTIONS = ("sigmoid", "softmax", "none")
TOKEN_PARAMETERS = ("aggregation_strategy", "ignore_labels", "stride", "batch_size")
TEXT_PARAMETERS = ("top_k", "function_to_apply", "max_length", "truncation", "padding", "batch_size")
TOOLKIT_KEYS = ("inputs", "parameters")
SINGLE, PAIR, MANY = "single", "pair", "many"
"""How ``inputs`` was given (a string, one ``{"text", "text_pair"}`` object, a list): the
pipeline nests its answer accordingly."""


class FormError(ValueError):
    """A toolkit-form request that cannot be read; the message is the client's to act on."""


@dataclass(frozen=True)
class PipelineInput:
    text: str
    text_pair: str | None = None


@dataclass(frozen=True)
class ToolkitRecord:
    """One toolkit-form request (a JSON body, or one JSON Lines line): its texts, in order."""

    inputs: tuple[PipelineInput, ...]
    form: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenParameters:
    aggregation_strategy: str = "none"
    ignore_labels: tuple[str, ...] = ("O",)
    stride: int | None = None


@dataclass(frozen=True)
class TextParameters:
    function_to_apply: str | None = None
    top_k: int | None = 1
    listed: bool = False
    """True when ``top_k`` was given (even ``null``): the answer is a list of labels per text."""
    max_length: int | None = None


def is_toolkit_form(value: Any) -> bool:
    return isinstance(value, dict) and "inputs" in value


def read_toolkit_record(value: Mapping[str, Any]) -> ToolkitRecord:
    """The record of a decoded ``{"inputs": ..., "parameters": ...}``, or a :class:`FormError`."""
    unknown = sorted(set(value) - set(TOOLKIT_KEYS))
    if unknown:
        raise FormError(
            f"unknown key(s) {', '.join(map(repr, unknown))} next to 'inputs': the toolkit form is "
            '{"inputs": ..., "parameters": {...}}; for records with other fields send {"data": [...]}'
        )
    parameters = value.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise FormError(f"'parameters' must be a JSON object, got {_json_type(parameters)}")
    inputs = value["inputs"]
    if isinstance(inputs, str):
        return ToolkitRecord((PipelineInput(inputs),), SINGLE, parameters)
    if isinstance(inputs, dict):
        return ToolkitRecord((_pair(inputs, "inputs"),), PAIR, parameters)
    if isinstance(inputs, list):
        return ToolkitRecord(
            tuple(_list_item(item, f"inputs[{index}]") for index, item in enumerate(inputs)),
            MANY,
            parameters,
        )
    raise FormError(
        '\'inputs\' must be a string, a list of strings or {"text": ..., "text_pair": ...}, got '
        f"{_json_type(inputs)}"
    )


def _list_item(item: Any, name: str) -> PipelineInput:
    if isinstance(item, str):
        return PipelineInput(item)
    if isinstance(item, dict):
        return _pair(item, name)
    raise FormError(f'{name} must be a string or {{"text": ..., "text_pair": ...}}, got {_json_type(item)}')


def _pair(value: Mapping[str, Any], name: str) -> PipelineInput:
    if "bbox" in value:
        raise FormError(
            f"{name}: word boxes are not part of the toolkit form; send "
            '{"data": [{"text": ..., "bbox": [...]}]} for a model that reads them'
        )
    unknown = sorted(set(value) - {"text", "text_pair"})
    if unknown:
        raise FormError(
            f"{name}: unknown key(s) {', '.join(map(repr, unknown))}; expected 'text' and 'text_pair'"
        )
    text, pair = value.get("text"), value.get("text_pair")
    if not isinstance(text, str):
        raise FormError(f"{name}: 'text' must be a string, got {_json_type(text)}")
    if pair is not None and not isinstance(pair, str):
        raise FormError(f"{name}: 'text_pair' must be a string, got {_json_type(pair)}")
    return PipelineInput(text, pair)


def token_parameters(record: ToolkitRecord) -> TokenParameters:
    """The token-classification parameters of ``record``, or a :class:`FormError` naming the bad one."""
    params = record.parameters
    _refuse_unknown(params, TOKEN_PARAMETERS, "token classification")
    if any(item.text_pair is not None for item in record.inputs) or record.form == PAIR:
        raise FormError(
            "this model classifies tokens of one text; send 'inputs' as a string or a list of strings"
        )
    strategy = params.get("aggregation_strategy")
    if strategy is None:
        strategy = "none"
    if not isinstance(strategy, str) or strategy.lower() not in AGGREGATION_STRATEGIES:
        raise FormError(
            f"parameters.aggregation_strategy={strategy!r}: expected one of "
            f"{', '.join(AGGREGATION_STRATEGIES)}"
        )
    ignore = params.get("ignore_labels")
    if ignore is None:
        ignore = ["O"]
    if not isinstance(ignore, list) or not all(isinstance(label, str) for label in ignore):
        raise FormError(f"parameters.ignore_labels must be a list of label names, got {_json_type(ignore)}")
    stride = params.get("stride")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 0):
        raise FormError(f"parameters.stride={stride!r}: expected a whole number of sub-tokens")
    _check_batch_size(params)
    return TokenParameters(strategy.lower(), tuple(ignore), stride)


def text_parameters(record: ToolkitRecord, window: int) -> TextParameters:
    """The text-classification parameters of ``record``, or a :class:`FormError` naming the bad one."""
    params = record.parameters
    _refuse_unknown(params, TEXT_PARAMETERS, "text classification")
    function = params.get("function_to_apply")
    if function is not None and (
        not isinstance(function, str) or function.lower() not in CLASSIFICATION_FUNCTIONS
    ):
        raise FormError(
            f"parameters.function_to_apply={function!r}: expected one of "
            f"{', '.join(CLASSIFICATION_FUNCTIONS)}"
        )
    top_k = params.get("top_k", 1)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise FormError(f"parameters.top_k={top_k!r}: expected a positive integer, or null for every label")
    max_length = params.get("max_length")
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise FormError(f"parameters.max_length={max_length!r}: expected a number of sub-tokens")
        if max_length > window:
            raise FormError(
                f"parameters.max_length={max_length} is more than the {window} sub-tokens this model takes"
            )
    for name in ("truncation", "padding"):
        value = params.get(name)
        if value is not None and not isinstance(value, (bool, str)):
            raise FormError(f"parameters.{name}={value!r}: expected true, false or a strategy name")
    _check_batch_size(params)
    return TextParameters(
        function_to_apply=None if function is None else function.lower(),
        top_k=top_k,
        listed="top_k" in params,
        max_length=max_length,
    )


def _refuse_unknown(params: Mapping[str, Any], known: tuple[str, ...], task: str) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise FormError(
            f"parameter(s) {', '.join(map(repr, unknown))} not supported for {task}; supported: "
            f"{', '.join(known)}"
        )


def _check_batch_size(params: Mapping[str, Any]) -> None:
    size = params.get("batch_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise FormError(f"parameters.batch_size={size!r}: expected a positive integer")


def shape_answer(record: ToolkitRecord, answers: list[Any]) -> Any:
    """The pipeline's nesting: one text gives its answer, a list gives a list of answers.

    Text classification without ``top_k`` answers one string with ``[{"label", "score"}]`` and one
    ``{"text", "text_pair"}`` object with the bare ``{"label", "score"}``, as ``transformers`` does.
    """
    if record.form == MANY:
        return answers
    (answer,) = answers
    if record.form == SINGLE and isinstance(answer, dict):
        return [answer]
    return answer
