"""What every benchmark here shares: data, the real server, timing, and the machine description.

Benchmarks are scripts with recorded results (``bench/results/*.json``), never timed assertions in
tests. Each result file holds the exact command, the machine and every measured number, so that a
figure in the README can be traced back and reproduced.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
WARMUP_RECORDS = 32
TOOLKIT_IMAGE = "localhost/hf-toolkit:bench"
"""The Hugging Face inference DLC's server, rebuilt from PyPI by bench/toolkit/Dockerfile."""
T = TypeVar("T")

sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers that run the real server

from live_server import LiveServer  # noqa: E402


def pin_threads(threads: int) -> None:
    """One thread count for every side: OpenMP/MKL, the tokenizers' pool, and servers started later.

    Must run before torch is imported; server subprocesses inherit the environment.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def read_rows(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    """Rows of a tab-separated training file, read the way ``train`` reads it (quoted fields)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = []
        for row in csv.DictReader(handle, delimiter="\t"):
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise SystemExit(f"{path} holds no row")
    return rows


def check_model(model: Path) -> Path:
    model = model.resolve()
    if not (model / "hfsm.json").is_file():
        raise SystemExit(f"--model {model}: no hfsm.json, not a folder written by train")
    return model


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests so far (all cores), from /proc/stat; 0 elsewhere.

    On a shared virtual machine, steal makes one run of the same code take twice as long as the
    next; recording it beside each timing tells a slow machine from slow code.
    """
    try:
        with open("/proc/stat", encoding="utf-8") as handle:
            fields = handle.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def timed_once(run: Callable[[], T]) -> tuple[T, float, float]:
    """``run()``'s result, its seconds and the CPU seconds stolen during it."""
    steal_before = steal_seconds()
    begin = time.perf_counter()
    result = run()
    return result, time.perf_counter() - begin, steal_seconds() - steal_before


