"""What ``torch.compile`` would buy our float32 CPU forward pass, and what it would cost a worker.

One command::

    python bench/compile.py --model runs/conll/model

Why it exists: torch's float32 forward is bound by its matrix products (``forward_profile.py``),
and the rest (bias, GELU, LayerNorm, softmax, copies) is what a compiler can fuse. Whether that is
worth a serving setting depends on three numbers this script measures on the same process and
records: the steady-state speed-up over the eager default, the compile time a worker would spend
before it answers (batches of every length, padded and packed, each a shape the compiler meets),
and whether the answers stay those of the eager model.

It loads the model as the server does (``Predictor``, torch, ``--threads`` threads) once per
setting: eager with the default Linear kernel (oneDNN's on AMD CPUs), eager on ``aten::addmm``,
and the ``addmm`` model wrapped in ``torch.compile(dynamic=True)`` with Inductor, with ``--freezing``
Inductor's freezing (weights folded in as constants, Linear layers prepacked for oneDNN). One
compiled setting per process: Dynamo's cache is keyed by the code of ``forward``, so a second model
in the same process would reuse the first one's graphs and never compile its own. The warm-up and
the first pass over the ``--limit`` CoNLL-2003 dev sentences hold the compile cost; then
``--repeats`` interleaved rounds give records/s (the median counts). Word tags and their
probabilities are compared with the eager default's. Inductor compiles into a new cache folder
unless ``TORCHINDUCTOR_CACHE_DIR`` is set, so the compile cost is that of a fresh worker. Results
go to ``bench/results/compile.json``. Inductor on a CPU needs a C++ compiler (``g++``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    check_model,
    command_line,
    in_process_arguments,
    interleaved_predictions,
    machine,
    pin_threads,
    read_rows,
    timed_once,
    write_results,
)

DEFAULT_OUTPUT = RESULTS / "compile.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = in_process_arguments(__doc__.split("\n\n")[0], DEFAULT_OUTPUT, repeats=5)
    parser.add_argument(
        "--freezing", action="store_true", help="compile with Inductor's freezing (oneDNN-packed weights)"
    )
    return parser.parse_args(argv)


def compile_forward(model: Any, freezing: bool) -> None:
    """Compile ``model.forward`` in place with Inductor, so the engine keeps the module (its
    config, dtype and parameters). ``freezing`` is an Inductor setting read when a graph compiles,
    so it is patched around every call: later shapes compile again."""
    import torch
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model.forward, dynamic=True)

    def forward(*args: Any, **kwargs: Any) -> Any:
        with inductor_config.patch(freezing=freezing):
            return compiled(*args, **kwargs)

    model.forward = forward


def compare(reference: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]]) -> dict[str, float]:
    """How far answers moved: percent of records with the same word tags, and the largest change
    of a word's probability."""
    same = sum(1 for left, right in zip(reference, other, strict=True) if left["pred"] == right["pred"])
    moved = max(
        (
            abs(a - b)
            for left, right in zip(reference, other, strict=True)
            for a, b in zip(left["proba"], right["proba"], strict=True)
        ),
        default=0.0,
    )
    return {"tags_identical_pct": 100 * same / len(reference), "max_proba_change": moved}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads)
    # a fresh worker compiles from nothing: Inductor's on-disk cache of earlier runs would hide that
    cache = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="hfsm-inductor-"))
    from hfsm.inference import onednn_linear
    from hfsm.inference.predictor import PredictOptions, Predictor

    model = check_model(args.model)
    records = [{"text": row["text"]} for row in read_rows(args.data, args.limit)]
    load_at_start = os.getloadavg()
    default_kernel = "oneDNN Linear" if onednn_linear.decide(None, "cpu", "none", "none") else "addmm Linear"
    compiled_name = "compiled, freezing" if args.freezing else "compiled"
    settings: dict[str, dict[str, Any]] = {
        f"eager ({default_kernel}, the default)": {},
        "eager (addmm Linear)": {"onednn_linear": False},
        compiled_name: {"onednn_linear": False},
    }
    predictors: dict[str, Any] = {}
    warmup: dict[str, float] = {}
    first_pass: dict[str, float] = {}
    answers: dict[str, list[Any]] = {}
    for name, extra in settings.items():
        options = PredictOptions(runtime="torch", torch_threads=args.threads, **extra)
        predictor, load_seconds, _ = timed_once(partial(Predictor.load, model, options))
        if name == compiled_name:
            compile_forward(predictor.engine.model, args.freezing)
        _, warmup[name], _ = timed_once(predictor.warmup)
        answers[name], first_pass[name], _ = timed_once(partial(predictor.predict, records))
        predictors[name] = predictor
        print(
            f"{name:40s} load {load_seconds:5.1f} s, warm-up {warmup[name]:6.1f} s, "
            f"first pass {first_pass[name]:6.1f} s",
            flush=True,
        )
    timings = interleaved_predictions(predictors, records, args.repeats)
    rates = {name: len(records) / statistics.median(seconds) for name, seconds in timings.items()}
    reference = next(iter(settings))
    moved = {name: compare(answers[reference], answers[name]) for name in settings}
    # what a worker spends before it answers at full speed, over what the eager default spends
    compile_seconds = {
        name: warmup[name] + first_pass[name] - warmup[reference] - statistics.median(timings[name])
        for name in settings
    }
    for name, rate in rates.items():
        rounds = ", ".join(f"{len(records) / seconds:.1f}" for seconds in timings[name])
        print(
            f"{name:40s} {rate:7.1f} records/s ({rate / rates[reference]:.3f}x the default; "
            f"rounds: {rounds}); tags {moved[name]['tags_identical_pct']:.2f}% identical, "
            f"probabilities within {moved[name]['max_proba_change']:.1e}; "
            f"compile cost {compile_seconds[name]:.1f} s"
        )
    write_results(
        args.output,
        {
            "command": command_line(__file__, argv),
            "model": str(model),
            "data": str(args.data.resolve()),
            "records": len(records),
            "threads": args.threads,
            "machine": machine(args.threads, load_at_start),
            "records_per_s": rates,
            "vs_default": {name: rate / rates[reference] for name, rate in rates.items()},
            "seconds_per_round": timings,
            "first_pass_seconds": first_pass,
            "warmup_seconds": warmup,
            "compile_seconds": compile_seconds,
            "vs_default_answers": moved,
            "freezing": args.freezing,
            "inductor_cache_dir": cache,
        },
    )


if __name__ == "__main__":
    main()
