"""Parse rows into task examples, with errors that name the file, line and column.

The same parsers serve training files and HTTP requests (word splitting, box strings), so a text
is cut into words exactly the same way in both.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import DataError
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION
from .reading import Row

Box = tuple[int, int, int, int]
_WORD = re.compile(r"\S+")
_IOB2 = re.compile(r"^(O|[BI]-\S+)$")


def split_words(text: str) -> list[str]:
    """Words are whitespace-separated, in training and serving alike."""
    return text.split()


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character offsets of each word of :func:`split_words`."""
    return [(m.start(), m.end()) for m in _WORD.finditer(text)]


def parse_box(value: Sequence[object] | str) -> Box:
    parts = value.split() if isinstance(value, str) else list(value)
    if len(parts) != 4:
        raise ValueError(f"a box needs 4 numbers x0 y0 x1 y1, got {len(parts)}")
    numbers = []
    for part in parts:
        if isinstance(part, bool):
            raise ValueError(f"box coordinate {part!r} is not an integer")
        try:
            number = float(part)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"box coordinate {part!r} is not an integer") from None
        if not math.isfinite(number) or not number.is_integer():
            raise ValueError(f"box coordinate {part!r} is not an integer")
        if not 0 <= number <= 1000:
            raise ValueError(f"box coordinate {int(number)} is outside 0..1000 (normalise boxes to the page)")
        numbers.append(int(number))
    x0, y0, x1, y1 = numbers
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {numbers} has x1 < x0 or y1 < y0")
    return (x0, y0, x1, y1)


def parse_boxes(value: str | Sequence[object]) -> list[Box]:
    """Boxes as the training file writes them (``"x0 y0 x1 y1,x0 y0 x1 y1"``) or a JSON list of boxes."""
    if isinstance(value, str):
        items: Sequence[object] = [item for item in value.split(",")] if value.strip() else []
    else:
        items = value
    boxes = []
    for number, item in enumerate(items, start=1):
        try:
            boxes.append(parse_box(item))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"box {number}: {exc}") from None
    return boxes


@dataclass
class NerExample:
    words: list[str]
    tags: list[str] | None = None
    boxes: list[Box] | None = None
    text: str = ""
    """The original text, for character offsets of entities."""


@dataclass
class TextExample:
    text: str
    label: str | float | list[str] | None = None


@dataclass
class Dataset:
    """Examples of one split plus the label names they use."""

    examples: list[NerExample] | list[TextExample]
    labels: set[str] = field(default_factory=set)


def parse_multilabel(value: str) -> list[str]:
    """``"a","b"`` (csv quoting) or ``a,b``; never evaluated as code."""
    if not value.strip():
        return []
    names = next(csv.reader([value], skipinitialspace=True))
    return [name.strip() for name in names if name.strip()]


def _ner_example(row: Row, text_col: str, label_col: str, bbox_col: str | None) -> NerExample:
    words = split_words(row.fields[text_col])
    if not words:
        raise DataError("the text is empty", path=row.path, row=row.line, field=text_col)
    tags = row.fields[label_col].split()
    if len(tags) != len(words):
        raise DataError(
            f"{len(words)} words but {len(tags)} labels; NER needs one IOB2 tag per word",
            path=row.path,
            row=row.line,
            field=label_col,
        )
    for position, tag in enumerate(tags, start=1):
        if not _IOB2.match(tag):
            raise DataError(
                f"label {tag!r} of word {position} is not an IOB2 tag (O, B-TYPE or I-TYPE)",
                path=row.path,
                row=row.line,
                field=label_col,
            )
    boxes = None
    if bbox_col is not None:
        try:
            boxes = parse_boxes(row.fields[bbox_col])
        except ValueError as exc:
            raise DataError(str(exc), path=row.path, row=row.line, field=bbox_col) from None
        if len(boxes) != len(words):
            raise DataError(
                f"{len(words)} words but {len(boxes)} boxes; give one box per word",
                path=row.path,
                row=row.line,
                field=bbox_col,
            )
    return NerExample(words=words, tags=tags, boxes=boxes, text=row.fields[text_col])


def _text_example(task: str, row: Row, text_col: str, label_col: str) -> TextExample:
    text = row.fields[text_col]
    if not text.strip():
        raise DataError("the text is empty", path=row.path, row=row.line, field=text_col)
    raw = row.fields[label_col]
    label: str | float | list[str]
    if task == CLASSIF:
        label = raw.strip()
        if not label:
            raise DataError("the label is empty", path=row.path, row=row.line, field=label_col)
    elif task == MULTILABEL:
        try:
            label = parse_multilabel(raw)
        except csv.Error as exc:
            raise DataError(
                f"cannot parse labels {raw!r}: {exc}", path=row.path, row=row.line, field=label_col
            ) from None
    elif task == REGRESSION:
        try:
            label = float(raw)
        except ValueError:
            raise DataError(
                f"{raw!r} is not a number", path=row.path, row=row.line, field=label_col
            ) from None
        if not math.isfinite(label):
            raise DataError(f"{raw!r} is not a finite number", path=row.path, row=row.line, field=label_col)
    else:  # pragma: no cover - tasks are validated with the hyperparameters
        raise ValueError(task)
    return TextExample(text=text, label=label)


def parse_rows(
    task: str, rows: Iterable[Row], *, text_col: str, label_col: str, bbox_col: str | None = None
) -> Dataset:
    examples: list = []
    labels: set[str] = set()
    for row in rows:
        if task == NER:
            example = _ner_example(row, text_col, label_col, bbox_col)
            labels.update(example.tags or [])
        else:
            example = _text_example(task, row, text_col, label_col)
            if task == CLASSIF:
                labels.add(example.label)  # type: ignore[arg-type]
            elif task == MULTILABEL:
                labels.update(example.label)  # type: ignore[arg-type]
        examples.append(example)
    return Dataset(examples=examples, labels=labels)


def ordered_labels(task: str, labels: Iterable[str]) -> list[str]:
    """Sorted label names; ``O`` first for NER so that id 0 is "no entity"."""
    names = sorted(set(labels))
    if task == NER:
        names = ["O", *[name for name in names if name != "O"]]
    return names
