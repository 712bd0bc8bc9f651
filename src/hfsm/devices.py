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


def available_memory_bytes(
    meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """Memory this process can still take: the least of the machine's ``MemAvailable`` and what its
    cgroup (the container's memory limit, v2 or v1) leaves. None where neither can be read.

    A container sees the host's /proc/meminfo, so the cgroup limit is what counts on SageMaker. The
    cgroup's usage counts the page cache, of which the inactive part is reclaimed before the limit
    bites (the model files just read are most of it), so that part counts as available, the way
    container runtimes compute a working set.
    """
    candidates: list[int] = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for folder, limit_file, usage_file, inactive_key in (
        (cgroup, "memory.max", "memory.current", "inactive_file"),  # v2: one unified hierarchy
        (cgroup / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),  # v1
    ):
        try:
            limit = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # not "max", nor v1's "no limit" (about 2**63)
            candidates.append(max(0, int(limit) - usage + _cgroup_stat(folder / "memory.stat", inactive_key)))
        break
    return min(candidates) if candidates else None


def _cgroup_stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
