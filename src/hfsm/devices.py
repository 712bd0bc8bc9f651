"""The machine's GPUs and cores, found without importing torch.

Both the serving master and the training launcher size their processes before any process may touch
CUDA (a CUDA context does not survive a fork, and the launcher's children must see every GPU).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def visible_gpus(environ: Mapping[str, str]) -> tuple[str, ...]:
    """GPU ids without importing torch: the master must not touch CUDA before forking workers.

    ``CUDA_VISIBLE_DEVICES`` wins when set; otherwise the NVIDIA driver lists the GPUs the
    container runtime exposed under ``/proc/driver/nvidia/gpus``.
    """
    declared = environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        ids = [part.strip() for part in declared.split(",") if part.strip()]
        return tuple(ids) if ids and ids[0] != "-1" else ()
    gpus = Path("/proc/driver/nvidia/gpus")
    count = sum(1 for _ in gpus.iterdir()) if gpus.is_dir() else 0
    return tuple(str(index) for index in range(count))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