def timing(seconds: Sequence[float], stolen: Sequence[float], records: int) -> dict[str, Any]:
    """records/s of the median run (plus every run)."""
    median = statistics.median(seconds)
    return {
        "seconds": median,
        "records_per_s": records / median,
        "records_per_s_best": records / min(seconds),
        "runs_seconds": list(seconds),
        "runs_cpu_steal_seconds": list(stolen),
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@contextlib.contextmanager
def live_server(
    model: Path, log_dir: Path, threads: int, env: Mapping[str, str] | None = None, name: str = "bench"
) -> Iterator[tuple[LiveServer, float]]:
    """The real ``python -m hfsm serve`` with production defaults but ``threads`` torch threads.

    Yields the server once /ping says 200, with the seconds from process start to that 200.
    """
    started = time.perf_counter()
    server = LiveServer.start(
        model, log_dir, env={"HFSM_TORCH_THREADS": str(threads), **(env or {})}, name=name
    )
    try:
        server.wait_ready()
        yield server, time.perf_counter() - started
    except BaseException:
        print(f"server log: {server.log_path}", file=sys.stderr)
        raise
    finally:
        server.stop()


def in_process_predictor(
    model: Path,
    threads: int,
    quantize: str = "none",
    device: str = "cpu",
    autocast: str = "none",
    runtime: str = "torch",
) -> Any:
    """The prediction core the server runs, loaded in this process and warmed up like the server's."""
    from hfsm.inference.predictor import PredictOptions, Predictor

    options = PredictOptions(
        torch_threads=threads, quantize=quantize, device=device, autocast=autocast, runtime=runtime
    )
    predictor = Predictor.load(model, options)
    predictor.warmup()
    return predictor


@dataclass
class Side:
    """One way of answering every text, loaded and warmed up, ready to be timed.

    ``run`` answers all the texts once; ``finish`` turns the last answers into the side's outputs
    (and checks them); ``info`` says how the side runs.
    """

    run: Callable[[], Any]
    info: dict[str, Any]
    finish: Callable[[Any], dict[str, Any]]


@contextlib.contextmanager
def server_side(
    model: Path,
    texts: Sequence[str],
    threads: int,
    log_dir: Path,
    settings: Mapping[str, str],
    prepare: Callable[[LiveServer], tuple[str, dict[str, Any]]] | None = None,
) -> Iterator[Side]:
    """Our real server with these ``HFSM_*`` settings, fed MULTI_RECORD JSON Lines payloads one at a
    time as Batch Transform does.

    ``prepare`` (a multi-model endpoint: load the model) runs once the server is up and gives the
    path to invoke and what to record of it; without it, the payloads go to ``/invocations``.
    """
    from hfsm.local.transform import MB, Invoker, fetch_execution_parameters, pack_records

    latencies: list[float] = []
    name = "throughput-" + "-".join(value.lower() for value in settings.values())
    with live_server(model, log_dir, threads, settings, name) as (server, ready_s):
        path, prepared = prepare(server) if prepare is not None else ("/invocations", {})
        params = fetch_execution_parameters(server.url)
        invoke = Invoker(server.url, "application/jsonlines", "application/jsonlines", path=path)
        lines = [json.dumps({"text": text}, ensure_ascii=False).encode("utf-8") for text in texts]
        payloads = list(pack_records(lines, "MULTI_RECORD", params.max_payload_mb * MB))

        def transform() -> list[bytes]:
            answers: list[bytes] = []
            for records in payloads:
                sent = time.perf_counter()
                answers.extend(invoke(records))
                latencies.append(time.perf_counter() - sent)
            return answers

        def finish(answers: list[bytes]) -> dict[str, Any]:
            outputs = [json.loads(answer) for answer in answers]
            errors = [output["error"] for output in outputs if "error" in output]
            if errors:
                raise SystemExit(f"the server answered {len(errors)} error line(s), the first: {errors[0]}")
            return {"request_seconds_max": max(latencies), "outputs": outputs}

        invoke(lines[:WARMUP_RECORDS])
        info = {
            "settings": dict(settings),
            "engine": next(
                (
                    line.split("model (", 1)[1].split(")")[0]
                    for line in server.logs().splitlines()
                    if " model (" in line
                ),
                "",
            ),
            "requests": len(payloads),
            "records_per_request_max": max(len(records) for records in payloads),
            "payload_bytes_max": max(sum(len(line) + 1 for line in records) for records in payloads),
            "max_payload_mb": params.max_payload_mb,
            "startup_to_ping_200_s": ready_s,
            **prepared,
        }
        yield Side(transform, info, finish)


def podman(*args: str, check: bool = True) -> str:
    """stdout of ``podman ARGS``; a failure ends the benchmark with podman's message."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def http(url: str, body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of one GET (or a JSON POST with ``body``); status 0 when nothing answered."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):  # refused, reset, timed out, or a port-forward not yet listening
        return 0, b""


def start_serving_container(image: str, model: Path, port: int, env: Mapping[str, str]) -> str:
    """``podman run -d IMAGE serve`` as SageMaker runs it (``model`` read-only at /opt/ml/model, port
    8080 published on 127.0.0.1:``port``); returns the container's id."""
    env_args = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    mounts = ["-p", f"127.0.0.1:{port}:8080", "-v", f"{model}:/opt/ml/model:ro"]
    return podman("run", "-d", *mounts, *env_args, image, "serve")


@contextlib.contextmanager
def toolkit_side(
    image: str,
    model: Path,
    texts: Sequence[str],
    threads: int,
    batch_size: int,
    port: int = 18090,
    **parameters: Any,
) -> Iterator[Side]:
    """The Hugging Face inference DLC's server (``bench/toolkit/Dockerfile``): the toolkit's handler
    behind multi-model-server, one worker with ``threads`` torch threads, sent every text in one JSON
    request (``{"inputs": [...], "parameters": {...}}``, its documented batch form) with the pipeline
    call's ``parameters`` and the pipeline side's best ``batch_size``.

    Its /ping says 200 before its worker has loaded the model, so readiness is a real prediction.
    """
    env = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600",  # one request holds the whole set
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    container = start_serving_container(image, model, port, env)
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        warmup = json.dumps({"inputs": list(texts[:WARMUP_RECORDS]), "parameters": parameters}).encode()
        deadline = time.monotonic() + 300
        while (status := http(url, warmup, timeout=120)[0]) != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"{image}: no prediction after 300 s (last status {status})")
            time.sleep(0.5)
        body = json.dumps({"inputs": list(texts), "parameters": {**parameters, "batch_size": batch_size}})

        def run() -> list[Any]:
            status, answer = http(url, body.encode(), timeout=3600)
            if status != 200:
                raise SystemExit(f"{image} answered {status}: {answer[:500]!r}")
            return json.loads(answer)

        info = {
            "image": image,
            "image_id": podman("image", "inspect", "--format", "{{.Id}}", image)[:12],
            "batch_size": batch_size,
            "parameters": parameters,
            "requests": 1,
            "env": env,
        }
        yield Side(run, info, lambda outputs: {"outputs": outputs})
    finally:
        podman("rm", "-f", "-t", "5", container, check=False)


