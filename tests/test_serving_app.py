"""The Flask app in-process over a real socket (readiness, faults), and the server's settings.

The app is served by werkzeug in a thread with loaders the tests control (a gate, a failure), which
the real gunicorn server cannot be made to do on cue; everything else is tested in test_serving.py
against ``python -m hfsm serve`` itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from hfsm.devices import available_cores
from hfsm.errors import UserError
from hfsm.inference.predictor import PredictOptions, Predictor
from hfsm.serving.app import create_app
from hfsm.serving.server import assign_gpu
from hfsm.serving.settings import ServingSettings
from live_server import error_of, free_port, ok_json, wait_for_ping
from sagemaker_tree import TrainResult
from serving_models import diverged

# --- readiness and fault handling ----------------------------------------------------------------------


@pytest.fixture
def app_server() -> Iterator[Callable[..., str]]:
    """Serve create_app(...) on a real socket in a thread; yields a function that starts one."""
    running: list[Any] = []

    def start(loader: Any, **env: str) -> str:
        settings = ServingSettings.from_environ({"HFSM_MODEL_DIR": "/unused", **env})
        httpd = make_server("127.0.0.1", free_port(), create_app(settings, loader), threaded=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        running.append(httpd)
        return f"http://127.0.0.1:{httpd.server_port}"

    yield start
    for httpd in running:
        httpd.shutdown()


def test_ping_is_503_until_the_model_is_loaded_and_warmed_up(
    app_server: Callable[..., str], trained: dict[str, TrainResult]
) -> None:
    gate = threading.Event()

    def slow_loader() -> Predictor:
        gate.wait(60)
        return Predictor.load(trained["regression"].model_dir, PredictOptions())

    url = app_server(slow_loader)
    loading = requests.get(f"{url}/ping", timeout=5)
    assert (loading.status_code, loading.json()) == (503, {"status": "loading"})
    assert "still loading" in error_of(
        requests.post(f"{url}/invocations", json={"text": "a"}, timeout=5), 503
    )
    gate.set()
    assert wait_for_ping(url, timeout=60)[-1] == 200
    assert ok_json(requests.post(f"{url}/invocations", json={"text": "a"}, timeout=30))["predictions"][0][
        "pred"
    ]


def test_a_model_that_fails_to_load_is_reported_not_hidden(app_server: Callable[..., str]) -> None:
    def broken_loader() -> Predictor:
        raise UserError("Cannot load the model in /opt/ml/model: no weights")

    url = app_server(broken_loader)
    deadline = time.monotonic() + 10
    while requests.get(f"{url}/ping", timeout=5).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = requests.get(f"{url}/ping", timeout=5)
    assert failed.status_code == 500
    assert failed.json() == {
        "status": "failed",
        "error": "UserError: Cannot load the model in /opt/ml/model: no weights",
    }
    assert "failed to load" in error_of(
        requests.post(f"{url}/invocations", json={"text": "a"}, timeout=5), 500
    )


class FaultyPredictor:
    """A predictor whose prediction has a bug: what the server must report as 500, not 400."""

    def warmup(self) -> None:
        return None

    def predict(self, records: list[Any]) -> list[Any]:
        raise KeyError("bug in the image")

    def first_error(self, records: list[Any]) -> None:
        return None


def test_server_faults_are_500_and_logged_with_traceback(
    app_server: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    url = app_server(FaultyPredictor)
    wait_for_ping(url, timeout=10)
    with caplog.at_level(logging.ERROR, logger="hfsm.serve"):
        response = requests.post(f"{url}/invocations", json={"text": "a"}, timeout=5)
    assert error_of(response, 500).startswith("internal server error (KeyError)")
    assert any(record.exc_info and "bug in the image" in str(record.exc_info[1]) for record in caplog.records)
    assert "Content-Type" in error_of(
        requests.post(f"{url}/invocations", data="x", timeout=5, headers={"Content-Type": "text/plain"}), 415
    )


# --- settings and worker layout ------------------------------------------------------------------------


def test_settings_defaults_follow_the_sagemaker_contract() -> None:
    settings = ServingSettings.from_environ({"CUDA_VISIBLE_DEVICES": ""})
    assert settings.model_dir == Path("/opt/ml/model")
    assert (settings.host, settings.port, settings.workers, settings.timeout) == ("0.0.0.0", 8080, 1, 60)
    assert (settings.max_payload_mb, settings.max_records, settings.max_concurrent_transforms) == (6, None, 1)
    assert ServingSettings.from_environ({"HFSM_MAX_RECORDS": "0"}).max_records is None
    assert ServingSettings.from_environ({"HFSM_MAX_RECORDS": "20"}).max_records == 20
    assert settings.predict.batch_size is None and settings.predict.max_words == 100_000  # engine's default
    assert settings.predict.trust_remote_code is False
    assert settings.predict.torch_threads is not None and settings.predict.torch_threads >= 1
    assert (settings.threads, settings.batch_wait_ms, settings.predict.quantize) == (16, 5.0, "none")
    tuned = ServingSettings.from_environ(
        {"HFSM_BATCH_WAIT_MS": "0", "HFSM_QUANTIZE": "INT8", "HFSM_QUANTIZED_ENGINE": "OneDNN"}
    )
    assert (tuned.batch_wait_ms, tuned.predict.quantize) == (0.0, "int8")
    assert tuned.predict.quantized_engine == "onednn"
    assert settings.predict.quantized_engine == "auto"
    assert settings.predict.pack_sequences is None  # auto: decided at warm-up
    assert settings.predict.autocast == "none"
    assert ServingSettings.from_environ({"HFSM_AUTOCAST": "BF16"}).predict.autocast == "bf16"
    with pytest.raises(UserError, match=r"HFSM_AUTOCAST='half': expected none, bf16 or fp16"):
        ServingSettings.from_environ({"HFSM_AUTOCAST": "half"})
    for raw, expected in (("auto", None), ("false", False), ("TRUE", True), ("0", False)):
        assert ServingSettings.from_environ({"HFSM_PACK_SEQUENCES": raw}).predict.pack_sequences is expected
        assert ServingSettings.from_environ({"HFSM_ONEDNN_LINEAR": raw}).predict.onednn_linear is expected
    assert settings.predict.onednn_linear is None  # auto: where it applies and its self-check passes
    assert ServingSettings.from_environ({"SAGEMAKER_BASE_DIR": "/base"}).model_dir == Path("/base/model")
    overridden = ServingSettings.from_environ({"SAGEMAKER_BASE_DIR": "/base", "HFSM_MODEL_DIR": "/models/x"})
    assert overridden.model_dir == Path("/models/x")


def test_settings_divide_cores_between_cpu_workers_and_give_each_gpu_a_worker() -> None:
    cpu = ServingSettings.from_environ({"CUDA_VISIBLE_DEVICES": "", "SAGEMAKER_MODEL_SERVER_WORKERS": "64"})
    assert cpu.workers == 64 and cpu.predict.torch_threads == 1
    assert cpu.max_concurrent_transforms == 64
    gpus = ServingSettings.from_environ({"CUDA_VISIBLE_DEVICES": "2,3"})
    assert (gpus.workers, gpus.gpu_ids) == (2, ("2", "3"))
    assert gpus.predict.torch_threads == max(1, available_cores() // 2)
    on = ServingSettings.from_environ({"HFSM_TRUST_REMOTE_CODE": "TRUE", "HFSM_ACCESS_LOG": "1"})
    assert on.predict.trust_remote_code and on.access_log


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "http"),
        ("SAGEMAKER_BIND_TO_PORT", "70000"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
        ("HFSM_TRUST_REMOTE_CODE", "maybe"),
        ("HFSM_MAX_RECORDS", "-1"),
        ("HFSM_LOG_LEVEL", "loud"),
        ("HFSM_BATCH_WAIT_MS", "soon"),
        ("HFSM_BATCH_WAIT_MS", "5000"),
        ("HFSM_QUANTIZE", "int4"),
        ("HFSM_QUANTIZED_ENGINE", "mkl"),
        ("HFSM_PACK_SEQUENCES", "sometimes"),
        ("HFSM_ONEDNN_LINEAR", "sometimes"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(UserError, match=name):
        ServingSettings.from_environ({name: value})


def test_gpus_are_shared_evenly_between_workers_and_reused_after_a_restart() -> None:
    pre_fork = assign_gpu(("0", "1"))
    arbiter = SimpleNamespace(WORKERS={})
    for pid in range(1, 5):
        worker = SimpleNamespace()
        pre_fork(arbiter, worker)
        arbiter.WORKERS[pid] = worker
    assert [w.hfsm_gpu for w in arbiter.WORKERS.values()] == ["0", "1", "0", "1"]
    del arbiter.WORKERS[2]  # a worker on GPU 1 died: its replacement takes GPU 1
    replacement = SimpleNamespace()
    pre_fork(arbiter, replacement)
    assert replacement.hfsm_gpu == "1"


def test_a_model_that_answers_nan_is_not_ready(
    app_server: Callable[..., str], trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    """A diverged model (NaN weights) must fail /ping, not pass it and then answer 500 to everything."""
    folder = diverged(trained["regression"].model_dir, tmp_path / "nan")
    url = app_server(lambda: Predictor.load(folder, PredictOptions(torch_threads=1)))
    deadline = time.monotonic() + 30
    while requests.get(f"{url}/ping", timeout=5).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = requests.get(f"{url}/ping", timeout=5)
    assert failed.status_code == 500 and "NaN or infinite" in failed.json()["error"]


class RecordingPredictor:
    """A real predictor that records the sizes of the predict calls made after its warm-up."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def warmup(self) -> None:
        self.inner.warmup()

    def predict(self, records: list[Any]) -> list[Any]:
        self.calls.append(len(records))
        return self.inner.predict(records)

    def first_error(self, records: list[Any]) -> Any:
        return self.inner.first_error(records)


