"""Resident memory and time of our torch forward over many batch shapes: oneDNN's Linear with its
primitive caches bounded (what ``HFSM_ONEDNN_LINEAR`` does), with oneDNN's default caches, and
``aten::addmm``. Why: oneDNN keeps a primitive per input shape, and an endpoint sees a new shape with
almost every batch, so a benchmark that repeats the same records (``forward_profile.py``) cannot show
what that costs. One command::

    python bench/onednn_memory.py --model runs/conll/model

Each setting runs in its own process (the caches are sized when first used, once per process), on
tcmalloc where it is installed, as the server runs: ``--steps`` forward passes of random batches
(1-32 rows of 3-200 tokens, the same seeded sequence for every setting). Results go to
``bench/results/onednn_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, check_model, command_line, machine, pin_threads, write_results

DEFAULT_OUTPUT = RESULTS / "onednn_memory.json"
SETTINGS = {
    "oneDNN Linear, caches bounded (ours)": {"onednn_linear": True, "environ": {}},
    "oneDNN Linear, default caches": {
        "onednn_linear": True,
        "environ": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"},
    },
    "addmm Linear": {"onednn_linear": False, "environ": {}},
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder written by train")
    parser.add_argument("--steps", type=int, default=400, help="forward passes per setting (default 400)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON results file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one setting, in its own process
    return parser.parse_args(argv)


def run_child(args: argparse.Namespace) -> None:
    """Time ``--steps`` forward passes under one setting; print a JSON line of RSS samples."""
    import random

    import psutil
    import torch

    from hfsm.inference.predictor import PredictOptions, Predictor

    setting = SETTINGS[args.child]
    options = PredictOptions(
        runtime="torch",
        torch_threads=args.threads,
        onednn_linear=setting["onednn_linear"],
        pack_sequences=False,
    )
    model = Predictor.load(args.model, options).engine.model
    process = psutil.Process()
    generator = random.Random(0)
    samples = [(0, process.memory_info().rss)]
    started = time.perf_counter()
    with torch.inference_mode():
        for step in range(1, args.steps + 1):
            rows, tokens = generator.randint(1, 32), generator.randint(3, 200)
            ids = torch.randint(1000, 2000, (rows, tokens), generator=torch.Generator().manual_seed(step))
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
            if step % 50 == 0:
                samples.append((step, process.memory_info().rss))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss": samples, "malloc": os.environ.get("LD_PRELOAD", "glibc")}))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads)
    if args.child:
        run_child(args)
        return
    from hfsm.allocator import find_library

    model = check_model(args.model)
    load_at_start = os.getloadavg()
    tcmalloc = find_library("tcmalloc")
    measured = {}
    for name, setting in SETTINGS.items():
        env = {**os.environ, **setting["environ"]}
        if tcmalloc:
            env["LD_PRELOAD"] = str(tcmalloc)
        command = [sys.executable, __file__, "--model", str(model), "--steps", str(args.steps)]
        command += ["--threads", str(args.threads), "--child", name]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        first, last = result["rss"][1][1], result["rss"][-1][1]
        result["rss_mib_after_50_steps"], result["rss_mib_at_end"] = first / 2**20, last / 2**20
        measured[name] = result
        print(
            f"{name:38s} {result['seconds']:6.1f} s, RSS {first / 2**20:6.0f} MiB after 50 steps, "
            f"{last / 2**20:6.0f} MiB after {args.steps}",
            flush=True,
        )
    write_results(
        args.output,
        {
            "command": command_line(__file__, argv),
            "model": str(model),
            "steps": args.steps,
            "threads": args.threads,
            "machine": machine(args.threads, load_at_start),
            "settings": {name: setting["environ"] for name, setting in SETTINGS.items()},
            "sides": measured,
        },
    )


if __name__ == "__main__":
    main()