def bare_side(model: Path, texts: Sequence[str], threads: int, device: str = "cpu") -> Side:
    """The prediction core in this process: no HTTP, no JSON, every record in one call."""
    from hfsm.inference.predictor import RecordError

    predictor = in_process_predictor(model, threads, device=device)
    records = [{"text": text} for text in texts]
    predictor.predict(records[:WARMUP_RECORDS])  # the same warm-up as the server's

    def finish(outputs: list[Any]) -> dict[str, Any]:
        failed = [output for output in outputs if isinstance(output, RecordError)]
        if failed:
            raise SystemExit(f"Predictor refused {len(failed)} record(s), the first: {failed[0].message}")
        return {"outputs": outputs}

    return Side(
        lambda: predictor.predict(records),
        {
            "batch_size": predictor.options.batch_size or "engine default",
            "engine": predictor.engine.description,
        },
        finish,
    )


def pipeline_side(
    task: str,
    model: Path,
    texts: Sequence[str],
    threads: int,
    batch_sizes: Sequence[int],
    sample: int,
    device: str = "cpu",
    dtype: str = "float32",
    **pipeline_options: Any,
) -> Side:
    """The Hugging Face reference, ``pipeline(task)``, at its fastest batch size: chosen on an evenly
    spaced sample of ``sample`` texts (the set's mix of lengths), then the whole set timed with it.
    On a GPU it is also run with half-precision weights (``dtype``), its own fast path there."""
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    pipe = pipeline(task, model=str(model), device=device, dtype=getattr(torch, dtype), **pipeline_options)
    pipe(list(texts[:WARMUP_RECORDS]), batch_size=8)  # warm-up
    step = max(1, len(texts) // sample)
    chosen = list(texts[::step][:sample])
    tried = {}
    for batch_size in batch_sizes:
        begin = time.perf_counter()
        pipe(chosen, batch_size=batch_size)
        tried[batch_size] = len(chosen) / (time.perf_counter() - begin)
        print(f"  pipeline batch_size={batch_size:<3d} {tried[batch_size]:8.1f} records/s on the sample")
    best = max(tried, key=lambda size: tried[size])
    info = {
        "batch_size": best,
        "device": device,
        "dtype": dtype,
        "sample_records": len(chosen),
        "sample_records_per_s_by_batch_size": {str(size): rate for size, rate in tried.items()},
    }
    return Side(lambda: pipe(list(texts), batch_size=best), info, lambda outputs: {"outputs": outputs})


def interleaved(sides: Mapping[str, Side], repeats: int, records: int) -> dict[str, dict[str, Any]]:
    """Time every side ``repeats`` times, one side after the other in each round (A B C, A B C, ...).

    A shared virtual machine drifts by 10% over minutes; side after side, each with all its runs,
    that drift lands on whichever side ran in the slow minutes. Interleaved, every side sees the
    same minutes, so their ratios hold still even when the absolute numbers do not. Sides never run
    at the same time: the servers not being timed sit idle.
    """
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    stolen: dict[str, list[float]] = {name: [] for name in sides}
    last: dict[str, Any] = {}
    for round_number in range(1, repeats + 1):
        for name, side in sides.items():
            last[name], took, steal = timed_once(side.run)
            seconds[name].append(took)
            stolen[name].append(steal)
            print(f"  round {round_number}: {name:20s} {records / took:8.1f} records/s", flush=True)
    return {
        name: {**timing(seconds[name], stolen[name], records), **side.info, **side.finish(last[name])}
        for name, side in sides.items()
    }


def variants(device: str, model: Path) -> list[tuple[str, dict[str, str]]]:
    """(side, server settings) of our server on ``device``: float32 and the opt-in fast paths there.

    CPU: torch int8; torch bf16 autocast where the CPU has native bfloat16 (elsewhere it is slower
    than float32, as the server warns); ONNX Runtime float32 and int8 where ``model`` has an export
    (``python -m hfsm local export-onnx``). GPU: bf16 and fp16 autocast.
    """
    torch_side = {"HFSM_RUNTIME": "torch", "HFSM_DEVICE": device}
    if device != "cpu":
        return [
            ("ours_server", torch_side),
            ("ours_server_bf16", {**torch_side, "HFSM_AUTOCAST": "bf16"}),
            ("ours_server_fp16", {**torch_side, "HFSM_AUTOCAST": "fp16"}),
        ]
    import torch

    sides = [("ours_server", torch_side), ("ours_server_int8", {**torch_side, "HFSM_QUANTIZE": "int8"})]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        sides.append(("ours_server_bf16", {**torch_side, "HFSM_AUTOCAST": "bf16"}))
    else:
        print("no native bfloat16 on this CPU: the bf16 autocast side is left out", flush=True)
    if (model / "onnx" / "model.onnx").is_file():
        onnx_side = {"HFSM_RUNTIME": "onnxruntime", "HFSM_DEVICE": "cpu"}
        sides.append(("ours_server_onnx", onnx_side))
        if (model / "onnx" / "model.int8.onnx").is_file():
            sides.append(("ours_server_onnx_int8", {**onnx_side, "HFSM_QUANTIZE": "int8"}))
    else:
        print(f"{model} has no ONNX export: the ONNX Runtime sides are left out", flush=True)
    return sides


def measure_sides(
    args: argparse.Namespace, model: Path, texts: Sequence[str], task: str, **pipeline_options: Any
) -> dict[str, dict[str, Any]]:
    """Our server (float32 and the fast paths of :func:`variants`), our bare predictor and
    ``pipeline(task)`` (on a GPU also with float16 weights), loaded side by side and timed in
    interleaved rounds (:func:`interleaved`). ``args`` come from :func:`throughput_arguments`."""
    threads, device = args.threads, args.device
    if args.toolkit_image and device != "cpu":
        raise SystemExit(
            "--toolkit-image: bench/toolkit/Dockerfile builds a CPU image; leave it out on a GPU"
        )
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="hfsm-bench-") as logs, contextlib.ExitStack() as stack:
        sides: dict[str, Side] = {}
        for name, settings in variants(device, model):
            print(f"starting {name} ...", flush=True)
            sides[name] = stack.enter_context(server_side(model, texts, threads, Path(logs), settings))
        print("loading ours_bare_forward ...", flush=True)
        sides["ours_bare_forward"] = bare_side(model, texts, threads, device)
        dtypes = {"pipeline": "float32"} | ({"pipeline_fp16": "float16"} if device != "cpu" else {})
        for name, dtype in dtypes.items():
            print(f"loading {name} and choosing its batch size ...", flush=True)
            sides[name] = pipeline_side(
                task, model, texts, threads, batch_sizes, args.sample, device, dtype, **pipeline_options
            )
        if args.toolkit_image:
            print(f"starting toolkit_server ({args.toolkit_image}) ...", flush=True)
            best = sides["pipeline"].info["batch_size"]
            sides["toolkit_server"] = stack.enter_context(
                toolkit_side(args.toolkit_image, model, texts, threads, best, **pipeline_options)
            )
        return interleaved(sides, args.repeats, len(texts))