def test_a_json_request_with_one_bad_record_is_refused_before_any_forward_pass(
    app_server: Callable[..., str], trained: dict[str, TrainResult]
) -> None:
    options = PredictOptions(torch_threads=1, max_words=10)
    recording = RecordingPredictor(Predictor.load(trained["regression"].model_dir, options))
    url = app_server(lambda: recording)
    wait_for_ping(url, timeout=30)
    good = [{"text": f"record {i}"} for i in range(200)]
    for bad, status, message in (
        ({"text": 5}, 400, "data[200]: 'text' must be a string"),
        ({"text": " ".join(["w"] * 11)}, 413, "data[200]: the text has 11 words"),
    ):
        answer = requests.post(f"{url}/invocations", json={"data": [*good, bad]}, timeout=30)
        assert message in error_of(answer, status)
    assert recording.calls == []
    # JSON Lines answers the bad line in place and predicts the others
    lines = "\n".join(json.dumps(r) for r in [*good[:3], {"text": 5}])
    answered = requests.post(
        f"{url}/invocations", data=lines, headers={"Content-Type": "application/jsonlines"}, timeout=30
    )
    assert answered.status_code == 200 and recording.calls == [4]
    assert "'text' must be a string" in json.loads(answered.text.splitlines()[3])["error"]
