"""Read SageMaker channels of tab-separated files into rows that remember where they came from."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, UserError

DATA_SUFFIXES = (".csv", ".tsv", ".txt")
SPLIT_ALIASES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Row:
    """One data row and where it was read from, for error messages."""

    fields: dict[str, str]
    path: str
    line: int


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decode(path: Path) -> str:
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
    text = _decode(path)
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


def _data_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and not p.name.startswith(".")
    )


@dataclass(frozen=True)
class SplitFiles:
    train: list[Path]
    dev: list[Path]
    test: list[Path]


def locate_splits(input_data_dir: Path) -> SplitFiles:
    """Find the train/dev/test files.

    Either one channel per split (``train``, ``dev``/``validation``, ``test``), or the original
    layout: one ``train`` channel holding ``train.csv``, ``dev.csv`` and ``test.csv``.
    """
    train_dir = input_data_dir / "train"
    if not train_dir.is_dir():
        raise UserError(f"No 'train' channel: expected a folder {train_dir} with tab-separated files.")
    train_files = _data_files(train_dir)

    def in_train_channel(split: str) -> list[Path]:
        return [p for p in train_files if p.stem.lower() in SPLIT_ALIASES[split]]

    found: dict[str, list[Path]] = {}
    for split in ("dev", "test"):
        channel = next(
            (input_data_dir / alias for alias in SPLIT_ALIASES[split] if (input_data_dir / alias).is_dir()),
            None,
        )
        if channel is not None:
            files = _data_files(channel)
            if not files:
                raise UserError(f"Channel '{channel.name}' ({channel}) holds no .csv/.tsv/.txt file.")
            found[split] = files
        else:
            found[split] = in_train_channel(split)
    embedded = set(in_train_channel("dev")) | set(in_train_channel("test"))
    train = [p for p in train_files if p not in embedded]
    if not train:
        raise UserError(f"The 'train' channel ({train_dir}) holds no training .csv/.tsv/.txt file.")
    return SplitFiles(train=train, dev=found["dev"], test=found["test"])


def read_split(files: Sequence[Path], required: Sequence[str], optional: Sequence[str] = ()) -> Iterator[Row]:
    for path in files:
        yield from read_table(path, required, optional)
