"""Read SageMaker channels into rows that remember where they came from.

Tab-separated files are read here; the other input formats (CoNLL, NeMo, JSON lines) are in
:mod:`hfsm.data.formats`, which yields the same :class:`Row` objects, so that everything after
reading (task parsing, IOB checks, features) does not depend on the format.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError, UserError

if TYPE_CHECKING:
    from .formats import DataFile

TSV_SUFFIXES = (".csv", ".tsv", ".txt")
CONLL_SUFFIXES = (".conll", ".iob", ".bio")
JSONL_SUFFIXES = (".jsonl", ".json")
DATA_SUFFIXES = (*TSV_SUFFIXES, *CONLL_SUFFIXES, *JSONL_SUFFIXES)
"""Extensions of data files (NeMo pairs are ``.txt``); the local harness looks for ``DATA/train<ext>``."""
SPLIT_ALIASES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Row:
    """One data row and where it was read from, for error messages."""

    fields: dict[str, str]
    path: str
    line: int
    word_lines: tuple[int, ...] | None = None
    """NER formats with one word per line (CoNLL): the line of each word, for exact error locations."""


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_file(path: Path) -> str:
    """The file's text (UTF-8, with or without BOM); UTF-16 and invalid UTF-8 fail with the line."""
    raw = path.read_bytes()
    if raw.startswith(_UTF16_BOMS):  # what Excel's "Unicode text" and PowerShell write
        raise DataError(
            "is UTF-16 (it starts with a UTF-16 byte order mark); save the file as UTF-8",
            path=str(path),
            row=1,
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8",
            path=str(path),
            row=line,
        ) from exc


def _csv_problem(exc: csv.Error) -> str:
    """What a strict csv reader's error means for someone fixing the file."""
    text = str(exc)
    if "unexpected end of data" in text:
        return (
            "a quoted field that starts on this line is never closed (the rest of the file would be read "
            "into it); quote fields the way csv.writer does, doubling the quotes inside"
        )
    if "expected after" in text:
        return (
            "a field that starts with a quote has text after its closing quote; quote the whole field "
            "and double the quotes inside it, as csv.writer does"
        )
    return f"cannot be parsed as tab-separated values: {text}"


def read_table(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> list[Row]:
    """Read one tab-separated file with a header row.

    Quoted fields follow Python's csv module (a field may contain quotes, tabs and line breaks when
    quoted), read strictly: a quote left open, which would swallow the rows after it, fails instead.
    Only the named columns are kept; extra columns are allowed, extra fields in a row are not (an
    unquoted tab in a text would shift its label into the next column). Lines are numbered from the
    header (line 1); a row whose quoted text spans lines is named by the line it starts on.
    """
    text = decode_file(path)
    if not text.strip():
        raise DataError("is empty; expected a header row and at least one data row", path=str(path))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except csv.Error as exc:
        raise DataError(_csv_problem(exc), path=str(path), row=1) from exc
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(repr(m) for m in missing)}; the header has {header!r}. "
            "Files are tab-separated with a header row.",
            path=str(path),
            row=1,
        )
    wanted = [name for name in dict.fromkeys((*required, *optional)) if name in header]
    repeated = [name for name in wanted if header.count(name) > 1]
    if repeated:
        raise DataError(
            f"the header names column(s) {', '.join(repr(r) for r in repeated)} more than once",
            path=str(path),
            row=1,
        )
    index = {name: header.index(name) for name in wanted}
    rows: list[Row] = []
    line = reader.line_num + 1  # where the next record starts
    try:
        for record in reader:
            start, line = line, reader.line_num + 1
            if not record or all(not cell.strip() for cell in record):
                continue  # blank lines are layout, not data
            if len(record) < len(header):
                short = [name for name in wanted if index[name] >= len(record)]
                if short:
                    raise DataError(
                        f"has {len(record)} field(s) but the header has {len(header)}; no value for "
                        f"{', '.join(repr(s) for s in short)} (is a tab missing?)",
                        path=str(path),
                        row=start,
                    )
            elif any(cell.strip() for cell in record[len(header) :]):
                raise DataError(
                    f"has {len(record)} fields but the header has {len(header)} columns; a tab inside a "
                    "text must be quoted (csv.writer does it), or the header is missing a column",
                    path=str(path),
                    row=start,
                )
            rows.append(Row({name: record[index[name]] for name in wanted}, str(path), start))
    except csv.Error as exc:
        raise DataError(_csv_problem(exc), path=str(path), row=line) from exc
    if not rows:
        raise DataError("has a header but no data rows", path=str(path))
    return rows


@dataclass(frozen=True)
class SplitFiles:
    train: list[DataFile]
    dev: list[DataFile]
    test: list[DataFile]


def locate_splits(input_data_dir: Path, input_format: str = "auto", ner: bool = True) -> SplitFiles:
    """Find the train/dev/test files and the format of each (see :func:`hfsm.data.formats.channel_files`).

    Either one channel per split (``train``, ``dev``/``validation``, ``test``), or the original
    layout: one ``train`` channel holding ``train.csv``, ``dev.csv`` and ``test.csv`` (any supported
    extension; NeMo pairs by the name after ``text_``/``labels_``, e.g. ``text_dev.txt``).
    """
    from .formats import channel_files, expected_files  # formats reads rows with this module's parsers

    train_dir = input_data_dir / "train"
    if not train_dir.is_dir():
        raise UserError(f"No 'train' channel: expected a folder {train_dir} with {expected_files(ner)}.")
    train_files = channel_files(train_dir, input_format, ner=ner)

    def in_train_channel(split: str) -> list[DataFile]:
        return [f for f in train_files if f.split_name in SPLIT_ALIASES[split]]

    found: dict[str, list[DataFile]] = {}
    for split in ("dev", "test"):
        channel = next(
            (input_data_dir / alias for alias in SPLIT_ALIASES[split] if (input_data_dir / alias).is_dir()),
            None,
        )
        if channel is not None:
            files = channel_files(channel, input_format, ner=ner)
            if not files:
                raise UserError(f"Channel '{channel.name}' ({channel}) holds no {expected_files(ner)}.")
            found[split] = files
        else:
            found[split] = in_train_channel(split)
    embedded = set(in_train_channel("dev")) | set(in_train_channel("test"))
    train = [f for f in train_files if f not in embedded]
    if not train:
        raise UserError(f"The 'train' channel ({train_dir}) holds no training file: {expected_files(ner)}.")
    return SplitFiles(train=train, dev=found["dev"], test=found["test"])


def read_split(files: Sequence[Path], required: Sequence[str], optional: Sequence[str] = ()) -> Iterator[Row]:
    """Rows of tab-separated files (:func:`hfsm.data.formats.read_files` reads any format)."""
    for path in files:
        yield from read_table(path, required, optional)
