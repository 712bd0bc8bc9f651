"""NER inference throughput: our real server, Batch Transform style, against the Hugging Face pipeline.

One command, one machine, one model folder (written by ``python -m hfsm train``), one torch thread
count for every side::

    python bench/ner_inference.py --model runs/conll/model

All sides are loaded first (the servers side by side, idle until their turn), then timed in
``--repeats`` interleaved rounds, never two at once (see ``common.interleaved``):

1. **ours (server, fp32)**: the real ``python -m hfsm serve`` in a subprocess on torch
   (``HFSM_RUNTIME=torch``, ``HFSM_TORCH_THREADS`` set to ``--threads``, every other setting at its
   production default). Once ``/ping`` says 200,
   the texts are sent as ``application/jsonlines`` the way Batch Transform sends them:
   ``MaxPayloadInMB`` from ``/execution-parameters``, lines packed into ``MULTI_RECORD`` payloads by
   the harness's own :func:`hfsm.local.transform.pack_records`, one request at a time. One small
   warm-up request first, then records/s over the whole set (HTTP, JSON and all).
2. **ours (server, fast paths)**: the same with ``HFSM_QUANTIZE=int8`` (torch); with
   ``HFSM_AUTOCAST=bf16`` (float32 weights, bf16 matrix products) where the CPU has native bfloat16;
   and where the model folder has an ONNX export (``python -m hfsm local export-onnx``), with
   ``HFSM_RUNTIME=onnxruntime``, float32 and int8.
3. **bare forward**: ``Predictor.predict(records)`` in this process, on all the records at once: the
   prediction core without HTTP, to give the server's overhead.
4. **reference**: ``transformers.pipeline("token-classification", aggregation_strategy="first")``
   over the same texts; its batch size is the fastest of ``--batch-sizes`` on an evenly spaced
   sample of ``--sample`` texts, then the whole set is timed with it.
5. **the DLC's server** (with ``--toolkit-image``): what the Hugging Face inference Deep Learning
   Containers run, rebuilt by ``bench/toolkit/Dockerfile`` (sagemaker-huggingface-inference-toolkit
   behind multi-model-server, one worker, ``--threads`` torch threads), sent every text in one JSON
   request with the same pipeline parameters and batch size as the reference.

Then it compares the predictions word by word and entity by entity (the pipeline's entities, with
character offsets, become B-/I- tags of the whitespace words they cover; an entity is a (type, first
word, last word) triple), and scores every side against the gold labels with seqeval (the metric
``train`` reports), which gives the F1 cost of int8. It prints a table and writes every number
(with the CPU time the hypervisor stole during each run), the machine and the exact command to
``bench/results/ner_inference.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    SHARED_DATA,
    check_model,
    command_line,
    machine,
    measure_sides,
    pin_threads,
    read_rows,
    seqeval_scores,
    throughput_arguments,
    write_results,
)

DEFAULT_DATA = SHARED_DATA / "conll2003" / "dev.csv"
DEFAULT_OUTPUT = RESULTS / "ner_inference.json"


@dataclass(frozen=True)
class Sentence:
    text: str
    gold: list[str]


def read_sentences(path: Path, limit: int | None) -> list[Sentence]:
    """The ``text``/``labels`` columns of a tab-separated training file (one tag per word)."""
    sentences = []
    for number, row in enumerate(read_rows(path, limit), start=2):
        words, labels = row["text"].split(), row["labels"].split()
        if len(words) != len(labels):
            raise SystemExit(f"{path}:{number}: {len(words)} words but {len(labels)} labels")
        sentences.append(Sentence(row["text"], labels))
    return sentences


# --------------------------------------------------------------------------------------------------
# The three measurements


def pipeline_word_tags(text: str, entities: Sequence[dict[str, Any]]) -> tuple[list[str], int]:
    """B-/I-TYPE for the whitespace words that an entity's [start, end) span covers, O elsewhere.

    Also returns how many of the entities do not start and end on whitespace-word boundaries: the
    pipeline's "words" are the tokenizer's pre-tokens (``P.`` is two words, ``P`` and ``.``), so an
    entity can start or stop inside a whitespace word. A word overlapped by several entities takes
    the tag of the last one.
    """
    from hfsm.data.records import word_spans

    spans = word_spans(text)
    starts, ends = {ws for ws, _ in spans}, {we for _, we in spans}
    tags = ["O"] * len(spans)
    off_boundaries = 0
    for entity in entities:
        start, end, kind = int(entity["start"]), int(entity["end"]), entity["entity_group"]
        off_boundaries += start not in starts or end not in ends
        inside = [i for i, (ws, we) in enumerate(spans) if ws < end and we > start]
        for position, index in enumerate(inside):
            tags[index] = f"{'B' if position == 0 else 'I'}-{kind}"
    return tags, off_boundaries


def entity_f1(ours: Sequence[set], theirs: Sequence[set]) -> dict[str, float]:
    """Micro precision/recall/F1 of ``ours`` taking ``theirs`` as the truth, sentence by sentence."""
    common = sum(len(a & b) for a, b in zip(ours, theirs, strict=True))
    n_ours, n_theirs = sum(map(len, ours)), sum(map(len, theirs))
    precision = common / n_ours if n_ours else 1.0
    recall = common / n_theirs if n_theirs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "ours": n_ours, "pipeline": n_theirs}


def word_entities(tags: Sequence[list[str]]) -> list[set[tuple[str, int, int]]]:
    """(type, first word, last word) of each entity, per sentence, read from word tags as seqeval does."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [set(get_entities(list(sentence))) for sentence in tags]


