"""How fast this CPU multiplies MiniLM's float32 matrices: torch's Linear against ONNX Runtime's MatMul.

One command::

    python bench/gemm.py

Why it exists: the float32 NER and classif ratios against the pipeline move from one machine to the
next while the code stays the same. When the products (most of a forward pass: ``aten::addmm`` is
80% of our torch forward in the profiler on CoNLL sentences) already run near the CPU's float32
limit, only less work or fewer bits can go faster, and this measures that limit.

It times the three products of a MiniLM-L6 layer (hidden 384, intermediate 1536) over ``M`` token
rows (our batches of CoNLL sentences hold a few hundred to about a thousand tokens) with torch at 1
and at ``--threads`` threads, and with ONNX Runtime (intra-op threads = ``--threads``, no spinning,
as our engine runs it). GFLOP/s = 2·M·K·N / seconds, the median of ``--repeats`` timings of
``--calls`` calls each. Results go to ``bench/results/gemm.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, command_line, machine, pin_threads, write_results

DEFAULT_OUTPUT = RESULTS / "gemm.json"
SHAPES = ((384, 384), (384, 1536), (1536, 384))
"""(in, out) features of MiniLM-L6's products: attention projections, FFN up, FFN down."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="256,800", help="token rows M to time (default 256,800)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads (default: cores)")
    parser.add_argument("--calls", type=int, default=50, help="calls per timing (default 50)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per case; the median counts")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON results file")
    return parser.parse_args(argv)


def seconds_per_call(call: Callable[[], Any], calls: int, repeats: int) -> float:
    for _ in range(5):
        call()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        timings.append((time.perf_counter() - started) / calls)
    return statistics.median(timings)


def onnx_matmul(weight: Any, rows: int, threads: int) -> Any:
    """An ONNX Runtime session computing ``x @ weight`` for ``rows`` x K inputs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    in_features, out_features = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, out_features])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads)
    import numpy as np
    import torch

    load_at_start = os.getloadavg()
    generator = np.random.default_rng(0)
    thread_counts = sorted({1, args.threads})
    cases: list[dict[str, Any]] = []
    print(f"float32 GFLOP/s, median of {args.repeats} x {args.calls} calls")
    for rows in (int(value) for value in args.rows.split(",")):
        for in_features, out_features in SHAPES:
            flops = 2 * rows * in_features * out_features
            x = generator.standard_normal((rows, in_features), dtype=np.float32)
            weight = generator.standard_normal((in_features, out_features), dtype=np.float32)
            case: dict[str, Any] = {"rows": rows, "in_features": in_features, "out_features": out_features}
            linear = torch.nn.Linear(in_features, out_features).eval()
            inputs = torch.from_numpy(x)
            for threads in thread_counts:
                torch.set_num_threads(threads)
                with torch.inference_mode():
                    took = seconds_per_call(partial(linear, inputs), args.calls, args.repeats)
                case[f"torch_linear_{threads}_threads_gflops"] = flops / took / 1e9
            session = onnx_matmul(weight, rows, args.threads)
            took = seconds_per_call(partial(session.run, None, {"x": x}), args.calls, args.repeats)
            case[f"onnxruntime_matmul_{args.threads}_threads_gflops"] = flops / took / 1e9
            cases.append(case)
            print(
                f"M={rows:4d} K={in_features:4d} N={out_features:4d}: "
                + ", ".join(
                    f"{key.removesuffix('_gflops')} {value:.0f}"
                    for key, value in case.items()
                    if key.endswith("_gflops")
                )
            )
    torch.set_num_threads(args.threads)
    summary = {
        key: statistics.median(case[key] for case in cases) for key in cases[0] if key.endswith("_gflops")
    }
    for key, value in summary.items():
        print(f"median {key.removesuffix('_gflops'):38s} {value:6.0f} GFLOP/s")
    write_results(
        args.output,
        {
            "command": command_line(__file__, argv),
            "threads": args.threads,
            "calls": args.calls,
            "repeats": args.repeats,
            "machine": machine(args.threads, load_at_start),
            "cases": cases,
            "medians_gflops": summary,
            "torch_mkl": torch.backends.mkl.is_available(),
        },
    )


if __name__ == "__main__":
    main()
