"""``hfsm local convert``: NER data in any input format to the tab-separated files ``train`` reads.

The rows go through the very readers and checks of a training job (:mod:`hfsm.data.formats`,
:func:`hfsm.data.records.parse_rows`), so a file that converts is a file that trains, and one that
would fail a job fails here with the same file and line, before anything is uploaded.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..data.formats import INPUT_FORMATS, NEMO, SUFFIX_FORMATS, Columns, DataFile, channel_files, read_files
from ..data.reading import DATA_SUFFIXES, SPLIT_ALIASES, locate_splits
from ..data.records import Dataset, NerExample, iob_report, parse_rows
from ..errors import UserError
from ..tasks import NER

SPLITS = ("train", "dev", "test")


@dataclass
class ConvertedSplit:
    split: str
    sources: list[DataFile]
    output: Path
    dataset: Dataset
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        sources = ", ".join(str(f) for f in self.sources)
        lines = [f"{self.split}: {len(self.dataset.examples)} rows from {sources} -> {self.output}"]
        lines += [f"  {note}" for note in self.notes]
        lines.append(f"  iob: {iob_report(self.split, self.dataset)}")
        return lines


def _single_file(path: Path, input_format: str) -> DataFile:
    """The :class:`DataFile` for one named file: its format from the extension (or ``input_format``);
    a NeMo file is paired with its partner, whichever of the two is named."""
    if input_format not in ("auto", NEMO):
        channel_files(path.parent, input_format, ner=True)  # checks the format name
        return DataFile(path, input_format)
    match = re.match(r"^(text|labels)_(.+)$", path.name)
    if match is not None:
        text, labels = (path.parent / f"{kind}_{match.group(2)}" for kind in ("text", "labels"))
        if text.is_file() and labels.is_file() and (input_format == NEMO or path.suffix.lower() == ".txt"):
            return DataFile(text, NEMO, labels)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower()) if input_format == "auto" else None
    if fmt is None:
        raise UserError(
            f"--input {path}: cannot tell its format from the name; give --format (one of "
            f"{', '.join(f for f in INPUT_FORMATS if f != 'auto')}), or for NeMo name the files "
            "text_NAME.txt and labels_NAME.txt side by side."
        )
    return DataFile(path, fmt)


def find_sources(source: Path, input_format: str = "auto") -> dict[str, list[DataFile]]:
    """Input files per split. ``source`` is one file (``dev.conll`` or ``text_dev.txt`` is dev, ``test.*``
    test, any other name train), a folder with ``train/``, ``dev/``, ``test/`` sub-folders (channels, as
    in a job), or a folder of files named by split (``train.conll``, ``dev.conll``, ...; other names
    train)."""
    if source.is_file():
        data_file = _single_file(source, input_format)
        split = next((s for s in ("dev", "test") if data_file.split_name in SPLIT_ALIASES[s]), "train")
        return {split: [data_file]}
    if not source.is_dir():
        raise UserError(f"--input {source} does not exist")
    if (source / "train").is_dir():
        found = locate_splits(source, input_format, ner=True)
        located = {"train": found.train, "dev": found.dev, "test": found.test}
        return {split: files for split, files in located.items() if files}
    files = channel_files(source, input_format, ner=True)
    splits: dict[str, list[DataFile]] = {}
    for data_file in files:
        split = next((s for s in ("dev", "test") if data_file.split_name in SPLIT_ALIASES[s]), "train")
        splits.setdefault(split, []).append(data_file)
    if not splits:
        raise UserError(f"--input {source} holds no data file (CoNLL, NeMo pairs, JSON lines or TSV)")
    return splits


def _clashes(output: Path, splits: list[str]) -> list[Path]:
    """Files in ``output`` that ``local train --data`` would pick instead of (or beside) ours."""
    if not output.is_dir():
        return []
    return [
        output / f"{alias}{suffix}"
        for split in splits
        for alias in SPLIT_ALIASES[split]
        for suffix in DATA_SUFFIXES
        if (output / f"{alias}{suffix}").exists() and f"{alias}{suffix}" != f"{split}.tsv"
    ]


def write_tsv(path: Path, examples: list[NerExample], bbox: bool) -> None:
    """The training format, quoted by ``csv.writer`` as the strict reader expects."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["text", "labels", *(["bbox"] if bbox else [])])
        for example in examples:
            row = [example.text, " ".join(example.tags or [])]
            if bbox:
                row.append(",".join(" ".join(str(v) for v in box) for box in example.boxes or []))
            writer.writerow(row)


def convert(
    source: Path,
    output: Path,
    input_format: str = "auto",
    *,
    tokens_field: str = "tokens",
    tags_field: str = "tags",
    bbox_field: str | None = None,
    repair_iob: bool = False,
) -> list[ConvertedSplit]:
    """Read ``source`` (see :func:`find_sources`), check it as a job would, and write
    ``output/{train,dev,test}.tsv`` with the columns ``text``, ``labels`` (and ``bbox``). IOB1 CoNLL files
    come out IOB2; orphan ``I-`` tags are reported and, with ``repair_iob``, rewritten to ``B-``.
    All splits are read before anything is written, so a bad file leaves ``output`` untouched."""
    sources = find_sources(source, input_format)
    clashes = _clashes(output, list(sources))
    if clashes:
        raise UserError(
            f"{', '.join(str(c) for c in clashes)} would be read by 'local train --data {output}' beside or "
            f"instead of the converted files; remove them or choose another --output"
        )
    columns = Columns(tokens_field=tokens_field, tags_field=tags_field, bbox=bbox_field)
    converted = []
    for split in SPLITS:
        if split not in sources:
            continue
        notes: list[str] = []
        dataset = parse_rows(
            NER,
            read_files(sources[split], columns, notes),
            text_col=columns.text,
            label_col=columns.labels,
            bbox_col=bbox_field,
            repair_iob=repair_iob,
        )
        converted.append(ConvertedSplit(split, sources[split], output / f"{split}.tsv", dataset, notes))
    output.mkdir(parents=True, exist_ok=True)
    for item in converted:
        write_tsv(item.output, item.dataset.examples, bbox=bbox_field is not None)  # type: ignore[arg-type]
    return converted
