"""NER input formats besides tab-separated files: CoNLL column files, NeMo text/labels pairs, JSON lines.

Each reader turns one file into the :class:`~hfsm.data.reading.Row` objects that the TSV reader
yields (the words joined by spaces under the text column, their tags joined by spaces under the
label column, boxes under the box column), so that task parsing, the IOB checks, windows and
features are the same whatever the format. Readers check what only they can see (a CoNLL line
without a tag, a JSON value that is not a list of strings, a token with a space inside, which would
become two words once joined) and fail with the file and line, as the TSV reader does.

Which reader a file gets is decided by its extension (``input_format=auto``) or by the
``input_format`` hyperparameter for every file of the channels (see :func:`channel_files`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, UserError
from .reading import CONLL_SUFFIXES, JSONL_SUFFIXES, TSV_SUFFIXES, Row, decode_file, read_table
from .records import is_iob_tag, repair_orphans

TSV = "tsv"
CONLL = "conll"
NEMO = "nemo"
JSONL = "jsonl"
FORMATS = (TSV, CONLL, NEMO, JSONL)
INPUT_FORMATS = ("auto", *FORMATS)
SUFFIX_FORMATS = {
    **dict.fromkeys(TSV_SUFFIXES, TSV),
    **dict.fromkeys(CONLL_SUFFIXES, CONLL),
    **dict.fromkeys(JSONL_SUFFIXES, JSONL),
}
DOCSTART = "-DOCSTART-"
_NEMO_NAME = re.compile(r"^(text|labels)_(.+)$")


@dataclass(frozen=True)
class Columns:
    """Where the rows put things (the TSV column names) and where JSON lines keep their lists."""

    text: str = "text"
    labels: str = "labels"
    bbox: str | None = None
    """The box column/field, when boxes are used (``use_bbox``)."""
    tokens_field: str = "tokens"
    tags_field: str = "tags"


DEFAULT_COLUMNS = Columns()


@dataclass(frozen=True)
class DataFile:
    """One input file and the format it is read in; a NeMo pair is its text file plus ``labels_path``."""

    path: Path
    format: str
    labels_path: Path | None = None

    @property
    def split_name(self) -> str:
        """The split a file names in the single-channel layout: ``dev.conll`` and ``text_dev.txt`` → dev."""
        if self.format == NEMO:
            return Path(self.path.name.split("_", 1)[1]).stem.lower()
        return self.path.stem.lower()

    def __str__(self) -> str:
        if self.labels_path is not None:
            return f"{self.path} + {self.labels_path.name} ({self.format})"
        return f"{self.path} ({self.format})"


@dataclass
class FileRows:
    """The rows of one file, plus notes for the training log (format decisions such as IOB1 → IOB2)."""

    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def expected_files(ner: bool) -> str:
    """What a channel may hold, for error messages."""
    tsv = "tab-separated files (.csv, .tsv, .txt)"
    if not ner:
        return tsv
    return (
        f"{tsv}, CoNLL files (.conll, .iob, .bio), NeMo pairs (text_*.txt with labels_*.txt) or JSON "
        "lines (.jsonl, .json)"
    )


def _visible(folder: Path, hidden: tuple[str, ...] = (".",)) -> list[Path]:
    """Files of a channel, without names starting with one of ``hidden``."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(hidden))


def _nemo_pairs(paths: Sequence[Path], *, txt_only: bool) -> tuple[list[DataFile], list[Path]]:
    """``text_S`` files paired with their ``labels_S``; returns the pairs and the files left unpaired."""
    by_name = {p.name: p for p in paths}
    pairs: list[DataFile] = []
    paired: set[Path] = set()
    for path in paths:
        match = _NEMO_NAME.match(path.name)
        if match is None or (txt_only and path.suffix.lower() != ".txt"):
            continue
        if match.group(1) == "text" and f"labels_{match.group(2)}" in by_name:
            labels = by_name[f"labels_{match.group(2)}"]
            pairs.append(DataFile(path, NEMO, labels))
            paired |= {path, labels}
    return pairs, [p for p in paths if p not in paired]


