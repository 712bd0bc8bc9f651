"""Start and stop a model server on 127.0.0.1: ``python -m hfsm serve`` in a process, or the image.

Both serve a model folder the way an endpoint does (``/opt/ml/model``, read-only in the image) and are
stopped with SIGTERM, as SageMaker stops a container, so a local run exercises the real shutdown path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import UserError
from .engine import container_engine, serve_command, stop_command
from .http import is_up

STOP_TIMEOUT_S = 30


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalServer:
    """A running server: a child process, or a detached container named ``container``."""

    url: str
    process: subprocess.Popen[bytes] | None = None
    engine: str | None = None
    container: str | None = None
    scratch: Path | None = None
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def exited(self) -> bool:
        if self.process is not None:
            return self.process.poll() is not None
        state = subprocess.run(
            [str(self.engine), "inspect", "-f", "{{.State.Running}}", str(self.container)],
            capture_output=True,
            text=True,
            check=False,
        )
        return state.returncode != 0 or state.stdout.strip() != "true"

    def logs(self) -> str:
        """The server's output so far (for error messages)."""
        if self.container is not None:
            done = subprocess.run(
                [str(self.engine), "logs", str(self.container)], capture_output=True, text=True, check=False
            )
            return done.stdout + done.stderr
        if self.log_path is not None and self.log_path.is_file():
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        return ""

    def follow_logs(self) -> subprocess.Popen[bytes] | None:
        """Stream a container's output to this terminal (a child process already writes here itself)."""
        if self.container is None:
            return None
        return subprocess.Popen([str(self.engine), "logs", "-f", self.container])

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Poll ``/ping`` until it answers 200; fail early, with the server's log, if it died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if is_up(f"{self.url}/ping"):
                return
            if self.exited():
                raise UserError(f"the model server exited before answering /ping:\n{self.logs()[-4000:]}")
            time.sleep(0.5)
        raise UserError(
            f"the model server did not answer /ping within {timeout_s:.0f}s:\n{self.logs()[-4000:]}"
        )

    def stop(self, timeout_s: int = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code when known."""
        code: int | None = None
        try:
            if self.process is not None:
                if self.process.poll() is None:
                    self.process.terminate()
                    try:
                        self.process.wait(timeout_s)
                    except subprocess.TimeoutExpired:
                        self.process.kill()
                        self.process.wait()
                code = self.process.returncode
            elif self.container is not None:
                subprocess.run(
                    stop_command(str(self.engine), self.container, timeout_s),
                    capture_output=True,
                    check=False,
                )
                state = subprocess.run(
                    [str(self.engine), "inspect", "-f", "{{.State.ExitCode}}", self.container],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                code = int(state.stdout.strip()) if state.stdout.strip().lstrip("-").isdigit() else None
                subprocess.run(
                    [str(self.engine), "rm", "-f", self.container], capture_output=True, check=False
                )
        finally:
            if self._log is not None:
                self._log.close()
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
        return code


def _check_model(model: Path) -> Path:
    model = model.resolve()
    if not (model / "config.json").is_file():
        raise UserError(
            f"--model {model} is not a model folder (no config.json); give the 'model' folder "
            "that train wrote"
        )
    return model


def start_server(
    model: Path,
    port: int | None = None,
    image: str | None = None,
    quiet: bool = False,
    environ: Mapping[str, str] | None = None,
) -> LocalServer:
    """Start serving ``model`` on 127.0.0.1:``port`` (a free port when None). ``quiet`` sends the server's
    output to a log file (kept for error messages) instead of this terminal."""
    model = _check_model(model)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    environ = dict(os.environ if environ is None else environ)
    if image:
        engine = container_engine(environ)
        name = f"hfsm-local-serve-{os.getpid()}-{port}"
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False)
        started = subprocess.run(
            serve_command(engine, image, model, port, name), capture_output=True, text=True, check=False
        )
        if started.returncode != 0:
            raise UserError(
                f"{engine} could not start {image}: {started.stderr.strip() or started.stdout.strip()}"
            )
        return LocalServer(url=url, engine=engine, container=name)
    scratch = Path(tempfile.mkdtemp(prefix="hfsm-serve-"))
    env = {
        **environ,
        "HFSM_MODEL_DIR": str(model),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "HFSM_BIND_HOST": "127.0.0.1",
        "HF_HUB_OFFLINE": environ.get("HF_HUB_OFFLINE", "1"),
        "TOKENIZERS_PARALLELISM": environ.get("TOKENIZERS_PARALLELISM", "false"),
    }
    log_path = scratch / "server.log" if quiet else None
    log = log_path.open("wb") if log_path is not None else None
    process = subprocess.Popen(
        [sys.executable, "-m", "hfsm", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,
    )
    return LocalServer(url=url, process=process, scratch=scratch, log_path=log_path, _log=log)


@contextmanager
def running_server(
    model: Path,
    port: int | None = None,
    image: str | None = None,
    quiet: bool = True,
    ready_timeout_s: float = 300.0,
) -> Iterator[LocalServer]:
    """A ready server for the duration of the block, stopped with SIGTERM afterwards whatever happens."""
    server = start_server(model, port, image, quiet=quiet)
    try:
        server.wait_ready(ready_timeout_s)
        yield server
    finally:
        server.stop()