def agreement(ours: Sequence[list[str]], theirs: Sequence[list[str]]) -> dict[str, Any]:
    """How far two taggings of the same words agree: per word, per sentence and per entity."""
    pairs = [(a, b) for x, y in zip(ours, theirs, strict=True) for a, b in zip(x, y, strict=True)]
    ours_entities, their_entities = word_entities(ours), word_entities(theirs)
    common = sum(len(a & b) for a, b in zip(ours_entities, their_entities, strict=True))
    total = sum(len(a | b) for a, b in zip(ours_entities, their_entities, strict=True))
    return {
        "word_tag_agreement_pct": 100 * sum(a == b for a, b in pairs) / len(pairs),
        "sentences_with_identical_tags_pct": 100
        * sum(a == b for a, b in zip(ours, theirs, strict=True))
        / len(ours),
        "identical_entities_pct": 100 * common / total if total else 100.0,
        "entity_micro_f1": entity_f1(ours_entities, their_entities),
    }


def fast_paths(measured: dict[str, Any]) -> list[str]:
    """Suffixes of our fast-path server sides that ran: int8, bf16 on a CPU; bf16, fp16 on a GPU."""
    return [name.removeprefix("ours_server_") for name in measured if name.startswith("ours_server_")]


def compare(sentences: Sequence[Sentence], outputs: dict[str, Sequence[Any]]) -> dict[str, Any]:
    """Our answers against the pipeline's, our fast paths' against float32, and all against gold.

    The pipeline's entities (character spans over its own pre-tokens) become tags of the whitespace
    words they cover, so that both are compared word by word and entity by entity (an entity is a
    (type, first word, last word) triple, ``identical_entities_pct`` = shared / union).
    """
    ours = outputs["ours_server"]
    pipe = outputs["pipeline"]
    ours_tags = [output["pred"] for output in ours]
    converted = [pipeline_word_tags(s.text, entities) for s, entities in zip(sentences, pipe, strict=True)]
    pipe_tags = [tags for tags, _ in converted]
    fast = {
        name: [output["pred"] for output in outputs[f"ours_server_{name}"]] for name in fast_paths(outputs)
    }
    gold = [s.gold for s in sentences]
    ours_spans = [{(e["type"], e["start"], e["end"]) for e in output["entities"]} for output in ours]
    pipe_spans = [{(e["entity_group"], int(e["start"]), int(e["end"])) for e in out} for out in pipe]
    scores = {"ours_fp32": seqeval_scores(gold, ours_tags)}
    scores.update({f"ours_{name}": seqeval_scores(gold, tags) for name, tags in fast.items()})
    scores["pipeline"] = seqeval_scores(gold, pipe_tags)
    if "pipeline_fp16" in outputs:
        half = [
            pipeline_word_tags(s.text, e)[0] for s, e in zip(sentences, outputs["pipeline_fp16"], strict=True)
        ]
        scores["pipeline_fp16"] = seqeval_scores(gold, half)
    # sentences where the pipeline's pre-tokens are whitespace words: entities can be compared as equals
    aligned = [i for i, (_, off) in enumerate(converted) if off == 0]
    compared: dict[str, Any] = {
        "words": sum(len(tags) for tags in ours_tags),
        "ours_vs_pipeline": agreement(ours_tags, pipe_tags),
        "ours_vs_pipeline_where_its_entities_are_whole_words": {
            "sentences": len(aligned),
            **agreement([ours_tags[i] for i in aligned], [pipe_tags[i] for i in aligned]),
        },
        "ours_vs_pipeline_character_spans": entity_f1(ours_spans, pipe_spans),
    }
    if "toolkit_server" in outputs:
        dlc = outputs["toolkit_server"]
        toolkit = [pipeline_word_tags(s.text, e)[0] for s, e in zip(sentences, dlc, strict=True)]
        scores["toolkit_server"] = seqeval_scores(gold, toolkit)
        compared["ours_vs_toolkit_server"] = agreement(ours_tags, toolkit)
    compared.update({f"{name}_vs_fp32": agreement(tags, ours_tags) for name, tags in fast.items()})
    compared.update(
        {
            "pipeline_entities": sum(map(len, pipe)),
            "pipeline_entities_off_word_boundaries": sum(off for _, off in converted),
            "server_equals_bare_forward_tags": ours_tags
            == [output["pred"] for output in outputs["ours_bare_forward"]],
            "seqeval_vs_gold": scores,
        }
    )
    for name in fast:
        compared[f"{name}_f1_drop_points"] = 100 * (scores["ours_fp32"]["f1"] - scores[f"ours_{name}"]["f1"])
    return compared


