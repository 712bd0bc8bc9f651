"""Where a torch forward pass of our Predictor spends its time, and what batching choices change.

One command::

    python bench/forward_profile.py --model runs/conll/model

It loads the model as the server does (``Predictor``, torch, ``--threads`` threads, warmed up) and
times ``predict`` on the first ``--limit`` CoNLL-2003 dev sentences (median of ``--repeats`` rounds,
the settings interleaved in each) with the engine's default batch size, packing and Linear kernel
(oneDNN on AMD CPUs), with packing off, with the other Linear kernel (aten's ``addmm`` or oneDNN's),
with each ``--batch-sizes``, and with ``HFSM_QUANTIZE=int8`` packed for each of ``--int8-engines``
(the quantized engine, which picks the int8 kernels); then one ``torch.profiler`` pass over the
default setting gives each operator's share of the CPU time. Read it next to ``gemm.py``: when
``aten::addmm`` (the Linear layers) is most of the time and already runs at the CPU's float32
product rate, no batching choice makes the float32 forward much faster.
Results go to ``bench/results/forward_profile.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
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
    write_results,
)

DEFAULT_OUTPUT = RESULTS / "forward_profile.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = in_process_arguments(__doc__.split("\n\n")[0], DEFAULT_OUTPUT, repeats=3)
    parser.add_argument(
        "--batch-sizes", default="16,64", help="batch sizes besides the default ('' for none)"
    )
    parser.add_argument(
        "--int8-engines", default="onednn,x86", help="quantized engines to time int8 under ('' for none)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch

    from hfsm.inference import onednn_linear
    from hfsm.inference.predictor import PredictOptions, Predictor

    model = check_model(args.model)
    records = [{"text": row["text"]} for row in read_rows(args.data, args.limit)]
    load_at_start = os.getloadavg()
    default_kernel = onednn_linear.decide(None, "cpu", "none", "none")  # what HFSM_ONEDNN_LINEAR=auto picks
    settings: dict[str, dict[str, Any]] = {
        "default": {},
        "not packed": {"pack_sequences": False},
        "addmm Linear" if default_kernel else "oneDNN Linear": {"onednn_linear": not default_kernel},
    }
    settings.update(
        {f"batch {size}": {"batch_size": int(size)} for size in filter(None, args.batch_sizes.split(","))}
    )
    settings.update(
        {
            f"int8 {engine}": {"quantize": "int8", "quantized_engine": engine}
            for engine in filter(None, args.int8_engines.split(","))
        }
    )
    predictors = {}
    for name, extra in settings.items():
        options = PredictOptions(runtime="torch", torch_threads=args.threads, **extra)
        predictor = Predictor.load(model, options)
        predictor.warmup()
        predictor.predict(records[:64])
        predictors[name] = predictor
        packed = predictor.engine.position_offset is not None
        print(f"{name:12s} {predictor.engine.description} (packed: {packed})", flush=True)
    timings = interleaved_predictions(predictors, records, args.repeats)
    rates = {name: len(records) / statistics.median(seconds) for name, seconds in timings.items()}
    for name, rate in rates.items():
        rounds = ", ".join(f"{len(records) / seconds:.1f}" for seconds in timings[name])
        print(f"{name:12s} {rate:7.1f} records/s (rounds: {rounds})")
    default = predictors["default"]
    descriptions = {name: predictor.engine.description for name, predictor in predictors.items()}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        default.predict(records)
    averages = profile.key_averages()
    total = sum(event.self_cpu_time_total for event in averages)
    shares = sorted(
        ((event.key, 100 * event.self_cpu_time_total / total) for event in averages),
        key=lambda item: item[1],
        reverse=True,
    )[:10]
    print("\nself CPU time by operator, default setting:")
    for key, share in shares:
        print(f"  {share:5.1f}%  {key}")
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
            "seconds_per_round": timings,
            "engines": descriptions,
            "operator_self_cpu_pct": dict(shares),
        },
    )


if __name__ == "__main__":
    main()
