"""The real image: built from the Dockerfile once per session, then run the way SageMaker runs it.

``docker run IMAGE train`` on a mounted ``/opt/ml`` tree, ``docker run IMAGE serve`` with the model
mounted read-only and port 8080 published on 127.0.0.1, and SIGTERM for both (StopTrainingJob,
endpoint updates). Exit codes come from ``podman run --rm`` / ``inspect``: with podman 4.3's Docker
socket, ``docker run --rm`` reports 0 for a failing container.

Environment:
  HFSM_TEST_IMAGE        use this image instead of building one (e.g. CI that built it already)
  HFSM_TEST_BASE_IMAGE   BASE_IMAGE build argument (default for podman: localhost/python-base:bookworm,
                         which ../shared/container/provision.sh makes; for docker: the Dockerfile's)
  HFSM_CONTAINER_ENGINE  podman or docker (default: podman if installed, else docker)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import quick_hyperparameters
from live_server import free_port, wait_for_ping
from sagemaker_tree import DATA_DIR, TrainResult, make_tree
from tiny_models import make_base_model

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[1]
TEST_TAG = "localhost/hfsm:test"
LOCAL_BASE = "localhost/python-base:bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
WHEELS = Path("/opt/wheels")
PROVISION_HINT = "run ../shared/container/provision.sh (podman + local base image) or install docker"
NER_TEXTS = ["Empire State Building is in New York", "hello world", "Obama met Merkel in Berlin"]


@dataclass(frozen=True)
class Image:
    engine: str
    tag: str

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.engine, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def state(self, name: str, field: str) -> str:
        return self.run("inspect", "-f", f"{{{{.State.{field}}}}}", name).stdout.strip()

    def logs(self, name: str) -> str:
        done = self.run("logs", name)
        return done.stdout + done.stderr


def _engine() -> str | None:
    chosen = os.environ.get("HFSM_CONTAINER_ENGINE")
    if chosen:
        return chosen if shutil.which(chosen) else None
    return next((name for name in ("podman", "docker") if shutil.which(name)), None)


def build_command(engine: str, tag: str, base: str | None) -> list[str]:
    """The build the shared README documents: podman needs the host's CA bundle and wheel folder mounted
    (this workplace intercepts TLS and keeps the CPU torch wheel locally); they are passed as ARGs."""
    command = [engine, "build", "-t", tag]
    if base:
        command += ["--build-arg", f"BASE_IMAGE={base}"]
    if engine == "podman":
        command.append("--pull=never")
        if CA_BUNDLE.is_file():
            command += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"]
        if WHEELS.is_dir():
            command += ["-v", f"{WHEELS}:{WHEELS}:ro", "--build-arg", f"PIP_FIND_LINKS={WHEELS}"]
    return [*command, str(ROOT)]


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    engine = _engine()
    if engine is None:
        pytest.skip(f"container tests skipped: no container engine (podman/docker) on PATH; {PROVISION_HINT}")
    prebuilt = os.environ.get("HFSM_TEST_IMAGE")
    if prebuilt:
        return Image(engine, prebuilt)
    base = os.environ.get("HFSM_TEST_BASE_IMAGE") or (LOCAL_BASE if engine == "podman" else None)
    if (
        engine == "podman"
        and subprocess.run([engine, "image", "exists", str(base)], check=False).returncode != 0
    ):
        pytest.skip(f"container tests skipped: base image {base} is missing; {PROVISION_HINT}")
    if (
        engine != "podman"
        and subprocess.run([engine, "info"], capture_output=True, check=False).returncode != 0
    ):
        pytest.skip(f"container tests skipped: `{engine} info` fails (no daemon?); {PROVISION_HINT}")
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    with log.open("w") as handle:
        built = subprocess.run(
            build_command(engine, TEST_TAG, base),
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=False,
        )
    text = log.read_text(errors="replace")
    assert built.returncode == 0, f"image build failed ({engine}):\n{text[-6000:]}"
    print(f"\nbuilt {TEST_TAG} with {engine} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return Image(engine, TEST_TAG)


def container_tree(base: Path, data: Path | dict[str, Path], **extra: object) -> Path:
    """A SageMaker tree whose ``model`` channel holds a tiny backbone (the image downloads nothing)."""
    hyperparameters = {k: v for k, v in quick_hyperparameters("ner", Path()).items() if k != "model_name"}
    make_tree(base, data, {**hyperparameters, **extra})
    make_base_model(base / "input" / "data" / "model", "bert")
    return base


@pytest.fixture(scope="session")
def trained_in_image(image: Image, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    base = container_tree(tmp_path_factory.mktemp("image-train") / "ml", DATA_DIR / "ner")
    done = image.run("run", "--rm", "-v", f"{base}:/opt/ml", image.tag, "train")
    return TrainResult(base, done.returncode, done.stdout + done.stderr)


def test_train_in_the_image_writes_model_and_metrics(trained_in_image: TrainResult) -> None:
    result = trained_in_image
    assert result.returncode == 0, result.output[-4000:]
    assert {"config.json", "model.safetensors", "tokenizer.json", "hfsm.json"} <= {
        p.name for p in result.model_dir.iterdir()
    }
    metrics = result.metrics()
    assert {"precision", "recall", "f1"} <= set(metrics["dev"]) and "f1" in metrics["test"]
    assert metrics["train"]["global_step"] == 12
    for line in ("dev_f1=", "test_f1=", "train_loss="):
        assert line in result.output, "metric lines for SageMaker's metric_definitions"
    assert result.failure is None
    assert "memory allocator: tcmalloc (LD_PRELOAD=/usr/lib/" in result.output, "the image installs it"


def test_a_bad_hyperparameter_fails_the_job_with_a_reason(image: Image, tmp_path: Path) -> None:
    base = tmp_path / "ml"
    make_tree(base, DATA_DIR / "ner", {"task_name": "ner", "learning_rat": 0.1})
    done = image.run("run", "--rm", "-v", f"{base}:/opt/ml", image.tag, "train")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("UserError: Unknown hyperparameter 'learning_rat'")
    assert "learning_rate" in failure


def test_sigterm_stops_training_with_a_checkpoint(image: Image, tmp_path: Path) -> None:
    """StopTrainingJob / spot interruption: SIGTERM reaches train through tini, which saves and exits 143."""
    base = container_tree(
        tmp_path / "ml", {"train": DATA_DIR / "ner" / "train.csv"}, max_steps=100_000, logging_steps=1
    )
    name = f"hfsm-test-train-{os.getpid()}"
    image.run("rm", "-f", name)
    started = image.run("run", "-d", "--name", name, "-v", f"{base}:/opt/ml", image.tag, "train")
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 180
        while "train_loss=" not in image.logs(name):
            assert time.monotonic() < deadline, f"training did not start:\n{image.logs(name)[-3000:]}"
            assert image.state(name, "Running") == "true", f"train exited early:\n{image.logs(name)[-3000:]}"
            time.sleep(1)
        stop_started = time.monotonic()
        image.run("stop", "-t", "60", name)
        stopped_in = time.monotonic() - stop_started
        code = image.state(name, "ExitCode")
        logs = image.logs(name)
    finally:
        image.run("rm", "-f", name)
    assert code == "143", logs[-3000:]
    assert stopped_in < 30, f"took {stopped_in:.0f}s: SIGTERM was not handled (SIGKILL after the timeout)"
    assert "SIGTERM received" in logs
    assert (base / "output" / "failure").read_text().startswith("Interrupted")
    assert list((base / "checkpoints").glob("checkpoint-*")), "a checkpoint to resume from"


def test_serve_in_the_image_answers_and_stops_on_sigterm(image: Image, trained_in_image: TrainResult) -> None:
    """``serve`` as an endpoint runs it: port 8080 published on 127.0.0.1, the model read-only; then
    SIGTERM, as when the endpoint is updated or deleted, must drain and exit 0 at once."""
    assert trained_in_image.returncode == 0, "needs the model trained in the image"
    code, stopped_in, logs = serve_and_stop(image, trained_in_image.model_dir)
    assert code == "0", logs[-3000:]
    assert "memory allocator: tcmalloc" in logs, logs[-3000:]
    assert re.search(r"loaded ner model \(bert; torch(, oneDNN Linear)?\)", logs), logs[-3000:]
    assert stopped_in < 15, f"stop took {stopped_in:.0f}s"


def test_serve_in_the_image_answers_from_an_onnx_export(
    image: Image, trained_in_image: TrainResult, tmp_path: Path
) -> None:
    """The image's exporter (what train's export_onnx=true runs) writes model/onnx, and its serve then
    answers from ONNX Runtime: onnx and onnxruntime are in the image, and the worker loads no torch."""
    assert trained_in_image.returncode == 0, "needs the model trained in the image"
    model = tmp_path / "model"
    shutil.copytree(trained_in_image.model_dir, model)
    export = ["python", "-m", "hfsm", "local", "export-onnx", "--model", "/opt/ml/model"]
    done = image.run("run", "--rm", "-v", f"{model}:/opt/ml/model", image.tag, *export)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (model / "onnx" / "model.onnx").is_file() and (model / "onnx" / "model.int8.onnx").is_file()
    code, _, logs = serve_and_stop(image, model)
    assert code == "0", logs[-3000:]
    assert "loaded ner model (onnxruntime, model.onnx, " in logs, logs[-3000:]


def test_a_multi_model_endpoint_in_the_image(image: Image, trained_in_image: TrainResult) -> None:
    """SageMaker's multi-model mode: the image declares it, starts without a model, and loads, answers
    and unloads the models the platform unpacked under /opt/ml/models."""
    assert trained_in_image.returncode == 0, "needs the model trained in the image"
    labels = json.loads(image.run("image", "inspect", "-f", "{{json .Config.Labels}}", image.tag).stdout)
    assert labels.get("com.amazonaws.sagemaker.capabilities.multi-models") == "true", labels
    name = f"hfsm-test-mme-{os.getpid()}"
    model = trained_in_image.model_dir
    try:
        url = start_serving(
            image, name, "-e", "SAGEMAKER_MULTI_MODEL=true",
            "-v", f"{model}:/opt/ml/models/first/model:ro", "-v", f"{model}:/opt/ml/models/second/model:ro",
        )  # fmt: skip
        for model_name in ("first", "second"):
            body = {"model_name": model_name, "url": f"/opt/ml/models/{model_name}/model"}
            loaded = requests.post(f"{url}/models", json=body, timeout=120)
            assert loaded.status_code == 200, loaded.text
        listed = requests.get(f"{url}/models", timeout=10).json()["models"]
        assert [m["modelName"] for m in listed] == ["first", "second"]
        answers = [
            requests.post(f"{url}/models/{model_name}/invoke", json={"inputs": NER_TEXTS}, timeout=60)
            for model_name in ("first", "second")
        ]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        assert answers[0].json() == answers[1].json()
        assert requests.delete(f"{url}/models/first", timeout=60).status_code == 200
        gone = requests.post(f"{url}/models/first/invoke", json={"inputs": "x"}, timeout=30)
        assert gone.status_code == 404, gone.text
    finally:
        logs = image.logs(name)
        image.run("rm", "-f", name)
    assert "serving a multi-model endpoint" in logs, logs[-3000:]


def serve_and_stop(image: Image, model_dir: Path) -> tuple[str, float, str]:
    """Serve ``model_dir`` read-only on a published port, check the answers, stop with SIGTERM (as
    SageMaker does) and give the exit code, the seconds the stop took and the logs."""
    name = f"hfsm-test-serve-{os.getpid()}"
    try:
        url = start_serving(image, name, "-v", f"{model_dir}:/opt/ml/model:ro")
        check_invocations(url)
        stop_started = time.monotonic()
        image.run("stop", "-t", "30", name)
        stopped_in = time.monotonic() - stop_started
        code = image.state(name, "ExitCode")
        logs = image.logs(name)
    finally:
        image.run("rm", "-f", name)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/ping", timeout=5)
    return code, stopped_in, logs


def start_serving(image: Image, name: str, *options: str) -> str:
    """``IMAGE serve`` detached as ``name`` (the caller removes it), port 8080 published on a free
    local port; its URL once /ping says 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    image.run("rm", "-f", name)
    started = image.run(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", *options, image.tag, "serve"
    )
    assert started.returncode == 0, started.stderr
    try:
        wait_for_ping(url, timeout=240, interval=0.5, alive=lambda: running(image, name))
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"{exc}\n{image.logs(name)[-4000:]}")
    return url


