"""The local harness (``hfsm local``): SageMaker tree layout, local train, local serve, batch transform.

Training and serving are the real commands in real processes; only the payload packing is also
checked as a pure function, because a tiny byte limit makes its edge cases cheap to reach.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import quick_hyperparameters
from hfsm.data.reading import read_table
from hfsm.errors import UserError
from hfsm.local.server import LocalServer, running_server
from hfsm.local.transform import (
    ExecutionParameters,
    Invoker,
    fetch_execution_parameters,
    pack_records,
    payload,
    split_records,
    transform,
)
from hfsm.local.tree import find_channels, layout_tree, parse_hyperparameter_args
from hfsm.sagemaker import SageMakerEnv
from live_server import free_port
from sagemaker_tree import DATA_DIR, TrainResult

ROOT = Path(__file__).resolve().parents[1]
NER_TEXTS = [
    "Empire State Building is in New York",
    "hello",
    "I flew from Paris to London with Air France last week",
    "Pretty bad storm here last evening .",
    "@paulwalk It 's the view from where I 'm living for two weeks",
    "Obama met Merkel",
]


def hfsm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "hfsm", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


# --- tree layout ---------------------------------------------------------------------------------------


def test_hyperparameter_args_merge_files_and_pairs_in_order(tmp_path: Path) -> None:
    sdk_file = tmp_path / "hyperparameters.json"  # as SageMaker writes it: json-encoded strings
    sdk_file.write_text(json.dumps({"task_name": '"ner"', "max_steps": "5", "learning_rate": "0.001"}))
    parsed = parse_hyperparameter_args(
        [
            str(sdk_file),
            "max_steps=7",
            "model_name=bert-base-cased",
            "fp16=true",
            'text_column="t=x"',
            "stride=0.5",
        ]
    )
    assert parsed == {
        "task_name": "ner",
        "max_steps": 7,
        "learning_rate": 0.001,
        "model_name": "bert-base-cased",
        "fp16": True,
        "text_column": "t=x",
        "stride": 0.5,
    }
    with pytest.raises(UserError, match="neither an existing JSON file nor key=value"):
        parse_hyperparameter_args(["no-such-file.json"])


def test_tree_from_csv_files_reads_back_like_sagemaker(tmp_path: Path, base_models: dict[str, Path]) -> None:
    work = tmp_path / "work"
    (work / "checkpoints" / "checkpoint-3").mkdir(parents=True)  # stale: would be resumed from
    (work / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (work / "notes.txt").write_text("mine")
    hyperparameters = {"task_name": "ner", "max_steps": 3, "learning_rate": 1e-3, "fp16": False, "stride": 8}
    tree = layout_tree(work, DATA_DIR / "ner", hyperparameters, model=base_models["bert"])

    env = SageMakerEnv.from_base_dir(tree.base)
    assert dict(env.hyperparameters) == hyperparameters
    raw = json.loads((tree.config_dir / "hyperparameters.json").read_text())
    assert all(isinstance(value, str) for value in raw.values()), "SDK style: every value a JSON string"
    assert env.current_host == "algo-1" and env.hosts == ["algo-1"]
    assert set(env.input_data_config) == {"train", "dev", "test", "model"}
    assert tree.channels() == ["dev", "model", "test", "train"]
    for split in ("train", "dev", "test"):
        copied = tree.channels_dir / split / f"{split}.csv"
        assert copied.read_bytes() == (DATA_DIR / "ner" / f"{split}.csv").read_bytes()
    assert (tree.channels_dir / "model" / "config.json").is_file()
    assert not (work / "checkpoints").exists(), "stale checkpoints removed"
    assert (work / "notes.txt").read_text() == "mine", "files the job does not own are kept"
    assert tree.model_dir.is_dir() and tree.output_data_dir.is_dir()


def test_tree_from_channel_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for channel, split in (("train", "train"), ("validation", "dev")):
        (data / channel).mkdir(parents=True)
        (data / channel / "part-1.tsv").write_bytes((DATA_DIR / "ner" / f"{split}.csv").read_bytes())
    assert find_channels(data) == {"train": data / "train", "dev": data / "validation"}
    tree = layout_tree(tmp_path / "work", data, {"task_name": "ner"})
    assert tree.channels() == ["dev", "train"]
    assert (tree.channels_dir / "dev" / "part-1.tsv").is_file()
    with pytest.raises(UserError, match=r"no train\.csv"):
        find_channels(tmp_path / "work")


# --- local train --------------------------------------------------------------------------------------


def test_local_train_in_process(tmp_path: Path, base_models: dict[str, Path]) -> None:
    hyperparameters = quick_hyperparameters("ner", base_models["bert"])
    pairs = [f"{key}={json.dumps(value)}" for key, value in hyperparameters.items()]
    work = tmp_path / "work"
    result = hfsm(
        "local", "train", "--data", str(DATA_DIR / "ner"), "--work", str(work), "--hyperparameters", *pairs
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"model:   {work.resolve() / 'model'}" in result.stdout
    dev_line = next(line for line in result.stdout.splitlines() if line.startswith("dev:"))
    assert re.search(r"\bf1=\d\.\d{4}\b", dev_line)
    assert (work / "model" / "hfsm.json").is_file()
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert metrics["train"]["global_step"] == hyperparameters["max_steps"]


def test_local_train_reports_the_failure_and_exits_1(tmp_path: Path) -> None:
    result = hfsm(
        "local",
        "train",
        "--data",
        str(DATA_DIR / "ner"),
        "--work",
        str(tmp_path / "w"),
        "--hyperparameters",
        "task_name=ner",
        "max_stepz=3",
    )
    assert result.returncode == 1
    assert "Unknown hyperparameter 'max_stepz'. Did you mean 'max_steps'?" in result.stdout
    assert "train exited with code 1" in result.stdout
    assert (tmp_path / "w" / "output" / "failure").read_text().startswith("UserError")


# --- convert ------------------------------------------------------------------------------------------


def conll_lines(path: Path, iob1: bool, orphan: bool) -> tuple[str, list[list[str]]]:
    """A WNUT-17 slice as CoNLL text (IOB1 when ``iob1``; the first entity of each sentence starting with
    an orphan I- when ``orphan``) and the IOB2 tags a repaired conversion must give back."""
    lines, expected = ["-DOCSTART- O", ""], []
    for row in read_table(path, ["text", "labels"]):
        words, tags = row.fields["text"].split(), row.fields["labels"].split()
        written, previous, seen = [], "O", False
        for tag in tags:
            starts = tag.startswith("B-") and not (previous != "O" and previous[2:] == tag[2:])
            if starts and (iob1 or (orphan and not seen)):
                written.append("I-" + tag[2:])
                seen = True
            else:
                written.append(tag)
            previous = written[-1]
        lines += [f"{w}\t{t}" for w, t in zip(words, written, strict=True)] + [""]
        expected.append(tags)
    return "\n".join(lines) + "\n", expected


def test_convert_then_train_on_the_result(tmp_path: Path, base_models: dict[str, Path]) -> None:
    """`local convert` turns IOB1 CoNLL (train) and IOB2 CoNLL with orphan I- tags (dev) into TSV files
    that `local train --data` trains on; --repair-iob gives back the original IOB2 tags."""
    source = tmp_path / "conll"
    source.mkdir()
    train_text, train_tags = conll_lines(DATA_DIR / "ner" / "train.csv", iob1=True, orphan=False)
    dev_text, dev_tags = conll_lines(DATA_DIR / "ner" / "dev.csv", iob1=False, orphan=True)
    (source / "train.iob").write_text(train_text, encoding="utf-8")
    (source / "dev.conll").write_text(dev_text, encoding="utf-8")
    out = tmp_path / "tsv"

    result = hfsm("local", "convert", "--input", str(source), "--output", str(out), "--repair-iob")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "IOB1 (I- starts" in result.stdout and "converted to IOB2" in result.stdout
    orphans = sum(1 for line in dev_text.splitlines() if "\tI-" in line) - sum(
        1 for tags in dev_tags for t in tags if t.startswith("I-")
    )
    assert orphans > 0
    assert f"iob: dev: {orphans} orphan I- tag(s)" in result.stdout and "rewritten to B-" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["dev.tsv", "train.tsv"]
    for name, tags in (("train", train_tags), ("dev", dev_tags)):
        rows = read_table(out / f"{name}.tsv", ["text", "labels"])
        assert [r.fields["labels"].split() for r in rows] == tags, name
        original = read_table(DATA_DIR / "ner" / f"{name}.csv", ["text", "labels"])
        assert [r.fields["text"] for r in rows] == [r.fields["text"] for r in original]

    again = hfsm("local", "convert", "--input", str(source / "dev.conll"), "--output", str(tmp_path / "kept"))
    assert again.returncode == 0 and "kept as I-" in again.stdout, "without --repair-iob: reported only"
    kept = read_table(tmp_path / "kept" / "dev.tsv", ["text", "labels"])
    assert sum(r.fields["labels"].split() != tags for r, tags in zip(kept, dev_tags, strict=True)) > 0

    hyperparameters = quick_hyperparameters("ner", base_models["bert"], max_steps=3)
    pairs = [f"{key}={json.dumps(value)}" for key, value in hyperparameters.items()]
    work = tmp_path / "work"
    trained = hfsm("local", "train", "--data", str(out), "--work", str(work), "--hyperparameters", *pairs)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "iob: train: no orphan I- tags in 48 rows" in trained.stdout
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    entities = sum(t.startswith("B-") for tags in dev_tags for t in tags)
    assert sum(v["support"] for v in metrics["dev"]["per_type"].values()) == entities


# --- payload packing (pure) ----------------------------------------------------------------------------


def test_split_records_is_line_based() -> None:
    assert split_records(b'{"a":1}\r\n\n{"b":2}\n   \n{"c":3}') == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    assert split_records(b"") == []


def test_multi_record_payloads_respect_the_byte_limit_and_keep_order() -> None:
    records = [b"x" * size for size in (3, 5, 1, 7, 2, 2, 2, 9, 4)]
    limit = 10  # bytes, each record costs its length + 1 newline
    batches = list(pack_records(records, "MULTI_RECORD", limit))
    assert [record for batch in batches for record in batch] == records
    assert all(len(payload(batch)) <= limit for batch in batches)
    assert len(batches) > 1
    # greedy: no batch could have taken the first record of the next one
    for batch, following in itertools.pairwise(batches):
        assert len(payload(batch)) + len(following[0]) + 1 > limit
    assert [len(b) for b in pack_records(records, "SINGLE_RECORD", limit)] == [1] * len(records)
    assert list(pack_records(records, "MULTI_RECORD", 0)) == [records], "0 means no limit"
    assert list(pack_records([], "MULTI_RECORD", limit)) == []


def test_a_record_larger_than_the_payload_limit_fails_the_job() -> None:
    with pytest.raises(UserError, match="record 2 is 12 bytes, more than MaxPayloadInMB"):
        list(pack_records([b"ok", b"x" * 11], "MULTI_RECORD", 10))


# --- transform against a real server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ner_server(trained: dict[str, TrainResult]) -> Iterator[LocalServer]:
    """One real server for the NER model, started and stopped by the harness itself."""
    with running_server(trained["ner"].model_dir) as server:
        yield server


def _check_ner_output(texts: list[str], out: Path) -> None:
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(texts)
    for text, line in zip(texts, lines, strict=True):
        assert len(json.loads(line)["pred"]) == len(text.split()), "output line i answers input line i"


def test_concurrent_single_records_keep_input_order(tmp_path: Path, ner_server: LocalServer) -> None:
    texts = [NER_TEXTS[i % len(NER_TEXTS)] for i in range(40)]
    source = write_jsonl(tmp_path / "in" / "records.jsonl", texts)
    params = ExecutionParameters(
        max_concurrent_transforms=4, batch_strategy="SINGLE_RECORD", max_payload_mb=1
    )
    invoke = Invoker(ner_server.url, "application/jsonlines", "application/jsonlines")
    result = transform(source, tmp_path / "out", invoke, params)
    assert result.requests == 40 and result.records == 40
    assert result.outputs == [tmp_path / "out" / "records.jsonl.out"]
    _check_ner_output(texts, result.outputs[0])


def test_execution_parameters_come_from_the_server(ner_server: LocalServer) -> None:
    params = fetch_execution_parameters(ner_server.url)
    assert params.batch_strategy == "MULTI_RECORD"
    assert params.max_payload_mb >= 1 and params.max_concurrent_transforms >= 1


def test_a_non_line_response_format_is_refused(tmp_path: Path, ner_server: LocalServer) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", NER_TEXTS)
    invoke = Invoker(ner_server.url, "application/jsonlines", "application/json")
    with pytest.raises(UserError, match=r"answered 1 line\(s\) for 6 record\(s\)"):
        transform(source, tmp_path / "out", invoke, ExecutionParameters())
    assert not (tmp_path / "out" / "in.jsonl.out").exists(), "no output file for a failed job"


def test_multi_record_payload_of_many_short_lines(tmp_path: Path, ner_server: LocalServer) -> None:
    """What SageMaker sends with the server's own execution parameters: all 1500 short lines in one
    6 MB payload (SageMaker packs by bytes only, so the server must not cap the number of records)."""
    texts = [f"hello number {i}" for i in range(1500)]
    source = write_jsonl(tmp_path / "short.jsonl", texts)
    invoke = Invoker(ner_server.url, "application/jsonlines", "application/jsonlines")
    result = transform(source, tmp_path / "out", invoke, fetch_execution_parameters(ner_server.url))
    assert result.requests == 1
    _check_ner_output(texts, result.outputs[0])


def test_local_transform_cli_end_to_end(tmp_path: Path, trained: dict[str, TrainResult]) -> None:
    """The whole command: it starts a server for --model, transforms a folder, stops the server."""
    inputs = tmp_path / "input"
    first = write_jsonl(inputs / "a.jsonl", NER_TEXTS * 3)
    second = write_jsonl(inputs / "sub" / "b.jsonl", list(reversed(NER_TEXTS)))
    out = tmp_path / "output"
    result = hfsm(
        "local",
        "transform",
        "--model",
        str(trained["ner"].model_dir),
        "--input",
        str(inputs),
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "BatchStrategy=MULTI_RECORD" in result.stdout
    assert "24 records in 2 requests" in result.stdout
    assert re.search(r"transform: 24/24 records \(100%\)", result.stderr), "plain progress lines off a TTY"
    _check_ner_output(NER_TEXTS * 3, out / "a.jsonl.out")
    _check_ner_output(list(reversed(NER_TEXTS)), out / "sub" / "b.jsonl.out")
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a.jsonl.out", "b.jsonl.out"]
    assert first.read_text().count("\n") == 18 and second.read_text().count("\n") == 6, "inputs untouched"


# --- local serve ------------------------------------------------------------------------------------


def test_local_serve_answers_and_stops_on_sigterm(tmp_path: Path, trained: dict[str, TrainResult]) -> None:
    import requests

    port = free_port()
    model = trained["ner"].model_dir
    command = [sys.executable, "-m", "hfsm", "local", "serve", "--model", str(model), "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    banner = f"serving {model} on {url} (Ctrl-C to stop)"
    try:
        deadline = time.monotonic() + 180
        while not any(banner in line for line in lines):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        answer = requests.post(f"{url}/invocations", json={"data": [{"text": NER_TEXTS[0]}]}, timeout=30)
        assert answer.status_code == 200
        assert len(answer.json()["predictions"][0]["pred"]) == len(NER_TEXTS[0].split())
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    assert process.returncode == 0, "".join(lines)[-3000:]
    assert stopped_in < 30
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/ping", timeout=5)


# --- the SageMaker SDK example ------------------------------------------------------------------------


def test_sdk_example_imports_without_aws_and_its_metric_regexes_match_train_logs(
    trained: dict[str, TrainResult],
) -> None:
    spec = importlib.util.spec_from_file_location(
        "sagemaker_sdk_example", ROOT / "examples" / "sagemaker_sdk.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs nothing: the SDK is imported inside main()
    log = trained["ner"].output
    metrics = json.loads((trained["ner"].output_data / "metrics.json").read_text())
    for definition in module.METRIC_DEFINITIONS:
        found = re.findall(definition["Regex"], log)
        assert found, f"{definition['Name']}: {definition['Regex']} matches no log line"
        split, name = definition["Name"].split(":")
        if split == "test":
            assert float(found[-1]) == pytest.approx(metrics["test"][name], abs=1e-6)
