"""tcmalloc (or jemalloc) under ``train`` and ``serve``, chosen before the process does any work.

Why: fine-tuning frees and allocates the same large buffers every step. The word-embedding
gradient alone is vocabulary x hidden floats (30,522 x 384 = 47 MB for MiniLM-L6), materialised
afresh by every backward pass. glibc's malloc serves blocks above 32 MB with new ``mmap`` pages
and unmaps them on free, so every step page-faults and zero-fills them again: on CoNLL-2003 its
zero-fill took 24-44 ms of a 220-250 ms step here, against 10 ms under tcmalloc, which keeps
freed memory for the next request. In alternating pairs of the same MiniLM job the median gain was
1.14x, with the same loss and F1 (bench/allocator.py).

An allocator can only be swapped before the process starts (``LD_PRELOAD``), so ``train`` and
``serve`` re-execute themselves once with it preloaded; the processes they start (torchrun's,
gunicorn's workers) inherit it. ``HFSM_MALLOC`` chooses: ``auto`` (tcmalloc, else jemalloc, else
glibc's), ``tcmalloc``, ``jemalloc`` (fail if missing) or ``system`` (never re-execute).
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import parse_choice
from .errors import UserError

log = logging.getLogger("hfsm")

ENV = "HFSM_MALLOC"
ACTIVE_ENV = "HFSM_MALLOC_ACTIVE"
"""Set in the re-executed process (to the allocator's name): it and its children never re-execute."""
CHOICES = ("auto", "tcmalloc", "jemalloc", "system")
LIBRARIES: dict[str, tuple[str, ...]] = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
}
"""Shared objects per allocator, in order of preference (the image installs tcmalloc's)."""
PACKAGES = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2"}
"""The Debian/Ubuntu package of each, for the message when one is asked for and missing."""
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 50)}
"""tcmalloc writes a line to stderr for every allocation over 1 GB (a large model's weights) by default."""


@dataclass(frozen=True)
class Preload:
    """The allocator to preload and where its library is."""

    name: str
    library: Path


def library_dirs() -> list[Path]:
    """Where the dynamic loader finds system libraries, multiarch folders first."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    roots = [Path("/usr/lib"), Path("/lib"), Path("/usr/local/lib")]
    dirs = [root / arch for root in roots if arch] + [Path("/usr/lib64"), Path("/lib64"), *roots]
    return list(dict.fromkeys(dirs))


def find_library(name: str, dirs: Sequence[Path] | None = None) -> Path | None:
    for folder in library_dirs() if dirs is None else dirs:
        for filename in LIBRARIES[name]:
            candidate = folder / filename
            if candidate.is_file():
                return candidate
    return None


def choose(environ: Mapping[str, str], dirs: Sequence[Path] | None = None) -> Preload | None:
    """What to preload, or None: already done, asked not to, or (``auto``) nothing installed."""
    try:
        choice = parse_choice(*CHOICES)(environ.get(ENV, "auto"))
    except ValueError as exc:
        raise UserError(f"{ENV}={environ.get(ENV)!r}: {exc}") from exc
    if choice == "system" or environ.get(ACTIVE_ENV):
        return None
    preloaded = environ.get("LD_PRELOAD", "")
    if any(filename in preloaded for names in LIBRARIES.values() for filename in names):
        return None  # the user preloaded one already
    folders = library_dirs() if dirs is None else dirs
    for name in LIBRARIES if choice == "auto" else (choice,):
        library = find_library(name, folders)
        if library is not None:
            return Preload(name, library)
    if choice != "auto":
        raise UserError(
            f"{ENV}={choice}, but none of {', '.join(LIBRARIES[choice])} is in "
            f"{', '.join(map(str, folders))}; install it (Debian/Ubuntu: {PACKAGES[choice]}) "
            f"or set {ENV}=auto or system"
        )
    return None


def preload_environ(environ: Mapping[str, str], preload: Preload) -> dict[str, str]:
    """``environ`` with ``preload``'s library first in ``LD_PRELOAD`` and the marker set."""
    env = {**QUIET, **environ}
    env["LD_PRELOAD"] = " ".join(filter(None, [str(preload.library), environ.get("LD_PRELOAD", "")]))
    env[ACTIVE_ENV] = preload.name
    return env


def is_mapped(filenames: Sequence[str], maps: Path = Path("/proc/self/maps")) -> bool | None:
    """Whether one of these libraries is mapped into this process (None: cannot tell, not Linux)."""
    try:
        text = maps.read_text()
    except OSError:
        return None
    return any(filename in text for filename in filenames)


def reexec_with_allocator(environ: Mapping[str, str]) -> None:
    """Re-execute this process (same interpreter, same command line) with the chosen allocator.

    Returns only when there is nothing to do, or when ``exec`` fails (then glibc's malloc stays, with
    a warning). Must run before threads start or files are opened for writing: the new process
    starts over from the command line.
    """
    preload = choose(environ)
    if preload is None:
        active = environ.get(ACTIVE_ENV)
        if active:
            if is_mapped(LIBRARIES.get(active, (active,))) is False:
                log.warning(
                    "%s was preloaded but is not in this process (LD_PRELOAD=%s)",
                    active,
                    environ.get("LD_PRELOAD"),
                )
            else:
                log.info("memory allocator: %s (LD_PRELOAD=%s)", active, environ.get("LD_PRELOAD"))
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, preload_environ(environ, preload))
    except OSError as exc:
        log.warning(
            "could not restart with %s (%s): %s; keeping glibc's malloc", preload.name, preload.library, exc
        )


def release_free_memory() -> None:
    """Hand the memory the allocator holds free back to the kernel (a multi-model unload).

    tcmalloc and glibc keep freed memory for reuse: after an unload the process's resident memory
    stays, the container's usage with it, and the next load would be refused (507) however many
    models SageMaker unloads. tcmalloc: ``MallocExtension_ReleaseFreeMemory``; glibc: ``malloc_trim``;
    jemalloc returns memory on its own schedule (decay) and is left alone.
    """
    import ctypes

    process = ctypes.CDLL(None)
    for symbol in ("MallocExtension_ReleaseFreeMemory", "malloc_trim"):
        function = getattr(process, symbol, None)
        if function is None:
            continue
        if symbol == "malloc_trim":
            function(ctypes.c_size_t(0))
        else:
            function()
        log.debug("freed memory released to the kernel (%s)", symbol)
        return