def running(image: Image, name: str) -> bool:
    return image.state(name, "Running") == "true"


def check_invocations(url: str) -> None:
    params = requests.get(f"{url}/execution-parameters", timeout=10).json()
    assert params["BatchStrategy"] == "MULTI_RECORD" and params["MaxPayloadInMB"] >= 1

    answer = requests.post(f"{url}/invocations", json={"data": [{"text": t} for t in NER_TEXTS]}, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [len(p["pred"]) for p in predictions] == [len(t.split()) for t in NER_TEXTS]

    body = "\n".join(json.dumps({"text": t}) for t in NER_TEXTS) + "\n"
    headers = {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"}
    lines = requests.post(f"{url}/invocations", data=body.encode(), headers=headers, timeout=60)
    assert lines.status_code == 200, lines.text
    assert [json.loads(line)["pred"] for line in lines.text.splitlines()] == [p["pred"] for p in predictions]

    bad = requests.post(
        f"{url}/invocations", data=b"{not json", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert bad.status_code == 400


def test_local_transform_with_the_image(image: Image, trained_in_image: TrainResult, tmp_path: Path) -> None:
    """``hfsm local transform --image``: the harness serves with the image and runs a Batch Transform."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in NER_TEXTS * 4), encoding="utf-8")
    env = {**os.environ, "HFSM_CONTAINER_ENGINE": image.engine}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hfsm",
            "local",
            "transform",
            "--model",
            str(trained_in_image.model_dir),
            "--image",
            image.tag,
            "--input",
            str(source),
            "--output",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = (tmp_path / "out" / "in.jsonl.out").read_text().splitlines()
    assert [len(json.loads(line)["pred"]) for line in lines] == [len(t.split()) for t in NER_TEXTS * 4]
    leftover = image.run("ps", "-a", "--format", "{{.Names}}").stdout
    assert "hfsm-local-serve-" not in leftover, "the harness removes its container"
