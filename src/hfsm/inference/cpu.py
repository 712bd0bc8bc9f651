"""What the CPU is, read from ``/proc/cpuinfo``: the facts that kernel choices depend on.

Why a file and not ``torch.backends.cpu.get_cpu_capability()``: that says which vector width torch's
own kernels use (``AVX512``), not the vendor nor int8 instructions (VNNI, AMX), which decide whether
oneDNN or MKL/FBGEMM runs a product faster (:mod:`.onednn_linear`, :mod:`.int8`).
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
X86_64 = frozenset({"x86_64", "amd64"})


def cpuinfo_field(name: str, cpuinfo: Path = CPUINFO) -> str | None:
    """The value of ``name`` for the first CPU; None where the file or the field is missing."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_vendor(cpuinfo: Path = CPUINFO) -> str | None:
    """``GenuineIntel``, ``AuthenticAMD``; None off Linux/x86."""
    return cpuinfo_field("vendor_id", cpuinfo)


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The instruction-set flags of the first CPU (``avx512_vnni``, ``amx_int8``...); empty off x86."""
    return frozenset((cpuinfo_field("flags", cpuinfo) or "").split())


def is_x86_64() -> bool:
    """Whether this is an x86-64 machine (the only one whose cpuinfo flags the choices read)."""
    return platform.machine().lower() in X86_64
