"""Text classification throughput: our real server, Batch Transform style, against the HF pipeline.

One command, one machine, one model folder (a ``classif`` model written by ``train``; the README's
figures use MiniLM-L6 fine-tuned on BANKING77), one torch thread count for every side::

    python bench/classif_inference.py --model runs/banking77/model

Sides, loaded together and timed one at a time in interleaved rounds: our server fed MULTI_RECORD
JSON Lines payloads (fp32, ``HFSM_QUANTIZE=int8``, ``HFSM_AUTOCAST=bf16``), the bare
``Predictor.predict`` in this process, and
``transformers.pipeline("text-classification")`` at the fastest of ``--batch-sizes`` (chosen on an
evenly spaced sample), and with ``--toolkit-image`` the Hugging Face inference DLC's server (the
toolkit behind multi-model-server, ``bench/toolkit/Dockerfile``) sent all texts in one request.
Then: top-class agreement between the sides and accuracy against the gold labels. Results go to
``bench/results/classif_inference.json``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
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
    throughput_arguments,
    write_results,
)

DEFAULT_DATA = SHARED_DATA / "banking77" / "test.csv"
DEFAULT_OUTPUT = RESULTS / "classif_inference.json"


def top_labels(outputs: Sequence[Any], key: str) -> list[str]:
    return [output[key] for output in outputs]


def compare(gold: Sequence[str], sides: dict[str, list[str]]) -> dict[str, Any]:
    pipe = sides["pipeline"]
    return {
        "accuracy_vs_gold": {
            name: sum(a == b for a, b in zip(labels, gold, strict=True)) / len(gold)
            for name, labels in sides.items()
        },
        "top_class_agreement_with_pipeline_pct": {
            name: 100 * sum(a == b for a, b in zip(labels, pipe, strict=True)) / len(pipe)
            for name, labels in sides.items()
            if name != "pipeline"
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = throughput_arguments(__doc__.split("\n\n")[0], DEFAULT_DATA, DEFAULT_OUTPUT).parse_args(argv)
    threads, repeats = args.threads, args.repeats
    pin_threads(threads)
    model = check_model(args.model)
    rows = read_rows(args.data, args.limit)
    texts, gold = [row["text"] for row in rows], [row["labels"] for row in rows]
    command = command_line(__file__, argv)
    print(f"{len(texts)} texts from {args.data}, {threads} thread(s); {command}")
    load_at_start = os.getloadavg()
    measured = measure_sides(args, model, texts, "text-classification")

    labels = {
        name: top_labels(side["outputs"], "label" if name.startswith(("pipeline", "toolkit")) else "pred")
        for name, side in measured.items()
    }
    pipe = measured["pipeline"]
    results: dict[str, Any] = {
        "command": command,
        "model": str(model),
        "data": str(args.data.resolve()),
        "note": f"first {len(texts)} rows only (--limit)" if args.limit else "the whole file",
        "records": len(texts),
        "threads": threads,
        "device": args.device,
        "repeats": repeats,
        "machine": machine(threads, load_at_start),
        "agreement": compare(gold, labels),
        "sides": {name: {k: v for k, v in side.items() if k != "outputs"} for name, side in measured.items()},
        "ratios": {
            f"{name}_over_pipeline": side["records_per_s"] / pipe["records_per_s"]
            for name, side in measured.items()
            if name != "pipeline"
        },
    }
    if "toolkit_server" in measured:
        toolkit = measured["toolkit_server"]["records_per_s"]
        results["ratios"].update(
            {
                f"{name}_over_toolkit_server": side["records_per_s"] / toolkit
                for name, side in measured.items()
                if name.startswith("ours_server")
            }
        )
    print()
    print(f"classif inference, {len(texts)} records, {threads} torch thread(s), median of {repeats} run(s)")
    for name, side in measured.items():
        accuracy = results["agreement"]["accuracy_vs_gold"][name]
        print(f"{name:20s}{side['records_per_s']:10.1f} records/s   accuracy {100 * accuracy:.2f}%")
    for name, ratio in results["ratios"].items():
        print(f"{name:34s} {ratio:6.2f}x")
    for name, pct in results["agreement"]["top_class_agreement_with_pipeline_pct"].items():
        print(f"top class same as pipeline, {name:18s} {pct:.2f}%")
    write_results(args.output, results)


if __name__ == "__main__":
    main()