def channel_files(folder: Path, input_format: str = "auto", ner: bool = True) -> list[DataFile]:
    """The data files of a channel folder and their formats.

    ``auto`` goes by extension: ``.csv``/``.tsv``/``.txt`` are tab-separated, except ``.txt`` files
    named ``text_S.txt`` whose ``labels_S.txt`` is beside them (a NeMo pair); ``.conll``/``.iob``/
    ``.bio`` are CoNLL; ``.jsonl``/``.json`` JSON lines; other files are ignored, as they always were.
    An explicit format reads every file of the channel in that format (CoNLL-2003's ``eng.train``),
    except names starting with ``.`` or ``_``. Only ``ner`` reads formats other than TSV: they carry
    one tag per token.
    """
    if input_format not in INPUT_FORMATS:
        raise UserError(f"input_format {input_format!r} is not one of {', '.join(INPUT_FORMATS)}.")
    if not ner and input_format not in ("auto", TSV):
        raise UserError(
            f"input_format '{input_format}' holds one tag per token: it is for the ner task only; "
            "the other tasks read tab-separated files (input_format auto or tsv)."
        )
    # an explicit format reads files of any name: skip Hadoop/Spark markers (``_SUCCESS``) too
    paths = _visible(folder) if input_format == "auto" else _visible(folder, (".", "_"))
    if input_format == "auto":
        pairs, rest = _nemo_pairs(paths, txt_only=True) if ner else ([], paths)
        files = list(pairs)
        for path in rest:
            fmt = SUFFIX_FORMATS.get(path.suffix.lower())
            if fmt is not None and (ner or fmt == TSV):
                files.append(DataFile(path, fmt))
        return sorted(files, key=lambda f: f.path)
    if input_format == NEMO:
        pairs, rest = _nemo_pairs(paths, txt_only=False)
        if rest:
            raise UserError(
                f"input_format 'nemo': {', '.join(str(p) for p in rest)} in {folder} "
                "is not part of a pair text_NAME with labels_NAME (NeMo token classification files)."
            )
        return pairs
    return [DataFile(path, input_format) for path in paths]


def _lines(path: Path) -> list[str]:
    """Lines of a file as read by :func:`decode_file`; only ``\\n`` and ``\\r\\n`` end a line (tokens
    may hold U+2028 or U+0085, which ``str.splitlines`` would also cut at)."""
    text = decode_file(path)
    if not text.strip():
        raise DataError("is empty", path=str(path))
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _check_token(token: str, path: str, line: int, what: str) -> None:
    if not token or any(ch.isspace() for ch in token):
        raise DataError(
            f"{what} {token!r} is empty or contains whitespace; words are whitespace-separated, so it "
            "would become a different number of words",
            path=path,
            row=line,
        )


def _check_tag(tag: str, path: str, line: int, what: str) -> None:
    if not is_iob_tag(tag):
        raise DataError(f"{what} {tag!r} is not an IOB tag (O, B-TYPE or I-TYPE)", path=path, row=line)


def _row(columns: Columns, tokens: Sequence[str], tags: Sequence[str]) -> dict[str, str]:
    return {columns.text: " ".join(tokens), columns.labels: " ".join(tags)}


# --- CoNLL ----------------------------------------------------------------------------------------------


@dataclass
class _Sentence:
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def _conll_columns(line: str) -> list[str]:
    """Tab-separated when the line has a tab (a token may then not hold a space), else whitespace."""
    if "\t" in line:
        cells = [cell.strip() for cell in line.split("\t")]
        while cells and not cells[-1]:
            cells.pop()
        return cells
    return line.split()


def iob1_starts(sentences: Iterable[Sequence[str]]) -> tuple[int, int]:
    """How many entities start with ``I-`` and how many with ``B-`` (a ``B-`` right after an entity of
    its own type only separates two entities, as IOB1 uses it, and is not counted).

    IOB1 starts entities with ``I-``; IOB2 with ``B-``. A file with ``I-`` starts and no ``B-`` start
    is IOB1; one with ``B-`` starts is IOB2, and its ``I-`` starts are orphans (annotation slips).
    """
    i_starts = b_starts = 0
    for tags in sentences:
        previous = "O"
        for tag in tags:
            continues = previous != "O" and previous[2:] == tag[2:]
            if not continues:
                i_starts += tag.startswith("I-")
                b_starts += tag.startswith("B-")
            previous = tag
    return i_starts, b_starts


