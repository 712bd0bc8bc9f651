"""Cold start, container to first answer: our image against the Hugging Face inference toolkit's.

SageMaker starts an endpoint's (or an autoscaled instance's) container, pings it, and routes
requests to it once /ping says 200. So what counts is the time from ``docker run IMAGE serve`` to

1. the first ``/ping`` 200, and
2. the first ``/invocations`` answered with a prediction: a health check can say 200 before the
   model is loaded (a request sent then fails or waits), so this is the time a user's request
   could really have been served.

Both images serve the same model folder, mounted at ``/opt/ml/model`` as SageMaker mounts it, on
the same machine; ours on torch and, where the folder has an ONNX export (``python -m hfsm local
export-onnx``), on ONNX Runtime. Their starts alternate (ours, ours_onnx, toolkit, ours, ...) so
that the machine's drift lands on all. The reference is ``bench/toolkit/Dockerfile``:
sagemaker-huggingface-inference-toolkit behind multi-model-server, as the Hugging Face inference
DLCs run it. Also recorded: the
resident memory of all the container's processes once it answers, and the seconds the engine takes
to start and stop an empty container of each image (``true``), which both sides pay alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    TOOLKIT_IMAGE,
    check_model,
    command_line,
    cpu_model,
    git,
    http,
    podman,
    start_serving_container,
    write_results,
)

DEFAULT_OUTPUT = RESULTS / "cold_start.json"
OURS_IMAGE = "localhost/hfsm:bench"
PROBE_TEXT = "EU rejects German call to boycott British lamb ."
POLL_S = 0.05


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (the container's processes, seen from the host)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status", encoding="utf-8") as handle:
                total += (
                    next((int(line.split()[1]) for line in handle if line.startswith("VmRSS:")), 0) / 1024
                )
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue  # the process ended while being read
    return total


def empty_start_s(image: str) -> float:
    """Seconds to start and stop a container of ``image`` that does nothing: the engine's share."""
    begin = time.perf_counter()
    podman("run", "--rm", "--entrypoint", "true", image)
    return time.perf_counter() - begin