def throughput_arguments(description: str, data: Path, output: Path) -> argparse.ArgumentParser:
    """The options every ours-against-the-pipeline throughput script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", type=Path, required=True, help="a model folder written by train")
    parser.add_argument("--data", type=Path, default=data, help="tab-separated text/labels file")
    parser.add_argument("--limit", type=int, default=None, help="first N rows only (default all)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: cores)"
    )
    parser.add_argument("--batch-sizes", default="1,8,32,64", help="pipeline batch sizes to try")
    parser.add_argument(
        "--sample", type=int, default=256, help="texts timed to choose the pipeline batch size"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds: timed runs per side, interleaved; the median counts"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where every side runs (default cpu)"
    )
    parser.add_argument(
        "--toolkit-image",
        nargs="?",
        const=TOOLKIT_IMAGE,
        default=None,
        help="also time the Hugging Face inference DLC's server, this image built from bench/toolkit/"
        f"Dockerfile (CPU only; the flag alone: {TOOLKIT_IMAGE})",
    )
    parser.add_argument("--output", type=Path, default=output, help="the JSON results file")
    return parser


def in_process_arguments(description: str, output: Path, repeats: int) -> argparse.ArgumentParser:
    """The options of the scripts that time our ``Predictor`` in their own process on CoNLL sentences."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", type=Path, required=True, help="a model folder written by train")
    conll_dev = SHARED_DATA / "conll2003" / "dev.csv"
    parser.add_argument("--data", type=Path, default=conll_dev, help="tab-separated text/labels file")
    parser.add_argument("--limit", type=int, default=1600, help="first N rows (default 1600)")
    parser.add_argument(
        "--repeats", type=int, default=repeats, help="timed runs per setting; the median counts"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--output", type=Path, default=output, help="the JSON results file")
    return parser


def interleaved_predictions(
    predictors: Mapping[str, Any], records: Sequence[Mapping[str, str]], repeats: int
) -> dict[str, list[float]]:
    """Seconds of ``predict`` over ``records`` per predictor, in rounds of one run each (see
    :func:`interleaved`: the VM's drift then lands on every setting alike)."""
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(repeats):
        for name, predictor in predictors.items():
            seconds[name].append(timed_once(partial(predictor.predict, records))[1])
    return seconds


def seqeval_scores(gold: Sequence[list[str]], pred: Sequence[list[str]]) -> dict[str, float]:
    """Entity-level micro scores in seqeval's default mode: the metric ``train`` reports, and the one
    run_ner's ``evaluate.load("seqeval")`` reports (``zero_division`` only matters when nothing is
    predicted)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold_l, pred_l = [list(g) for g in gold], [list(p) for p in pred]
    return {
        "precision": float(precision_score(gold_l, pred_l, zero_division=0)),
        "recall": float(recall_score(gold_l, pred_l, zero_division=0)),
        "f1": float(f1_score(gold_l, pred_l, zero_division=0)),
    }


def machine(threads: int, load_at_start: Sequence[float]) -> dict[str, Any]:
    import tokenizers
    import torch
    import transformers

    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average_at_start": list(load_at_start),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "threads": threads,
        "allocator": allocators(),
        "hfsm_commit": git("rev-parse", "HEAD"),
        "hfsm_worktree_dirty": bool(git("status", "--porcelain", "--", "src")),
    }


def cpu_model() -> str:
    """The CPU's model name (Linux), its family and model numbers, and whether it has the AVX-512,
    VNNI and bfloat16 instructions that int8 and bf16 speed depend on. VMs often name only the vendor
    ("AMD EPYC"); the numbers tell the generations apart (family 25 model 17 is Zen 4, whose
    AVX-512 runs on 256-bit units; family 26 is Zen 5), and fp32 speed follows them."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return ""
    fields: dict[str, str] = {}
    for line in text.splitlines():  # the first processor's block is enough: all cores are alike
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name, family, number = fields.get("model name", ""), fields.get("cpu family"), fields.get("model")
    flags = fields.get("flags", "").split()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")
    generation = f" family {family} model {number}" if family and number else ""
    return f"{name}{generation} ({' '.join(flag for flag in wanted if flag in flags) or 'no AVX2'})"


def allocators() -> dict[str, str]:
    """The malloc each side runs on: our train/serve processes preload tcmalloc where it is installed
    (hfsm.allocator); the reference sides run in this process, on whatever it was started with."""
    from hfsm.allocator import LIBRARIES, choose, is_mapped

    here = next((name for name, files in LIBRARIES.items() if is_mapped(files)), "glibc")
    chosen = choose(os.environ)
    return {"ours": chosen.name if chosen else here, "reference": here}


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def command_line(script: str, argv: Sequence[str] | None) -> str:
    return shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", script, *argv])


def write_results(path: Path, results: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