def read_conll(path: Path, columns: Columns = DEFAULT_COLUMNS) -> FileRows:
    """A CoNLL column file: one token per line, its tag in the last column, a blank line between
    sentences, ``-DOCSTART-`` lines dropped (CoNLL-2003). Every token line has the same number of
    columns (a token with a space inside a tab-separated file would otherwise shift them).

    IOB1 files (CoNLL-2003 as first published) are detected with :func:`iob1_starts` and converted to
    IOB2; the note says so. Each row remembers the line of each word, for the orphan report.
    """
    name = str(path)
    sentences: list[_Sentence] = []
    current = _Sentence()
    width: tuple[int, int] | None = None  # (columns, line) of the first token line
    documents = 0
    for number, line in enumerate(_lines(path), start=1):
        cells = _conll_columns(line)
        if not cells or cells[0] == DOCSTART:
            documents += bool(cells)
            if current.tokens:
                sentences.append(current)
                current = _Sentence()
            continue
        if len(cells) < 2:
            raise DataError(
                f"has one column {cells[0]!r}; a CoNLL line holds the token first and its tag last, "
                "separated by spaces or tabs, and a blank line ends a sentence",
                path=name,
                row=number,
            )
        if width is None:
            width = (len(cells), number)
        elif len(cells) != width[0]:
            raise DataError(
                f"has {len(cells)} columns but line {width[1]} has {width[0]}; every token line of a CoNLL "
                "file has the same columns (is there a space inside a token of a tab-separated file?)",
                path=name,
                row=number,
            )
        _check_token(cells[0], name, number, "token")
        _check_tag(cells[-1], name, number, "tag (last column)")
        current.tokens.append(cells[0])
        current.tags.append(cells[-1])
        current.lines.append(number)
    if current.tokens:
        sentences.append(current)
    if not sentences:
        raise DataError("has no token lines (only blank or -DOCSTART- lines)", path=name)

    i_starts, b_starts = iob1_starts(s.tags for s in sentences)
    iob1 = i_starts > 0 and b_starts == 0
    rows = []
    for sentence in sentences:
        tags = repair_orphans(sentence.tags) if iob1 else sentence.tags
        rows.append(
            Row(
                _row(columns, sentence.tokens, tags),
                name,
                sentence.lines[0],
                tuple(sentence.lines),
            )
        )
    dropped = f", {documents} -DOCSTART- line(s) dropped" if documents else ""
    scheme = "IOB2 tags kept as read"
    if iob1:
        scheme = f"IOB1 (I- starts {i_starts} entities, B- none) converted to IOB2"
    return FileRows(rows, [f"{name}: CoNLL, {len(rows)} sentences{dropped}; {scheme}"])


# --- NeMo -----------------------------------------------------------------------------------------------


def read_nemo(text_path: Path, labels_path: Path, columns: Columns = DEFAULT_COLUMNS) -> FileRows:
    """A NeMo token-classification pair: line N of ``text_*.txt`` holds a sentence's words, line N of
    ``labels_*.txt`` their tags, both separated by spaces. Blank in both: skipped; blank in one only,
    different line counts or word counts: errors naming the line."""
    name = f"{text_path} + {labels_path.name}"
    texts, labels = _lines(text_path), _lines(labels_path)
    if len(texts) != len(labels):
        raise DataError(
            f"has {len(labels)} lines but {text_path.name} has {len(texts)}; line N of labels_*.txt holds "
            "the tags of line N of text_*.txt",
            path=str(labels_path),
        )
    rows = []
    for number, (text, tag_line) in enumerate(zip(texts, labels, strict=True), start=1):
        words, tags = text.split(), tag_line.split()
        if not words and not tags:
            continue
        if len(words) != len(tags):
            raise DataError(
                f"{len(words)} words in {text_path.name} but {len(tags)} tags in {labels_path.name}",
                path=name,
                row=number,
            )
        for position, tag in enumerate(tags, start=1):
            _check_tag(tag, name, number, f"tag {position}")
        rows.append(Row(_row(columns, words, tags), name, number))
    if not rows:
        raise DataError("has no sentences (only blank lines)", path=name)
    return FileRows(rows, [f"{name}: NeMo, {len(rows)} sentences"])


# --- JSON lines -----------------------------------------------------------------------------------------


