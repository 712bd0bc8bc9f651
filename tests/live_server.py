"""Run the real ``python -m hfsm serve`` as a subprocess and talk to it over HTTP.

Shared by the serving tests and the container tests: :func:`wait_for_ping` works for any URL, and
:class:`LiveServer` owns one local server process (its port, its log file, its shutdown).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

READY_TIMEOUT = 180.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ping(url: str, timeout: float = 2.0) -> int | None:
    """The status of GET /ping, or None while nothing answers."""
    try:
        return requests.get(f"{url}/ping", timeout=timeout).status_code
    except requests.RequestException:
        return None


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc): a gunicorn master's workers."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS in /proc/PID/status), 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def ok_json(response: requests.Response) -> Any:
    """The JSON body of a 200 answer (failing with the body otherwise)."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def error_of(response: requests.Response, status: int) -> str:
    """The message of a JSON error answer with the given status."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()["error"]


def wait_for_ping(
    url: str, timeout: float = READY_TIMEOUT, interval: float = 0.1, alive: Callable[[], bool] | None = None
) -> list[int | None]:
    """Poll /ping until it says 200; returns every status seen (None: no answer yet).

    ``alive`` (optional) is a callable returning False once the server is known to be dead, to
    fail at once instead of waiting for the timeout.
    """
    seen: list[int | None] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ping(url)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 200:
            return seen
        if alive is not None and not alive():
            raise RuntimeError(f"the server at {url} died before /ping said 200 (statuses seen: {seen})")
        time.sleep(interval)
    raise TimeoutError(f"/ping at {url} did not say 200 within {timeout:.0f}s (statuses seen: {seen})")


@dataclass
class LiveServer:
    """One ``python -m hfsm serve`` process bound to 127.0.0.1 on a free port."""

    process: subprocess.Popen
    port: int
    log_path: Path
    statuses: list[int | None] = field(default_factory=list)
    """/ping statuses observed while waiting for readiness, in order, without repeats."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls, model_dir: Path, log_dir: Path, env: Mapping[str, str] | None = None, name: str = "server"
    ) -> LiveServer:
        """Start without waiting (call :meth:`wait_ready`), so that several servers load at once."""
        port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}-{port}.log"
        # One torch thread: on a shared CI machine, OpenMP threads spin-waiting for a busy core make
        # each forward pass up to 100x slower; the servers of a test run share the cores anyway.
        full_env = {
            **os.environ,
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "HFSM_BIND_HOST": "127.0.0.1",
            "HFSM_MODEL_DIR": str(model_dir),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HFSM_TORCH_THREADS": "1",
            **(env or {}),
        }
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "hfsm", "serve"],
                env=full_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process, port, log_path)

    def alive(self) -> bool:
        return self.process.poll() is None

    def worker_pids(self) -> list[int]:
        """The gunicorn workers' process ids, read from /proc."""
        return child_pids(self.process.pid)

    def rss(self) -> int:
        """Resident memory of the master and its workers together, in bytes."""
        return rss_bytes(self.process.pid) + sum(rss_bytes(pid) for pid in self.worker_pids())

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> LiveServer:
        try:
            self.statuses = wait_for_ping(self.url, timeout, alive=self.alive)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- server log ---\n{self.logs()[-4000:]}") from None
        return self

    def post(
        self,
        body: bytes | str,
        content_type: str | None = "application/json",
        accept: str | None = None,
        path: str = "/invocations",
        timeout: float = 60,
    ) -> requests.Response:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        data = body.encode("utf-8") if isinstance(body, str) else body
        return requests.post(f"{self.url}{path}", data=data, headers=headers, timeout=timeout)

    def get(self, path: str, timeout: float = 10) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server (the gunicorn master) and wait; kills its process group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def stop_all(servers: Iterable[LiveServer], timeout: float = 30) -> dict[int, int]:
    """SIGTERM every server at once, then wait for each: port -> exit status."""
    servers = list(servers)
    for server in servers:
        if server.alive():
            server.process.send_signal(signal.SIGTERM)
    return {server.port: server.stop(timeout=timeout) for server in servers}


def wait_all_ready(servers: Iterable[LiveServer], timeout: float = READY_TIMEOUT) -> None:
    """Wait for servers started together, polling each in turn so every one's early 503s are seen."""
    pending = list(servers)
    deadline = time.monotonic() + timeout
    while pending:
        for server in list(pending):
            status = ping(server.url, timeout=1.0)
            if not server.statuses or server.statuses[-1] != status:
                server.statuses.append(status)
            if status == 200:
                pending.remove(server)
            elif not server.alive():
                raise RuntimeError(
                    f"server on port {server.port} died before /ping said 200:\n{server.logs()[-4000:]}"
                )
        if time.monotonic() > deadline:
            raise TimeoutError(f"servers on ports {[s.port for s in pending]} not ready in {timeout:.0f}s")
        time.sleep(0.1)


@contextlib.contextmanager
def running_server(
    model_dir: Path, log_dir: Path, env: Mapping[str, str] | None = None, name: str = "server"
) -> Iterator[LiveServer]:
    server = LiveServer.start(model_dir, log_dir, env, name)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
