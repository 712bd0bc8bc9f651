"""Endpoint behaviour: single-record latency at concurrency 1 and 8, and cold start.

One command (any model folder written by ``train``; the README's figures use the CoNLL-2003 NER
model and CoNLL dev sentences)::

    python bench/endpoint.py --model runs/conll/model

It measures, one thing at a time on the same machine:

1. **latency**: the real server (``python -m hfsm serve``, production settings, ``--threads``
   torch threads) answers ``{"text": ...}`` requests of one record each from ``C`` closed-loop
   clients (keep-alive connections, as SageMaker's front end keeps them) for ``--seconds``, for
   each ``C`` in ``--concurrency``: records/s, p50/p90/p99 latency. Under concurrency the
   server's dynamic batching merges the requests of one worker into shared forward passes.
   The clients share the server's cores (in production they are elsewhere), so they are plain
   ``http.client`` connections, the lightest load generator at hand: with ``requests`` they took
   enough CPU to cost the server about 8% of its records/s at concurrency 8.
2. **bare forward**: the same records one at a time through ``Predictor.predict`` in this
   process: the server's overhead per request is its p50 minus this p50. The concurrency levels and
   the bare forward are interleaved: ``--rounds`` slices of ``--seconds / --rounds`` each, in turn.
   Each level also records the CPU time spent per request by the server (master and workers)
   and by this process (the clients; for the bare forward, the predicting), and how busy that
   kept the machine's cores: where the cores are busy and the forward passes take most of the
   server's CPU, more requests at once cannot go faster.
3. **cold start**: ``--starts`` fresh servers: seconds from process start to the first
   ``/ping`` 200 (model loaded and a warm-up prediction done), and the resident memory of the
   master and of each worker once ready.

Results go to ``bench/results/endpoint.json`` with the machine and the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    SHARED_DATA,
    check_model,
    command_line,
    in_process_predictor,
    live_server,
    machine,
    percentile,
    pin_threads,
    read_rows,
    write_results,
)

DEFAULT_DATA = SHARED_DATA / "conll2003" / "dev.csv"
DEFAULT_OUTPUT = RESULTS / "endpoint.json"


def latency_stats(latencies: Sequence[float], records: int, seconds: float) -> dict[str, Any]:
    return {
        "requests": records,
        "seconds": seconds,
        "records_per_s": records / seconds,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p90_ms": 1000 * percentile(latencies, 90),
        "p99_ms": 1000 * percentile(latencies, 99),
        "max_ms": 1000 * max(latencies),
    }


def closed_loop(url: str, texts: Sequence[str], clients: int, seconds: float) -> tuple[list[float], float]:
    """``clients`` threads, each sending its next record as soon as its last answer came back: every
    request's latency and the seconds it all took."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    address = urlsplit(url)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        connection = HTTPConnection(address.hostname, address.port, timeout=60)
        position = index
        while time.perf_counter() < stop_at:
            body = json.dumps({"text": texts[position % len(texts)]})
            sent = time.perf_counter()
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            latencies[index].append(time.perf_counter() - sent)
            if response.status != 200:
                errors.append(f"{response.status} {answer[:200]!r}")
            position += clients
        connection.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begin
    if errors:
        raise SystemExit(f"{len(errors)} request(s) failed, the first: {errors[0]}")
    return [value for per_client in latencies for value in per_client], elapsed


def server_settings(args: argparse.Namespace) -> dict[str, str]:
    return {"HFSM_DEVICE": args.device, "HFSM_AUTOCAST": args.autocast, "HFSM_RUNTIME": args.runtime}


def bare_loop(predictor: Any, texts: Sequence[str], seconds: float) -> tuple[list[float], float]:
    """One record per ``Predictor.predict`` call, in this process: the floor under the server's latency."""
    latencies = []
    begin = time.perf_counter()
    position = 0
    while time.perf_counter() - begin < seconds:
        sent = time.perf_counter()
        predictor.predict([{"text": texts[position % len(texts)]}])
        latencies.append(time.perf_counter() - sent)
        position += 1
    return latencies, time.perf_counter() - begin