def _string_list(value: Any, key: str, name: str, number: int, kind: str) -> list[str]:
    if not isinstance(value, list):
        raise DataError(
            f"field {key!r} is {type(value).__name__}, expected a list of {kind}s", path=name, row=number
        )
    for position, item in enumerate(value, start=1):
        if not isinstance(item, str):
            hint = (
                "; give tag names (B-PER), not label ids"
                if kind == "tag" and isinstance(item, int) and not isinstance(item, bool)
                else ""
            )
            raise DataError(
                f"{kind} {position} of {key!r} is {json.dumps(item)}, not a string{hint}",
                path=name,
                row=number,
            )
    return value


def _boxes_text(value: Any) -> str:
    """Boxes as a list of four-number lists, or already as the TSV's ``"x0 y0 x1 y1,..."`` string;
    the numbers are checked by :func:`hfsm.data.records.parse_boxes`, as for every format."""
    if isinstance(value, list):
        return ",".join(
            " ".join(str(v) for v in box) if isinstance(box, (list, tuple)) else str(box) for box in value
        )
    return str(value)


def read_jsonl(path: Path, columns: Columns = DEFAULT_COLUMNS) -> FileRows:
    """JSON lines: one object per line with a list of tokens and a list of tags (the fields
    ``tokens_field``/``tags_field``; boxes in the box column's field with ``use_bbox``), as
    Hugging Face ``datasets`` ``to_json`` writes them once the tags are names. Blank lines are skipped.
    """
    name = str(path)
    lines = _lines(path)
    if lines[0].lstrip().startswith("["):
        raise DataError(
            "is a JSON array; expected JSON lines: one object per line, e.g. "
            f'{{"{columns.tokens_field}": ["EU", "rejects"], "{columns.tags_field}": ["B-ORG", "O"]}}',
            path=name,
            row=1,
        )
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise DataError(f"is not valid JSON: {exc}", path=name, row=number) from None
        if not isinstance(record, dict):
            raise DataError(f"is a JSON {type(record).__name__}, expected an object", path=name, row=number)
        wanted = [columns.tokens_field, columns.tags_field, *([columns.bbox] if columns.bbox else [])]
        missing = [key for key in wanted if key not in record]
        if missing:
            present = ", ".join(repr(key) for key in list(record)[:8]) or "none"
            raise DataError(
                f"has no field {', '.join(repr(m) for m in missing)} (its fields: {present}); set "
                "tokens_field/tags_field (--tokens-field/--tags-field) to the names the file uses",
                path=name,
                row=number,
            )
        tokens = _string_list(record[columns.tokens_field], columns.tokens_field, name, number, "token")
        tags = _string_list(record[columns.tags_field], columns.tags_field, name, number, "tag")
        if not tokens:
            raise DataError(f"field {columns.tokens_field!r} is empty", path=name, row=number)
        if len(tokens) != len(tags):
            raise DataError(
                f"{len(tokens)} tokens but {len(tags)} tags; NER needs one tag per token",
                path=name,
                row=number,
            )
        for position, (token, tag) in enumerate(zip(tokens, tags, strict=True), start=1):
            _check_token(token, name, number, f"token {position}")
            _check_tag(tag, name, number, f"tag {position}")
        fields = _row(columns, tokens, tags)
        if columns.bbox:
            fields[columns.bbox] = _boxes_text(record[columns.bbox])
        rows.append(Row(fields, name, number))
    return FileRows(rows, [f"{name}: JSON lines, {len(rows)} sentences"])


# --- any format -----------------------------------------------------------------------------------------


def read_data_file(data_file: DataFile, columns: Columns = DEFAULT_COLUMNS) -> FileRows:
    """The rows of one file in its format."""
    if data_file.format == TSV:
        required = [columns.text, columns.labels, *([columns.bbox] if columns.bbox else [])]
        return FileRows(read_table(data_file.path, required))
    if data_file.format == CONLL:
        return read_conll(data_file.path, columns)
    if data_file.format == NEMO:
        assert data_file.labels_path is not None
        return read_nemo(data_file.path, data_file.labels_path, columns)
    if data_file.format == JSONL:
        return read_jsonl(data_file.path, columns)
    raise ValueError(data_file.format)  # pragma: no cover - channel_files only makes these


def read_files(
    files: Iterable[DataFile], columns: Columns = DEFAULT_COLUMNS, notes: list[str] | None = None
) -> Iterator[Row]:
    """The rows of several files in turn; each file's notes are appended to ``notes``."""
    for data_file in files:
        result = read_data_file(data_file, columns)
        if notes is not None:
            notes.extend(result.notes)
        yield from result.rows
