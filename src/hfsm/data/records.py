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
from typing import Any

from ..errors import DataError
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION
from .reading import Row

Box = tuple[int, int, int, int]
_WORD = re.compile(r"\S+")
_IOB2 = re.compile(r"^(O|[BI]-\S+)$")


def plain_float(value: Any) -> float:
    """``float`` without Python's literal extras: in data, ``1_5`` is a typo, not fifteen."""
    if isinstance(value, str) and "_" in value:
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def is_iob_tag(tag: str) -> bool:
    """``O``, ``B-TYPE`` or ``I-TYPE``: the tag syntax of IOB1 and IOB2 alike."""
    return bool(_IOB2.match(tag))


def orphan_positions(tags: Sequence[str]) -> list[int]:
    """Indices of ``I-X`` tags that do not continue an ``X`` entity (after ``O``, another type, or first).

    IOB2 starts every entity with ``B-``; such an ``I-`` is an annotation slip (or IOB1, where ``I-``
    starts entities). seqeval's default mode, conlleval and serving all read one as the start of an
    entity, so rewriting it to ``B-`` (:func:`repair_orphans`) changes no entity span under that
    reading, only the label the model is trained on; seqeval's strict mode drops it instead.
    Tags must be valid (:func:`is_iob_tag`).
    """
    positions = []
    previous = "O"
    for index, tag in enumerate(tags):
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            positions.append(index)
        previous = tag
    return positions


def repair_orphans(tags: Sequence[str]) -> list[str]:
    """``tags`` with every orphan ``I-X`` (see :func:`orphan_positions`) rewritten to ``B-X``.

    This is also the IOB1 to IOB2 conversion: in IOB1 an ``I-`` starts an entity and ``B-`` only
    separates two adjacent entities of one type, which stays a ``B-``.
    """
    repaired = list(tags)
    for index in orphan_positions(tags):
        repaired[index] = "B-" + repaired[index][2:]
    return repaired


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
            number = plain_float(part)
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


@dataclass(frozen=True)
class Orphan:
    """One orphan ``I-`` tag (see :func:`orphan_positions`), located for the training log."""

    path: str
    line: int
    """The line of the word where the format has one per word (CoNLL), else the row's line."""
    word: int
    """1-based position of the word in its row."""
    token: str
    tag: str
    """The tag as read, before any repair."""
    previous: str | None
    """The tag before it, None at the start of a row."""

    def describe(self) -> str:
        after = f"after {self.previous}" if self.previous is not None else "at the start of the row"
        return f"file {self.path}, line {self.line}, word {self.word} {self.token!r}: {self.tag} {after}"


@dataclass
class Dataset:
    """Examples of one split plus the label names they use."""

    examples: list[NerExample] | list[TextExample]
    labels: set[str] = field(default_factory=set)
    orphans: list[Orphan] = field(default_factory=list)
    """NER: orphan ``I-`` tags as read (rewritten to ``B-`` in ``examples`` when ``repaired``)."""
    orphan_rows: int = 0
    repaired: bool = False


def parse_multilabel(value: str) -> list[str]:
    """``"a","b"`` (csv quoting) or ``a,b``; never evaluated as code."""
    if not value.strip():
        return []
    names = next(csv.reader([value], skipinitialspace=True))
    return [name.strip() for name in names if name.strip()]


def _orphans(row: Row, words: Sequence[str], tags: Sequence[str]) -> list[Orphan]:
    found = []
    for index in orphan_positions(tags):
        line = row.word_lines[index] if row.word_lines is not None else row.line
        previous = tags[index - 1] if index else None
        found.append(Orphan(row.path, line, index + 1, words[index], tags[index], previous))
    return found


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
            label = plain_float(raw)
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
    task: str,
    rows: Iterable[Row],
    *,
    text_col: str,
    label_col: str,
    bbox_col: str | None = None,
    repair_iob: bool = False,
) -> Dataset:
    """Examples of one split; NER rows are checked for orphan ``I-`` tags, which are counted (and
    rewritten to ``B-`` with ``repair_iob``) before the label set is taken, so that a repaired ``I-X``
    that only ever appeared as an orphan does not become a label."""
    examples: list = []
    labels: set[str] = set()
    orphans: list[Orphan] = []
    orphan_rows = 0
    for row in rows:
        if task == NER:
            example = _ner_example(row, text_col, label_col, bbox_col)
            found = _orphans(row, example.words, example.tags or [])
            if found:
                orphans.extend(found)
                orphan_rows += 1
                if repair_iob:
                    example.tags = repair_orphans(example.tags or [])
            labels.update(example.tags or [])
        else:
            example = _text_example(task, row, text_col, label_col)
            if task == CLASSIF:
                labels.add(example.label)  # type: ignore[arg-type]
            elif task == MULTILABEL:
                labels.update(example.label)  # type: ignore[arg-type]
        examples.append(example)
    return Dataset(
        examples=examples, labels=labels, orphans=orphans, orphan_rows=orphan_rows, repaired=repair_iob
    )


def iob_report(split: str, dataset: Dataset, examples: int = 3) -> str:
    """One line for the training log: how many orphan ``I-`` tags ``split`` has, what was done with
    them, and where the first few are (file, line, word), so that they can be fixed at the source."""
    rows = len(dataset.examples)
    if not dataset.orphans:
        return f"{split}: no orphan I- tags in {rows} rows"
    action = (
        "rewritten to B- (repair_iob=true)"
        if dataset.repaired
        else "kept as I- (the metrics' default mode and serving read one as the start of an entity; "
        "repair_iob=true, or --repair-iob of local convert, rewrites them to B-)"
    )
    shown = "; ".join(orphan.describe() for orphan in dataset.orphans[:examples])
    more = f"; and {len(dataset.orphans) - examples} more" if len(dataset.orphans) > examples else ""
    return (
        f"{split}: {len(dataset.orphans)} orphan I- tag(s) (an I- that does not continue an entity of its "
        f"type) in {dataset.orphan_rows} of {rows} rows, {action}: {shown}{more}"
    )


def ordered_labels(task: str, labels: Iterable[str]) -> list[str]:
    """Sorted label names; ``O`` first for NER so that id 0 is "no entity"."""
    names = sorted(set(labels))
    if task == NER:
        names = ["O", *[name for name in names if name != "O"]]
    return names
