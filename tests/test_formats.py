"""Input formats (CoNLL, NeMo, JSON lines), their detection, and the orphan I- report and repair.

The readers are checked on real files (hand-made fixtures in tests/data/formats, and the WNUT-17
slices of tests/data/ner written out in each format); the jobs are real ``train`` processes.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import quick_hyperparameters
from hfsm.data.formats import (
    CONLL,
    JSONL,
    NEMO,
    TSV,
    Columns,
    DataFile,
    channel_files,
    read_conll,
    read_files,
    read_jsonl,
    read_nemo,
)
from hfsm.data.reading import locate_splits, read_table
from hfsm.data.records import iob_report, orphan_positions, parse_rows, repair_orphans
from hfsm.errors import DataError, UserError
from hfsm.tasks import NER
from hfsm.training.metrics import score_ner
from sagemaker_tree import DATA_DIR, make_tree, run_train

FIXTURES = DATA_DIR / "formats"


def sentences_of(path: Path) -> list[tuple[list[str], list[str]]]:
    """(words, tags) of each row of a training TSV file."""
    return [
        (r.fields["text"].split(), r.fields["labels"].split()) for r in read_table(path, ["text", "labels"])
    ]


def to_iob1(tags: Sequence[str]) -> list[str]:
    """IOB2 → IOB1: an entity starts with I-, B- only right after an entity of the same type."""
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("B-") and not (previous != "O" and previous[2:] == tag[2:]):
            tag = "I-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def write_conll(
    path: Path, sentences: Sequence[tuple[Sequence[str], Sequence[str]]], iob1: bool = False
) -> Path:
    """CoNLL-2003 layout: -DOCSTART-, four space-separated columns, a blank line after each sentence."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for words, tags in sentences:
        lines += [f"{w} NN I-NP {t}" for w, t in zip(words, to_iob1(tags) if iob1 else tags, strict=True)]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_nemo(folder: Path, name: str, sentences: Sequence[tuple[Sequence[str], Sequence[str]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"text_{name}.txt").write_text("".join(" ".join(w) + "\n" for w, _ in sentences), "utf-8")
    (folder / f"labels_{name}.txt").write_text("".join(" ".join(t) + "\n" for _, t in sentences), "utf-8")


def write_jsonl(
    path: Path, sentences: Sequence[tuple[Sequence[str], Sequence[str]]], tokens: str, tags: str
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": i, tokens: list(w), tags: list(t)}) for i, (w, t) in enumerate(sentences)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rows_of(result: object) -> list[tuple[str, str]]:
    return [(row.fields["text"], row.fields["labels"]) for row in result.rows]  # type: ignore[attr-defined]


# --- readers on the hand-made fixtures ----------------------------------------------------------------


def test_conll_iob1_is_converted_and_docstart_dropped() -> None:
    result = read_conll(FIXTURES / "iob1.conll")
    assert rows_of(result) == [
        ("Alice Smith visited Paris Berlin .", "B-PER I-PER O B-LOC B-LOC O"),  # B-LOC: two adjacent LOCs
        ("Acme hired Bob .", "B-ORG O B-PER O"),
        ("New York is big", "B-LOC I-LOC O O"),
    ]
    assert [row.line for row in result.rows] == [3, 10, 17]
    assert result.rows[0].word_lines == (3, 4, 5, 6, 7, 8)
    assert "2 -DOCSTART- line(s) dropped" in result.notes[0]
    assert "IOB1 (I- starts 5 entities, B- none) converted to IOB2" in result.notes[0]


def test_nemo_pairs_and_blank_lines() -> None:
    result = read_nemo(FIXTURES / "nemo" / "text_train.txt", FIXTURES / "nemo" / "labels_train.txt")
    assert rows_of(result) == [
        ("Alice Smith visited Paris .", "B-PER I-PER O B-LOC O"),
        ("Acme hired Bob Jones", "B-ORG O B-PER I-PER"),
        ("the weather is fine", "O O O O"),
    ]
    assert [row.line for row in result.rows] == [1, 2, 4], "the blank line 3 is skipped, numbering kept"


def test_jsonl_with_configured_fields_and_boxes(tmp_path: Path) -> None:
    result = read_jsonl(FIXTURES / "sample.jsonl", Columns(tokens_field="words", tags_field="ner"))
    assert rows_of(result)[1] == ('Acme hired "Bob" Jones', "B-ORG O I-PER I-PER")
    assert [row.line for row in result.rows] == [1, 3, 4]
    boxed = write(
        tmp_path / "boxed.jsonl",
        json.dumps({"tokens": ["a", "b"], "tags": ["O", "B-X"], "bbox": [[1, 2, 3, 4], [5, 6, 7, 8]]}) + "\n",
    )
    row = read_jsonl(boxed, Columns(bbox="bbox")).rows[0]
    assert row.fields["bbox"] == "1 2 3 4,5 6 7 8", "the TSV's box string, parsed by the same code"


def test_conll_tab_separated_and_crlf(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.conll", "EU\tB-ORG\r\nrejects\tO\r\n\r\n\r\nPeter\tB-PER\r\nBlackburn\tI-PER\r\n"
    )
    assert rows_of(read_conll(path)) == [("EU rejects", "B-ORG O"), ("Peter Blackburn", "B-PER I-PER")]


@pytest.mark.parametrize(
    ("reader", "content", "pattern"),
    [
        ("conll", "EU B-ORG\nrejects\n", r"a\.conll, line 2: has one column 'rejects'"),
        ("conll", "EU NNP B-ORG\nrejects O\n", r"line 2: has 2 columns but line 1 has 3"),
        ("conll", "EU B-ORG\n\nPeter PER\n", r"line 3: tag \(last column\) 'PER' is not an IOB tag"),
        ("conll", "New York\tB-LOC\n", r"line 1: token 'New York' is empty or contains whitespace"),
        ("conll", "-DOCSTART- O\n\n\n", r"a\.conll: has no token lines"),
        ("conll", "\n \n", r"a\.conll: is empty"),
        ("jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a"]}\n', r"line 2: has no field 'tags'"),
        (
            "jsonl",
            '{"tokens": ["a", "b"], "tags": [0, 3]}\n',
            r"line 1: tag 1 of 'tags' is 0, not a string; give",
        ),
        ("jsonl", '[{"tokens": ["a"], "tags": ["O"]}]\n', r"line 1: is a JSON array; expected JSON lines"),
        ("jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": [\n', r"line 2: is not valid JSON"),
        ("jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', r"line 1: 2 tokens but 1 tags"),
        (
            "jsonl",
            '{"tokens": ["a", "New York"], "tags": ["O", "B-LOC"]}\n',
            r"token 2 'New York' is empty or",
        ),
        ("jsonl", '{"tokens": "a b", "tags": ["O", "O"]}\n', r"field 'tokens' is str, expected a list"),
        ("jsonl", '"a b"\n', r"line 1: is a JSON str, expected an object"),
    ],
)
def test_reader_errors_name_the_file_and_line(
    tmp_path: Path, reader: str, content: str, pattern: str
) -> None:
    path = write(tmp_path / ("a.conll" if reader == "conll" else "a.jsonl"), content)
    with pytest.raises(DataError, match=pattern):
        (read_conll if reader == "conll" else read_jsonl)(path)


def test_nemo_errors(tmp_path: Path) -> None:
    text = write(tmp_path / "text_x.txt", "a b\nc d e\n")
    labels = write(tmp_path / "labels_x.txt", "O O\nO O\n")
    with pytest.raises(
        DataError, match=r"text_x\.txt \+ labels_x\.txt, line 2: 3 words in text_x\.txt but 2"
    ):
        read_nemo(text, labels)
    write(labels, "O O\nO O O\nO\n")
    with pytest.raises(DataError, match=r"labels_x\.txt: has 3 lines but text_x\.txt has 2"):
        read_nemo(text, labels)
    write(labels, "O O\nO B-X S-X\n")
    with pytest.raises(DataError, match=r"line 2: tag 3 'S-X' is not an IOB tag"):
        read_nemo(text, labels)


# --- round trips on the WNUT-17 slices ----------------------------------------------------------------


def test_wnut_slices_read_back_the_same_in_every_format(tmp_path: Path) -> None:
    """Each split written as IOB2 CoNLL, IOB1 CoNLL, NeMo and JSON lines reads back as the TSV rows."""
    for split in ("train", "dev", "test"):
        want = sentences_of(DATA_DIR / "ner" / f"{split}.csv")
        write_nemo(tmp_path, split, want)
        results = {
            "iob2": read_conll(write_conll(tmp_path / f"{split}.conll", want)),
            "iob1": read_conll(write_conll(tmp_path / f"{split}.iob", want, iob1=True)),
            "nemo": read_nemo(tmp_path / f"text_{split}.txt", tmp_path / f"labels_{split}.txt"),
            "jsonl": read_jsonl(write_jsonl(tmp_path / f"{split}.jsonl", want, "tokens", "tags")),
        }
        for name, result in results.items():
            got = [(t.split(), labels.split()) for t, labels in rows_of(result)]
            assert got == want, f"{split} as {name}"


TYPES = ["PER", "LOC"]


@st.composite
def iob2_sentences(draw: st.DrawFn) -> list[tuple[list[str], list[str]]]:
    """Sentences with valid IOB2 tags (no orphans), adjacent same-type entities included."""
    sentences = []
    for _ in range(draw(st.integers(1, 5))):
        tags: list[str] = []
        for _ in range(draw(st.integers(1, 10))):
            choice = draw(st.sampled_from(["O", "B", "I"]))
            kind = draw(st.sampled_from(TYPES))
            if choice == "I" and tags and tags[-1] != "O":
                tags.append("I-" + tags[-1][2:])
            elif choice == "O":
                tags.append("O")
            else:
                tags.append("B-" + kind)
        words = [f"w{i}" for i in range(len(tags))]
        sentences.append((words, tags))
    return sentences


@settings(max_examples=150, deadline=None)
@given(iob2_sentences())
def test_iob1_conll_converts_back_to_the_same_iob2(sentences: list[tuple[list[str], list[str]]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write_conll(Path(folder) / "x.conll", sentences, iob1=True)
        got = [labels.split() for _, labels in rows_of(read_conll(path))]
    assert got == [tags for _, tags in sentences]


def test_orphans_in_an_iob2_conll_file_are_not_taken_for_iob1(tmp_path: Path) -> None:
    path = write(tmp_path / "a.conll", "EU B-ORG\nrejects O\n\nPeter O\nBlackburn I-PER\nsaid O\n")
    result = read_conll(path)
    assert rows_of(result)[1] == ("Peter Blackburn said", "O I-PER O"), "a B- start makes the file IOB2"
    assert "IOB2 tags kept as read" in result.notes[0]
    dataset = parse_rows(NER, result.rows, text_col="text", label_col="labels")
    assert len(dataset.orphans) == 1 and dataset.orphan_rows == 1
    orphan = dataset.orphans[0]
    assert (orphan.line, orphan.word, orphan.token, orphan.previous) == (5, 2, "Blackburn", "O")
    report = iob_report("train", dataset)
    assert f"file {path}, line 5, word 2 'Blackburn': I-PER after O" in report
    assert "1 orphan I- tag(s)" in report and "in 1 of 2 rows, kept as I-" in report
    assert dataset.labels == {"B-ORG", "O", "I-PER"}
    repaired = parse_rows(NER, result.rows, text_col="text", label_col="labels", repair_iob=True)
    assert repaired.examples[1].tags == ["O", "B-PER", "O"]  # type: ignore[union-attr]
    assert repaired.labels == {"B-ORG", "O", "B-PER"}, "a label only seen as an orphan is not kept"
    assert "rewritten to B- (repair_iob=true)" in iob_report("train", repaired)


def test_orphan_positions_and_repair() -> None:
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER", "B-ORG", "I-ORG"]
    assert orphan_positions(tags) == [0, 3, 5]
    assert repair_orphans(tags) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-PER", "B-ORG", "I-ORG"]
    # the repair keeps the entity spans of seqeval's default (conlleval) reading
    assert score_ner([tags], [repair_orphans(tags)])[0]["f1"] == 1.0


# --- detection ----------------------------------------------------------------------------------------


def test_detection_by_extension(tmp_path: Path) -> None:
    for name in (
        "a.csv",
        "b.conll",
        "c.IOB",
        "d.bio",
        "e.jsonl",
        "f.json",
        "text_x.txt",
        "labels_x.txt",
        "text_lone.txt",
        "notes.md",
        "_SUCCESS",
        ".hidden.conll",
    ):
        write(tmp_path / name, "x")
    found = {
        (f.path.name, f.format, f.labels_path.name if f.labels_path else None)
        for f in channel_files(tmp_path)
    }
    assert found == {
        ("a.csv", TSV, None),
        ("b.conll", CONLL, None),
        ("c.IOB", CONLL, None),
        ("d.bio", CONLL, None),
        ("e.jsonl", JSONL, None),
        ("f.json", JSONL, None),
        ("text_x.txt", NEMO, "labels_x.txt"),
        ("text_lone.txt", TSV, None),  # no labels_lone.txt: a tab-separated .txt, as before
    }
    assert {f.path.name for f in channel_files(tmp_path, ner=False)} == {
        "a.csv",
        "text_x.txt",
        "labels_x.txt",
        "text_lone.txt",
    }
    explicit = channel_files(tmp_path, "conll")
    assert all(f.format == CONLL for f in explicit)
    assert "notes.md" in {f.path.name for f in explicit} and "_SUCCESS" not in {f.path.name for f in explicit}
    with pytest.raises(UserError, match=r"is not part of a pair text_NAME with labels_NAME"):
        channel_files(tmp_path, "nemo")
    with pytest.raises(
        UserError, match=r"input_format 'jsonl' holds one tag per token: it is for the ner task"
    ):
        channel_files(tmp_path, "jsonl", ner=False)


def test_single_train_channel_names_splits_in_any_format(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    write_conll(channel / "train.conll", [(["a"], ["O"])])
    write_nemo(channel, "dev", [(["b"], ["B-X"])])
    write_jsonl(channel / "test.jsonl", [(["c"], ["O"])], "tokens", "tags")
    splits = locate_splits(tmp_path)
    assert [f.path.name for f in splits.train] == ["train.conll"]
    assert splits.dev == [DataFile(channel / "text_dev.txt", NEMO, channel / "labels_dev.txt")]
    assert [f.path.name for f in splits.test] == ["test.jsonl"]
    rows = list(read_files(splits.dev))
    assert [(r.fields["text"], r.fields["labels"]) for r in rows] == [("b", "B-X")]


# --- real jobs ----------------------------------------------------------------------------------------


def with_orphans(
    sentences: list[tuple[list[str], list[str]]],
) -> tuple[list[tuple[list[str], list[str]]], int]:
    """The sentences with the B- of every multi-word entity in the first half turned into an orphan I-."""
    out, made = [], 0
    for index, (words, tags) in enumerate(sentences):
        tags = list(tags)
        if index < len(sentences) // 2:
            for position, tag in enumerate(tags[:-1]):
                if tag.startswith("B-") and tags[position + 1] == "I-" + tag[2:]:
                    tags[position] = "I-" + tag[2:]
                    made += 1
        out.append((words, tags))
    return out, made


def log_lines(output: str, marker: str) -> list[str]:
    return [line for line in output.splitlines() if marker in line]


def test_job_reads_conll_nemo_and_jsonl_channels_and_scores_strictly(
    tmp_path: Path, base_models: dict[str, Path]
) -> None:
    """Train IOB1 CoNLL, dev a NeMo pair with orphans, test JSON lines (own field names) with orphans:
    formats detected by extension, IOB1 converted, orphans reported per split with file and line, and
    the dev/test metrics in seqeval's strict mode (the gold orphans are no entities)."""
    data = tmp_path / "data"
    write_conll(data / "train" / "train.conll", sentences_of(DATA_DIR / "ner" / "train.csv"), iob1=True)
    dev, dev_orphans = with_orphans(sentences_of(DATA_DIR / "ner" / "dev.csv"))
    write_nemo(data / "dev", "dev", dev)
    test, test_orphans = with_orphans(sentences_of(DATA_DIR / "ner" / "test.csv"))
    write_jsonl(data / "test" / "part-0.jsonl", test, "words", "ner")
    assert dev_orphans and test_orphans
    base = make_tree(
        tmp_path / "tree",
        {c: data / c for c in ("train", "dev", "test")},
        quick_hyperparameters(
            "ner",
            base_models["bert"],
            max_steps=3,
            seqeval_mode="strict",
            tokens_field="words",
            tags_field="ner",
        ),
    )
    result = run_train(base, timeout=300)
    assert result.returncode == 0, result.output[-3000:]

    assert log_lines(result.output, "train.conll: CoNLL, 48 sentences, 1 -DOCSTART- line(s) dropped; IOB1")
    assert log_lines(result.output, "iob: train: no orphan I- tags in 48 rows")
    dev_report = log_lines(result.output, "iob: dev:")
    assert len(dev_report) == 1 and "WARNING" in dev_report[0]
    assert f"iob: dev: {dev_orphans} orphan I- tag(s)" in dev_report[0]
    line, (words, tags) = next((n, s) for n, s in enumerate(dev, start=1) if orphan_positions(s[1]))
    word = orphan_positions(tags)[0]
    before = f"after {tags[word - 1]}" if word else "at the start of the row"
    where = f"text_dev.txt + labels_dev.txt, line {line}, word {word + 1}"
    assert f"{where} {words[word]!r}: {tags[word]} {before}" in dev_report[0]
    assert "with seqeval_mode=strict these gold I- tags start no entity" in dev_report[0]
    assert log_lines(result.output, f"iob: test: {test_orphans} orphan I- tag(s)")

    metrics = result.metrics()
    assert metrics["dev"]["seqeval_mode"] == metrics["test"]["seqeval_mode"] == "strict"
    # strict: gold entities are the B- tags only; default mode would also count each orphan
    b_tags = sum(t.startswith("B-") for _, tags in test for t in tags)
    assert sum(v["support"] for v in metrics["test"]["per_type"].values()) == b_tags
    predictions = [json.loads(line) for line in (result.output_data / "test_predictions.jsonl").open()]
    assert [p["labels"] for p in predictions] == [tags for _, tags in test]
    gold, pred = [p["labels"] for p in predictions], [p["pred"] for p in predictions]
    summary, _ = score_ner(gold, pred, "strict")
    for name in ("precision", "recall", "f1", "accuracy"):
        assert metrics["test"][name] == pytest.approx(summary[name]), name


@pytest.mark.parametrize(
    ("files", "hyper", "pattern"),
    [
        (
            {"train/train.conll": "EU B-ORG\nrejects O\n", "dev/dev.conll": "EU B-ORG\n\nPeter PER\n"},
            {},
            r"dev\.conll, line 3: tag \(last column\) 'PER' is not an IOB tag",
        ),
        (
            {"train/eng.train": "EU B-ORG\nrejects O extra\n"},
            {"input_format": "conll"},
            r"eng\.train, line 2: has 3 columns but line 1 has 2",
        ),
        (
            {"train/train.jsonl": '{"tokens": ["EU"], "ner_tags": [3]}\n'},
            {},
            r"train\.jsonl, line 1: has no field 'tags' \(its fields: 'tokens', 'ner_tags'\)",
        ),
        (
            {"train/train.csv": "text\tlabels\nhello\tgreeting\n"},
            {"task_name": "classif", "input_format": "conll"},
            r"input_format 'conll' holds one tag per token: it is for the ner task only",
        ),
        (
            {"train/train.csv": "text\tlabels\nEU\tO\n"},
            {"input_format": "xml"},
            r"'input_format' has an invalid",
        ),
    ],
    ids=[
        "conll bad tag in dev",
        "conll explicit format",
        "jsonl missing field",
        "conll for classif",
        "bad format",
    ],
)
def test_bad_format_input_fails_the_job(
    tmp_path: Path,
    base_models: dict[str, Path],
    files: dict[str, str],
    hyper: dict[str, object],
    pattern: str,
) -> None:
    data = tmp_path / "data"
    for name, content in files.items():
        write(data / name, content)
    channels = sorted({name.split("/")[0] for name in files})
    hyper = dict(hyper)  # the parameters are shared between runs
    hyperparameters = quick_hyperparameters(str(hyper.pop("task_name", "ner")), base_models["bert"], **hyper)
    base = make_tree(tmp_path / "tree", {c: data / c for c in channels}, hyperparameters)
    result = run_train(base, timeout=120)
    assert result.returncode == 1, result.output[-3000:]
    assert result.failure is not None and result.failure.startswith("UserError: ")
    assert re.search(pattern, result.failure), result.failure
