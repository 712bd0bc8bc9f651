"""``hfsm serve``: gunicorn in-process, configured from the environment, logging to stdout.

Why these choices:

* gthread workers: a few threads per worker let /ping answer while another thread predicts
  (the predictor serialises predictions with its own lock).
* The app is created in each worker after the fork (no ``preload_app``), so CUDA and torch's
  thread pools are only ever initialised in the process that uses them.
* On CPU one worker uses every core through torch's threads; with more workers the cores are
  divided between them, so workers x torch threads never oversubscribes the machine. On GPU
  there is one worker per GPU, each seeing only its own through ``CUDA_VISIBLE_DEVICES``
  (set after the fork, before the worker imports torch).
* SIGTERM is gunicorn's graceful stop: requests in flight finish (up to HFSM_GRACEFUL_TIMEOUT)
  and the process exits 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from ..bundle import describe_folder
from ..errors import UserError
from .model_source import resolve_model_source
from .settings import ServingSettings
from .user_code import find_user_code, install_requirements

log = logging.getLogger("hfsm.serve")


class StdoutLogger(glogging.Logger):
    """gunicorn's own messages go to stdout like the rest of the image's (its default is stderr)."""

    def _set_handler(
        self, log: logging.Logger, output: Any, fmt: logging.Formatter, stream: Any = None
    ) -> None:
        super()._set_handler(log, output, fmt, stream=sys.stdout if output == "-" else stream)


def assign_gpu(gpu_ids: tuple[str, ...]) -> Callable[[Any, Any], None]:
    """gunicorn ``pre_fork`` hook (runs in the master): give the new worker the least used GPU.

    A restarted worker takes over the GPU its predecessor left, so GPUs stay evenly shared.
    """

    def pre_fork(server: Any, worker: Any) -> None:
        if not gpu_ids:
            return
        in_use = Counter(getattr(other, "hfsm_gpu", None) for other in server.WORKERS.values())
        worker.hfsm_gpu = min(gpu_ids, key=lambda gpu: (in_use[gpu], gpu_ids.index(gpu)))

    return pre_fork


def configure_worker(torch_threads: int | None) -> Callable[[Any, Any], None]:
    """gunicorn ``post_fork`` hook (runs in the worker before torch is imported)."""

    def post_fork(server: Any, worker: Any) -> None:
        gpu = getattr(worker, "hfsm_gpu", None)
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            server.log.info("worker %s uses GPU %s", worker.pid, gpu)
        if torch_threads:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ.setdefault(name, str(torch_threads))

    return post_fork


class GunicornServer(BaseApplication):
    """gunicorn without its command line or config files: only :class:`ServingSettings` counts."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        super().__init__()

    def gunicorn_options(self) -> Mapping[str, Any]:
        s = self.settings
        options: dict[str, Any] = {
            "bind": [f"{s.host}:{s.port}"],
            "workers": s.workers,
            "worker_class": "gthread",
            "threads": s.threads,
            "timeout": s.timeout,
            "graceful_timeout": s.graceful_timeout,
            "logger_class": StdoutLogger,
            "errorlog": "-",
            "accesslog": "-" if s.access_log else None,
            "loglevel": s.log_level,
            "proc_name": "hfsm-serve",
            "pre_fork": assign_gpu(s.gpu_ids),
            "post_fork": configure_worker(s.predict.torch_threads),
            "control_socket_disable": True,  # gunicorn >= 25: no shared control socket in $HOME
        }
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            options["worker_tmp_dir"] = "/dev/shm"  # heartbeats on a disk-backed /tmp can stall workers
        return options

    def load_config(self) -> None:
        assert self.cfg is not None
        for name, value in self.gunicorn_options().items():
            if name in self.cfg.settings:  # settings unknown to an older gunicorn are skipped
                self.cfg.set(name, value)

    def load(self) -> Any:
        if self.settings.multi_model:
            from .multi_model import create_multi_model_app

            return create_multi_model_app(self.settings)
        from .app import create_app

        return create_app(self.settings)


def serve(environ: Mapping[str, str] | None = None) -> None:
    """Serve the model folder (or, with SAGEMAKER_MULTI_MODEL=true, the models SageMaker loads) until
    SIGTERM; a missing or foreign model folder, or a runtime it cannot have, fails before binding."""
    from ..inference.runtime import resolve_runtime

    settings = ServingSettings.from_environ(environ)
    if settings.multi_model and (environ or os.environ).get("SAGEMAKER_PROGRAM"):
        raise UserError(
            "SAGEMAKER_PROGRAM is set, but custom inference code is not supported on a multi-model "
            "endpoint (SAGEMAKER_MULTI_MODEL=true); serve that model on its own endpoint"
        )
    if settings.multi_model:
        state = Path(tempfile.mkdtemp(prefix="hfsm-models-")) / "loaded.json"
        settings = dataclasses.replace(settings, models_state_file=state)
        log.info(
            "serving a multi-model endpoint on %s:%d: models load on POST /models; 1 worker x %d threads, "
            "%d compute threads%s",
            settings.host,
            settings.port,
            settings.threads,
            settings.predict.torch_threads,
            f", GPU {settings.gpu_ids[0]}" if settings.gpu_ids else " (CPU)",
        )
        GunicornServer(settings).run()
        return
    settings = resolve_model_source(settings)
    code = find_user_code(settings.model_dir, os.environ if environ is None else environ)
    if code is not None:
        install_requirements(code)
        settings = dataclasses.replace(settings, user_code=code)
    try:
        description = describe_folder(settings.model_dir, settings.predict.folder_hints)
    except UserError as exc:
        if code is None:
            raise
        log.info("%s; the model is the custom code's model_fn's to load", exc)
        GunicornServer(settings).run()
        return
    bundle = description.bundle
    runtime = resolve_runtime(settings.model_dir, settings.predict)  # a bad combination fails here, at once
    log.info("model folder %s: %s", settings.model_dir, description.explanation)
    log.info(
        "serving a %s model from %s with %s on %s:%d: %d worker(s) x %d threads, %d compute threads each%s",
        bundle.task,
        settings.model_dir,
        runtime,
        settings.host,
        settings.port,
        settings.workers,
        settings.threads,
        settings.predict.torch_threads,
        f", GPUs {','.join(settings.gpu_ids)}" if settings.gpu_ids else " (CPU)",
    )
    GunicornServer(settings).run()