def print_table(results: dict[str, Any]) -> None:
    sides = results["sides"]
    compared = results["agreement"]
    gold = compared["seqeval_vs_gold"]
    n, threads, repeats = results["records"], results["threads"], results["repeats"]
    print()
    print(f"NER inference, {n} records, {threads} torch thread(s), median of {repeats} run(s)")
    print(f"{'':46s}{'records/s':>10s}{'seconds':>10s}  notes")
    fast = fast_paths(sides)
    setting = {
        "int8": "torch int8",
        "bf16": "torch bf16 autocast",
        "fp16": "torch fp16 autocast",
        "onnx": "ONNX Runtime fp32",
        "onnx_int8": "ONNX Runtime int8",
    }
    rows = [("ours: server torch fp32 (HTTP, MULTI_RECORD)", "ours_server", "requests")]
    rows += [(f"ours: server {setting[name]}", f"ours_server_{name}", "requests") for name in fast]
    rows += [
        ("ours: bare Predictor.predict fp32", "ours_bare_forward", "batch_size"),
        ("HF pipeline (aggregation first)", "pipeline", "batch_size"),
    ]
    if "pipeline_fp16" in sides:
        rows.append(("HF pipeline, float16 weights", "pipeline_fp16", "batch_size"))
    if "toolkit_server" in sides:
        rows.append(("HF DLC server (toolkit + MMS, 1 request)", "toolkit_server", "batch_size"))
    for name, key, note in rows:
        numbers = sides[key]
        print(f"{name:46s}{numbers['records_per_s']:10.1f}{numbers['seconds']:10.2f}  {note} {numbers[note]}")
    print()
    for name, ratio in results["ratios"].items():
        print(f"{name:38s} {ratio:8.2f}")
    print()
    versus_keys = [("ours vs pipeline", "ours_vs_pipeline")]
    if "ours_vs_toolkit_server" in compared:
        versus_keys.append(("ours vs DLC server", "ours_vs_toolkit_server"))
    versus_keys += [(f"{name} vs fp32    ", f"{name}_vs_fp32") for name in fast]
    for label, key in versus_keys:
        versus = compared[key]
        print(
            f"{label}: word tags {versus['word_tag_agreement_pct']:.2f}% identical, "
            f"entities {versus['identical_entities_pct']:.2f}% identical (word level)"
        )
    whole = compared["ours_vs_pipeline_where_its_entities_are_whole_words"]
    print(
        f"ours vs pipeline, the {whole['sentences']} sentences where no pipeline entity starts or ends "
        f"inside a word: entities {whole['identical_entities_pct']:.2f}% identical, "
        f"word tags {whole['word_tag_agreement_pct']:.2f}%"
    )
    for side, score in gold.items():
        print(f"seqeval F1 vs gold, {side:14s} {100 * score['f1']:.2f}")
    for name in fast:
        print(f"{name} F1 drop: {compared[f'{name}_f1_drop_points']:.2f} points")
    print(f"server tags == bare forward tags: {compared['server_equals_bare_forward_tags']}")


