"""Command line: ``train``, ``serve`` and ``local``. The one place where errors become exit codes.

Exit codes: 0 success; 1 a user error (data, hyperparameters, configuration: fix the input);
2 a fault of the image (see the traceback in the logs), or outputs that could not be written;
143 training stopped by SIGTERM after saving a checkpoint. ``train`` writes the reason to
``output/failure`` in every failing case (where ``output/`` itself can be written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import OutputError, TrainingInterrupted, TrainingProcessesFailed, UserError
from .logs import configure_logging

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_INTERRUPTED = 143
FAILURE_SHOWN = 1024  # characters of output/failure that SageMaker shows in DescribeTrainingJob

log = logging.getLogger("hfsm")


def failure_text(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return f"UserError: {exc}"
    if isinstance(exc, TrainingInterrupted):
        return f"Interrupted: {exc}"
    if isinstance(exc, TrainingProcessesFailed):
        return f"InternalError: {exc}."
    if isinstance(exc, OutputError):
        return (
            f"OutputError: {exc}. The volume is full or read-only, or the path is taken; give the job more "
            "storage (VolumeSizeInGB) or a writable /opt/ml."
        )
    return (
        f"InternalError: {type(exc).__name__}: {exc}. This is a fault of the training image, not of your "
        "input; the full traceback is in the job's logs."
    )


def write_failure(path: Path, exc: BaseException) -> None:
    """Best effort: the reason SageMaker shows for a failed job (first 1024 characters)."""
    text = failure_text(exc)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text[:FAILURE_SHOWN] if len(text) > FAILURE_SHOWN else text, encoding="utf-8")
    except OSError as write_error:
        log.error("could not write %s: %s", path, write_error)


def run_guarded(action: Callable[[], object], failure_file: Path | None) -> int:
    """Run ``action``; map its failure to an exit code and, for jobs, to ``output/failure``.

    :class:`TrainingProcessesFailed` passes through: its exit code depends on what the failed
    processes reported (see ``_train``).
    """
    try:
        action()
        return 0
    except TrainingProcessesFailed:
        raise
    except TrainingInterrupted as exc:
        log.warning("%s", exc)
        return _failed(exc, failure_file, EXIT_INTERRUPTED)
    except UserError as exc:
        log.error("%s", failure_text(exc))
        return _failed(exc, failure_file, EXIT_USER_ERROR)
    except Exception as exc:
        log.error("%s\n%s", failure_text(exc), traceback.format_exc())
        return _failed(exc, failure_file, EXIT_INTERNAL_ERROR)


def _failed(exc: BaseException, failure_file: Path | None, code: int) -> int:
    if failure_file is not None:
        write_failure(failure_file, exc)
    return code


def _train(args: argparse.Namespace) -> int:
    """The job on this host: trained here, or launched through torchrun (see
    :mod:`hfsm.training.distributed`), whose processes come back here to train."""
    from .sagemaker import SageMakerEnv
    from .training.distributed import global_rank, is_training_process, launch_or_train

    failure_file = train_failure_file()
    if is_training_process(os.environ):

        def train_here() -> None:
            from .training.job import train

            train(SageMakerEnv.from_environ())

        # rank 0 reports the job's failure; the other processes' reasons are in their logs
        return run_guarded(train_here, failure_file if global_rank(os.environ) == 0 else None)
    remove_stale_failure(failure_file)
    try:
        return run_guarded(lambda: launch_or_train(SageMakerEnv.from_environ(), os.environ), failure_file)
    except TrainingProcessesFailed as exc:
        log.error("%s", exc)
        if not exc.first_host:
            return EXIT_INTERNAL_ERROR
        reported = read_failure(failure_file)
        if reported is None:  # rank 0 did not get to say why: say what is known
            return _failed(exc, failure_file, EXIT_INTERNAL_ERROR)
        return EXIT_CODES_BY_REASON.get(reported.split(":", 1)[0], EXIT_INTERNAL_ERROR)


def train_failure_file() -> Path:
    """``output/failure``: its place does not depend on parsing anything, so even a broken config reports."""
    from .sagemaker import SageMakerEnv

    return SageMakerEnv(base_dir=Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))).failure_file


EXIT_CODES_BY_REASON = {"UserError": EXIT_USER_ERROR, "Interrupted": EXIT_INTERRUPTED}
"""Exit code of a launcher from the reason its rank-0 process wrote (anything else: 2)."""


def read_failure(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def remove_stale_failure(path: Path) -> None:
    """Drop the reason a previous run left (an interrupted run, re-run on the same folder to resume).

    Otherwise a resumed job that succeeds would end with ``output/failure`` beside its model.
    """
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove the previous run's %s: %s", path, exc)


def _serve(args: argparse.Namespace) -> int:
    from .serving.server import serve

    return run_guarded(lambda: serve(), None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfsm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "train", help="run a SageMaker training job (reads $SAGEMAKER_BASE_DIR, default /opt/ml)"
    )
    commands.add_parser("serve", help="serve /opt/ml/model over SageMaker's HTTP contract (gunicorn)")
    local = commands.add_parser("local", help="run train/serve/transform locally the way SageMaker does")
    from .local.cli import add_local_commands

    add_local_commands(local)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("train", "serve") and argv is None:
        # this process's own command line: it can start over with a faster allocator (hfsm.allocator)
        from .allocator import reexec_with_allocator

        failure_file = train_failure_file() if args.command == "train" else None
        code = run_guarded(lambda: reexec_with_allocator(os.environ), failure_file)
        if code:
            return code
    if args.command == "train":
        return _train(args)
    if args.command == "serve":
        return _serve(args)
    return run_guarded(lambda: args.handler(args), None)


if __name__ == "__main__":
    sys.exit(main())