def one_start(image: str, model: Path, port: int, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Start ``image serve``, time /ping 200 and the first prediction, measure memory, remove it."""
    payload = json.dumps({"inputs": [PROBE_TEXT]}).encode()
    begin = time.perf_counter()
    container = start_serving_container(image, model, port, env)
    ping_s = answer_s = None
    statuses: dict[str, int] = {}
    answer = ""
    try:
        while time.perf_counter() - begin < timeout_s:
            if ping_s is None:
                status, _ = http(f"http://127.0.0.1:{port}/ping")
                statuses[f"ping {status}"] = statuses.get(f"ping {status}", 0) + 1
                if status == 200:
                    ping_s = time.perf_counter() - begin
            if ping_s is not None:
                status, body = http(f"http://127.0.0.1:{port}/invocations", payload, timeout=30.0)
                answer = body.decode("utf-8", "replace")
                statuses[f"invocations {status}"] = statuses.get(f"invocations {status}", 0) + 1
                if status == 200:
                    answer_s = time.perf_counter() - begin
                    break
            time.sleep(POLL_S)
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", container) or 0)
        rss = process_tree_rss_mb(pid) if pid else 0.0
        logs = podman("logs", container, check=False)
    finally:
        podman("rm", "-f", "-t", "5", container, check=False)
    if answer_s is None:
        raise SystemExit(
            f"{image} gave no prediction within {timeout_s:.0f}s; statuses {statuses}; log:\n{logs[-4000:]}"
        )
    return {
        "to_ping_200_s": ping_s,
        "to_first_prediction_s": answer_s,
        "predictions_refused_after_ping_200": sum(
            count
            for key, count in statuses.items()
            if key.startswith("invocations") and key != "invocations 200"
        ),
        "container_rss_mb": rss,
        "statuses_seen": statuses,
        "first_answer": answer[:300],
    }


def summary(runs: Sequence[dict[str, Any]], empty: Sequence[float]) -> dict[str, Any]:
    ping = [run["to_ping_200_s"] for run in runs]
    answer = [run["to_first_prediction_s"] for run in runs]
    return {
        "to_ping_200_s_median": statistics.median(ping),
        "to_first_prediction_s_median": statistics.median(answer),
        "to_first_prediction_s_max": max(answer),
        "container_rss_mb_max": max(run["container_rss_mb"] for run in runs),
        "empty_container_s_median": statistics.median(empty),
        "runs": list(runs),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder written by train")
    parser.add_argument("--image", default=OURS_IMAGE, help=f"our image (default {OURS_IMAGE})")
    parser.add_argument(
        "--toolkit-image", default=TOOLKIT_IMAGE, help=f"the reference (default {TOOLKIT_IMAGE})"
    )
    parser.add_argument(
        "--starts", type=int, default=5, help="cold starts per image, alternating (default 5)"
    )
    parser.add_argument(
        "--toolkit-workers",
        type=int,
        default=1,
        help="SAGEMAKER_MODEL_SERVER_WORKERS of the reference (default 1: its fastest start; unset, MMS "
        "starts one worker per core, each loading the model)",
    )
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a start may take")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def image_id(image: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", image)[:12]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    model = check_model(args.model)
    command = command_line(__file__, argv)
    sides = {"ours": (args.image, {"HFSM_RUNTIME": "torch"})}
    if (model / "onnx" / "model.onnx").is_file():
        sides["ours_onnx"] = (args.image, {"HFSM_RUNTIME": "onnxruntime"})
    else:
        print(f"{model} has no ONNX export (python -m hfsm local export-onnx): no ours_onnx side", flush=True)
    sides["toolkit"] = (args.toolkit_image, {"SAGEMAKER_MODEL_SERVER_WORKERS": str(args.toolkit_workers)})
    for image, _ in sides.values():
        image_id(image)  # fails early, naming the image, when it is not built
    print(f"{command}\nempty containers ...", flush=True)
    empty: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(3):
        for name, (image, _) in sides.items():
            empty[name].append(empty_start_s(image))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    load_at_start = os.getloadavg()
    for attempt in range(1, args.starts + 1):
        for name, (image, env) in sides.items():
            run = one_start(image, model, args.port, env, args.timeout)
            runs[name].append(run)
            print(
                f"  start {attempt}: {name:8s} /ping 200 after {run['to_ping_200_s']:6.2f}s, "
                f"first prediction after {run['to_first_prediction_s']:6.2f}s, "
                f"{run['container_rss_mb']:5.0f} MB",
                flush=True,
            )
    results = {
        "command": command,
        "model": str(model),
        "images": {
            name: {"tag": image, "id": image_id(image), "env": env} for name, (image, env) in sides.items()
        },
        "machine": {
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(load_at_start),
            "podman": podman("--version"),
            "hfsm_commit": git("rev-parse", "HEAD"),
        },
        **{name: summary(runs[name], empty[name]) for name in sides},
    }
    toolkit = results["toolkit"]
    results["ratios"] = {
        f"toolkit_over_{name}_{what}": toolkit[f"to_{what}_s_median"] / results[name][f"to_{what}_s_median"]
        for name in sides
        if name != "toolkit"
        for what in ("first_prediction", "ping_200")
    }
    print(f"\n{'median seconds':16s}{'/ping 200':>11s}{'first answer':>14s}{'empty':>8s}{'RSS MB':>8s}")
    for name in sides:
        side = results[name]
        print(
            f"{name:16s}{side['to_ping_200_s_median']:11.2f}{side['to_first_prediction_s_median']:14.2f}"
            f"{side['empty_container_s_median']:8.2f}{side['container_rss_mb_max']:8.0f}"
        )
    for name, value in results["ratios"].items():
        print(f"{name:38s} {value:6.2f}x")
    write_results(args.output, results)


if __name__ == "__main__":
    main()