def main(argv: Sequence[str] | None = None) -> None:
    args = throughput_arguments(__doc__.split("\n\n")[0], DEFAULT_DATA, DEFAULT_OUTPUT).parse_args(argv)
    threads, repeats = args.threads, args.repeats
    pin_threads(threads)
    model = check_model(args.model)
    sentences = read_sentences(args.data, args.limit)
    texts = [s.text for s in sentences]
    command = command_line(__file__, argv)
    print(f"{len(texts)} sentences from {args.data}, {threads} thread(s); {command}")

    load_at_start = os.getloadavg()
    measured = measure_sides(args, model, texts, "token-classification", aggregation_strategy="first")

    pipe, server = measured["pipeline"], measured["ours_server"]
    results: dict[str, Any] = {
        "command": command,
        "model": str(model),
        "data": str(args.data.resolve()),
        "note": f"first {len(texts)} sentences only (--limit)" if args.limit else "the whole file",
        "records": len(texts),
        "threads": threads,
        "device": args.device,
        "repeats": repeats,
        "words": sum(len(s.gold) for s in sentences),
        "machine": machine(threads, load_at_start),
        "agreement": compare(sentences, {name: side["outputs"] for name, side in measured.items()}),
        "sides": {name: {k: v for k, v in side.items() if k != "outputs"} for name, side in measured.items()},
        "ratios": {
            "server_fp32_over_pipeline": server["records_per_s"] / pipe["records_per_s"],
            **{
                f"server_{name}_over_pipeline": measured[f"ours_server_{name}"]["records_per_s"]
                / pipe["records_per_s"]
                for name in fast_paths(measured)
            },
            "bare_fp32_over_pipeline": measured["ours_bare_forward"]["records_per_s"] / pipe["records_per_s"],
            "server_overhead_pct_vs_bare": 100
            * (server["seconds"] / measured["ours_bare_forward"]["seconds"] - 1),
        },
    }
    if "toolkit_server" in measured:
        toolkit = measured["toolkit_server"]["records_per_s"]
        results["ratios"].update(
            {
                f"server_{name}_over_toolkit_server": measured[f"ours_server{suffix}"]["records_per_s"]
                / toolkit
                for name, suffix in [("fp32", ""), *((name, f"_{name}") for name in fast_paths(measured))]
            }
        )
    if "pipeline_fp16" in measured:
        half = measured["pipeline_fp16"]["records_per_s"]
        results["ratios"].update(
            {
                f"server_{name}_over_pipeline_fp16": measured[f"ours_server_{name}"]["records_per_s"] / half
                for name in ("bf16", "fp16")
            }
        )
    print_table(results)
    write_results(args.output, results)


if __name__ == "__main__":
    main()
