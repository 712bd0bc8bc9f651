"""CPU facts read from a cpuinfo file."""

from __future__ import annotations

from pathlib import Path

from hfsm.inference import cpu

XEON = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
    "flags\t\t: fpu avx2 avx512f avx512_vnni amx_int8 amx_tile\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n"
)
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"


def test_vendor_and_flags_come_from_the_first_cpu(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(XEON)
    assert cpu.cpu_vendor(cpuinfo) == "GenuineIntel"
    assert cpu.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_tile"}
    assert cpu.cpuinfo_field("cpu family", cpuinfo) == "6"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert cpu.cpu_vendor(cpuinfo) == "AuthenticAMD"
    assert cpu.cpu_flags(cpuinfo) == frozenset(), "no flags line: none known"


def test_non_x86_and_missing_files_know_nothing(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ARM)
    assert cpu.cpu_vendor(cpuinfo) is None and cpu.cpu_flags(cpuinfo) == frozenset()
    assert cpu.cpu_vendor(tmp_path / "missing") is None
    assert cpu.cpu_flags(tmp_path / "missing") == frozenset()