def bench_latency(
    model: Path,
    texts: Sequence[str],
    threads: int,
    concurrency: Sequence[int],
    seconds: float,
    rounds: int,
    logs: Path,
    settings: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each concurrency level, then the bare forward, for ``seconds / rounds`` each, ``rounds`` times
    over: a machine that drifts over minutes then weighs on every level alike (see
    ``common.interleaved``). Returns the server's statistics per level and the bare forward's."""
    device, autocast, runtime = settings["HFSM_DEVICE"], settings["HFSM_AUTOCAST"], settings["HFSM_RUNTIME"]
    slice_s = seconds / rounds
    collected: dict[str, tuple[list[float], list[float]]] = {}
    cpu: dict[str, list[float]] = {}  # per level: [the server's CPU seconds, this process's]
    with live_server(model, logs, threads, settings, name="latency") as (server, _):
        predictor = in_process_predictor(model, threads, device=device, autocast=autocast, runtime=runtime)
        closed_loop(server.url, texts, max(concurrency), min(3.0, seconds))  # warm-up, not recorded
        runs = [
            (str(clients), lambda c=clients: closed_loop(server.url, texts, c, slice_s))
            for clients in concurrency
        ]
        runs.append(("bare", lambda: bare_loop(predictor, texts, slice_s)))
        master = server.process.pid
        for round_number in range(1, rounds + 1):
            for name, run in runs:
                server_before, own_before = server_cpu_seconds(master), own_cpu_seconds()
                latencies, elapsed = run()
                spent = cpu.setdefault(name, [0.0, 0.0])
                spent[0] += server_cpu_seconds(master) - server_before
                spent[1] += own_cpu_seconds() - own_before
                collected.setdefault(name, ([], []))
                collected[name][0].extend(latencies)
                collected[name][1].append(elapsed)
                print(
                    f"  round {round_number}: {name:>4s} {len(latencies) / elapsed:8.1f} records/s, "
                    f"p50 {1000 * percentile(latencies, 50):.1f} ms",
                    flush=True,
                )
    stats = {name: latency_stats(lat, len(lat), sum(took)) for name, (lat, took) in collected.items()}
    for name, (server_s, own_s) in cpu.items():
        requests = stats[name]["requests"]
        busy = (server_s + own_s) / (sum(collected[name][1]) * (os.cpu_count() or 1))
        if name == "bare":  # the server idles meanwhile; this process does the predicting
            stats[name]["cpu_ms_per_request"] = 1000 * own_s / requests
        else:
            stats[name]["server_cpu_ms_per_request"] = 1000 * server_s / requests
            stats[name]["client_cpu_ms_per_request"] = 1000 * own_s / requests
        stats[name]["cpu_busy_pct"] = 100 * busy
    bare = stats.pop("bare")
    return {name: {"clients": int(name), **numbers} for name, numbers in stats.items()}, bare


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text(encoding="utf-8").split()
        found.extend(int(child) for child in text)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(master: int) -> float:
    """CPU seconds of the server: its master and its workers."""
    return sum(cpu_seconds(pid) for pid in [master, *children(master)])


def own_cpu_seconds() -> float:
    """CPU seconds of this process (every thread): the clients, or the bare forward."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_cold_start(
    model: Path, threads: int, starts: int, logs: Path, settings: dict[str, str]
) -> dict[str, Any]:
    runs = []
    for attempt in range(starts):
        with live_server(model, logs, threads, settings, name=f"cold-{attempt}") as (server, ready_s):
            master = server.process.pid
            workers = children(master)
            runs.append(
                {
                    "to_ping_200_s": ready_s,
                    "master_rss_mb": resident_mb(master),
                    "worker_rss_mb": [resident_mb(worker) for worker in workers],
                    "statuses_seen": server.statuses,
                }
            )
            print(f"  start {attempt + 1}: /ping 200 after {ready_s:.2f}s", flush=True)
    ready = sorted(run["to_ping_200_s"] for run in runs)
    return {
        "starts": starts,
        "to_ping_200_s_median": ready[len(ready) // 2],
        "to_ping_200_s_max": ready[-1],
        "worker_rss_mb_max": max(max(run["worker_rss_mb"], default=0.0) for run in runs),
        "runs": runs,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder written by train")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="tab-separated file with a text column"
    )
    parser.add_argument("--text-column", default="text")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: cores)"
    )
    parser.add_argument("--concurrency", default="1,8", help="client counts to measure (default 1,8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per concurrency level")
    parser.add_argument(
        "--rounds", type=int, default=4, help="slices the seconds are cut into, interleaved (default 4)"
    )
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="HFSM_DEVICE (default cpu)")
    parser.add_argument(
        "--autocast", choices=("none", "bf16", "fp16"), default="none", help="HFSM_AUTOCAST (default none)"
    )
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="HFSM_RUNTIME of the server and the bare forward (default torch; onnxruntime needs the "
        "model's export: python -m hfsm local export-onnx)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads)
    model = check_model(args.model)
    texts = [row[args.text_column] for row in read_rows(args.data)]
    concurrency = [int(part) for part in args.concurrency.split(",")]
    command = command_line(__file__, argv)
    print(f"{len(texts)} texts from {args.data}, {args.threads} thread(s); {command}")
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hfsm-bench-") as logs:
        print("latency and bare forward, interleaved ...", flush=True)
        settings = server_settings(args)
        latency, bare = bench_latency(
            model, texts, args.threads, concurrency, args.seconds, args.rounds, Path(logs), settings
        )
        print("cold start ...", flush=True)
        cold = bench_cold_start(model, args.threads, args.starts, Path(logs), settings)

    single = latency[str(min(concurrency))]
    busiest = latency[str(max(concurrency))]
    results = {
        "command": command,
        "model": str(model),
        "data": str(args.data.resolve()),
        "threads": args.threads,
        "settings": {**server_settings(args), "seconds": args.seconds, "rounds": args.rounds},
        "machine": machine(args.threads, load_at_start),
        "latency": latency,
        "bare_forward_single_record": bare,
        "cold_start": cold,
        "ratios": {
            "throughput_busiest_over_single": busiest["records_per_s"] / single["records_per_s"],
            "busiest_p99_over_p50": busiest["p99_ms"] / busiest["p50_ms"],
            "server_overhead_ms_p50": single["p50_ms"] - bare["p50_ms"],
            "server_overhead_pct_p50": 100 * (single["p50_ms"] / bare["p50_ms"] - 1),
        },
    }
    print()
    print(f"{'':22s}{'records/s':>10s}{'p50 ms':>9s}{'p90 ms':>9s}{'p99 ms':>9s}", end="")
    print(f"{'CPU ms/request (server + this process)':>42s}{'CPU busy':>10s}")
    rows = [(f"server, {clients} client(s)", stats) for clients, stats in latency.items()]
    for name, stats in [*rows, ("bare forward", bare)]:
        per_request = (
            f"{stats['cpu_ms_per_request']:.2f}"
            if "cpu_ms_per_request" in stats
            else f"{stats['server_cpu_ms_per_request']:.2f} + {stats['client_cpu_ms_per_request']:.2f}"
        )
        print(
            f"{name:22s}{stats['records_per_s']:10.1f}",
            *(f"{stats[k]:8.1f}" for k in ("p50_ms", "p90_ms", "p99_ms")),
            f"{per_request:>41s}{stats['cpu_busy_pct']:9.0f}%",
        )
    print()
    for name, value in results["ratios"].items():
        print(f"{name:34s} {value:8.2f}")
    median, worst = cold["to_ping_200_s_median"], cold["to_ping_200_s_max"]
    print(f"cold start to /ping 200: median {median:.2f}s, max {worst:.2f}s; ", end="")
    print(f"worker RSS up to {cold['worker_rss_mb_max']:.0f} MB")
    write_results(args.output, results)


if __name__ == "__main__":
    main()
