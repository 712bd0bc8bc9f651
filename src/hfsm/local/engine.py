"""Which container engine runs the image locally, and the command lines SageMaker would run.

SageMaker starts the image as ``docker run IMAGE train`` with the job's tree mounted at ``/opt/ml``,
and as ``docker run IMAGE serve`` with the model in ``/opt/ml/model``; these helpers build exactly
those command lines for podman or docker.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import UserError

ENGINE_VARIABLE = "HFSM_CONTAINER_ENGINE"
KNOWN_ENGINES = ("podman", "docker")
CONTAINER_PORT = 8080


def container_engine(environ: Mapping[str, str] | None = None) -> str:
    """``$HFSM_CONTAINER_ENGINE`` if set, else podman, else docker (podman first: its ``run --rm`` exit
    codes are right even where ``docker`` is podman's Docker-compatible socket)."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(ENGINE_VARIABLE, "").strip()
    if chosen:
        if shutil.which(chosen) is None:
            raise UserError(f"${ENGINE_VARIABLE}={chosen} is not an executable on PATH")
        return chosen
    for engine in KNOWN_ENGINES:
        if shutil.which(engine) is not None:
            return engine
    raise UserError(f"No container engine: install podman or docker, or set ${ENGINE_VARIABLE}")


def train_command(engine: str, image: str, base: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """``ENGINE run --rm -v BASE:/opt/ml IMAGE train``: the job's tree, read-write, as SageMaker mounts it."""
    return [engine, "run", "--rm", "-v", f"{base.resolve()}:/opt/ml", *_env_flags(env), image, "train"]


def serve_command(
    engine: str, image: str, model: Path, port: int, name: str, env: Mapping[str, str] | None = None
) -> list[str]:
    """A detached ``serve`` container, published on 127.0.0.1 only, with the model mounted read-only."""
    return [
        engine,
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:{CONTAINER_PORT}",
        "-v",
        f"{model.resolve()}:/opt/ml/model:ro",
        *_env_flags(env),
        image,
        "serve",
    ]


def stop_command(engine: str, name: str, timeout_s: int = 30) -> list[str]:
    """SIGTERM, then SIGKILL after ``timeout_s``: what SageMaker does when an endpoint goes away."""
    return [engine, "stop", "-t", str(timeout_s), name]


def _env_flags(env: Mapping[str, str] | None) -> Sequence[str]:
    flags: list[str] = []
    for key, value in (env or {}).items():
        flags += ["-e", f"{key}={value}"]
    return flags
