"""Multi-model endpoints: what serving a model by name costs against a single-model endpoint.

One command (the README's figures use the CoNLL-2003 NER model, which has an ONNX export)::

    python bench/multi_model.py --model runs/conll/model

It measures, on the same machine with the same model folder and settings:

1. **throughput**: CoNLL dev sentences as Batch Transform MULTI_RECORD JSON Lines payloads through
   a single-model server (``/invocations``) and through a multi-model server
   (``SAGEMAKER_MULTI_MODEL=true``, the model loaded by ``POST /models``, payloads to
   ``/models/<name>/invoke``), in interleaved rounds: records/s for both, their ratio, and whether
   every answer is the same;
2. **loads and unloads**: ``--cycles`` rounds of loading the model under a new name and unloading
   it on the multi-model server: seconds per load (``POST /models``: the model loaded and warmed
   up) and the worker's resident memory after each unload, which must stay flat.

Results go to ``bench/results/multi_model.json`` with the machine and the exact command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    SHARED_DATA,
    check_model,
    command_line,
    interleaved,
    machine,
    pin_threads,
    read_rows,
    server_side,
    write_results,
)

from live_server import LiveServer, rss_bytes

DEFAULT_DATA = SHARED_DATA / "conll2003" / "dev.csv"
DEFAULT_OUTPUT = RESULTS / "multi_model.json"
NAME = "bench-model"


def load(server: LiveServer, name: str, model: Path) -> float:
    """Seconds for ``POST /models`` to load ``model`` as ``name`` (it answers once warmed up)."""
    started = time.perf_counter()
    answer = requests.post(f"{server.url}/models", json={"model_name": name, "url": str(model)}, timeout=300)
    if answer.status_code != 200:
        raise SystemExit(f"loading {model} failed: {answer.status_code} {answer.text}")
    return time.perf_counter() - started


def unload(server: LiveServer, name: str) -> None:
    answer = requests.delete(f"{server.url}/models/{name}", timeout=120)
    if answer.status_code != 200:
        raise SystemExit(f"unloading {name} failed: {answer.status_code} {answer.text}")


def worker_rss(server: LiveServer) -> int:
    return sum(rss_bytes(pid) for pid in server.worker_pids())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder written by train")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tab-separated text/labels file")
    parser.add_argument("--limit", type=int, default=1600, help="first N rows only (default 1600)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="compute threads")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median counts")
    parser.add_argument("--cycles", type=int, default=10, help="load/unload cycles")
    parser.add_argument("--runtime", choices=("auto", "torch", "onnxruntime"), default="auto")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    model = check_model(args.model).resolve()
    texts = [row["text"] for row in read_rows(args.data, args.limit)]
    command = command_line(__file__, argv)
    print(f"{len(texts)} texts from {args.data}, {args.threads} thread(s); {command}")
    load_at_start = os.getloadavg()
    settings = {"HFSM_RUNTIME": args.runtime}
    cycles: dict[str, Any] = {}

    def prepare(server: LiveServer) -> tuple[str, dict[str, Any]]:
        rss_before = worker_rss(server)
        loads, after_unload = [], []
        for cycle in range(args.cycles):
            loads.append(load(server, f"cycle-{cycle}", model))
            unload(server, f"cycle-{cycle}")
            after_unload.append(worker_rss(server))
        cycles.update(
            {
                "cycles": args.cycles,
                "load_seconds": loads,
                "load_seconds_median": statistics.median(loads) if loads else None,
                "worker_rss_mb_before_any_load": rss_before / 2**20,
                "worker_rss_mb_after_each_unload": [value / 2**20 for value in after_unload],
            }
        )
        seconds = load(server, NAME, model)
        return f"/models/{NAME}/invoke", {
            "load_seconds": seconds,
            "worker_rss_mb_loaded": worker_rss(server) / 2**20,
        }

    with tempfile.TemporaryDirectory(prefix="bench-mme-") as logs, contextlib.ExitStack() as stack:
        log_dir = Path(logs)
        sides = {
            "single_model": stack.enter_context(server_side(model, texts, args.threads, log_dir, settings)),
            "multi_model": stack.enter_context(
                server_side(
                    log_dir / "no-model",
                    texts,
                    args.threads,
                    log_dir,
                    {**settings, "SAGEMAKER_MULTI_MODEL": "true"},
                    prepare=prepare,
                )
            ),
        }
        measured = interleaved(sides, args.repeats, len(texts))

    single, multi = measured["single_model"], measured["multi_model"]
    same = sum(a == b for a, b in zip(single["outputs"], multi["outputs"], strict=True))
    results = {
        "command": command,
        "model": str(model),
        "data": str(args.data.resolve()),
        "records": len(texts),
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": machine(args.threads, load_at_start),
        "sides": {name: {k: v for k, v in side.items() if k != "outputs"} for name, side in measured.items()},
        "answers_identical_pct": 100 * same / len(texts),
        "load_unload_cycles": cycles,
        "ratios": {"multi_over_single": multi["records_per_s"] / single["records_per_s"]},
    }
    ratio, identical = results["ratios"]["multi_over_single"], results["answers_identical_pct"]
    print(
        f"\nsingle-model {single['records_per_s']:.1f} rec/s, multi-model {multi['records_per_s']:.1f} "
        f"rec/s ({ratio:.3f}x), answers {identical:.2f}% identical"
    )
    rss = cycles["worker_rss_mb_after_each_unload"]
    if rss:
        median, before = cycles["load_seconds_median"], cycles["worker_rss_mb_before_any_load"]
        print(
            f"load {median:.2f} s (median of {args.cycles}); worker RSS after each unload "
            f"{rss[0]:.0f} .. {rss[-1]:.0f} MB (before any load {before:.0f} MB)"
        )
    write_results(args.output, results)


if __name__ == "__main__":
    main()
