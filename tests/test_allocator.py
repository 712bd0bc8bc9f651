"""tcmalloc under train and serve: what is chosen, and that the real process runs with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfsm.allocator import (
    ACTIVE_ENV,
    ENV,
    QUIET,
    Preload,
    choose,
    find_library,
    is_mapped,
    preload_environ,
)
from hfsm.errors import UserError
from sagemaker_tree import TrainResult

INSTALLED = find_library("tcmalloc") or find_library("jemalloc")
needs_allocator = pytest.mark.skipif(
    INSTALLED is None, reason="neither tcmalloc nor jemalloc is installed (apt: libtcmalloc-minimal4)"
)


def libraries(tmp_path: Path, *names: str) -> list[Path]:
    """Search folders with (empty stand-ins for) these library files: only their names are looked at."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in names:
        (tmp_path / name).write_bytes(b"\x7fELF")
    return [tmp_path / "missing", tmp_path]


def test_auto_prefers_tcmalloc_then_jemalloc_then_nothing(tmp_path: Path) -> None:
    both = libraries(tmp_path / "both", "libjemalloc.so.2", "libtcmalloc_minimal.so.4")
    assert choose({}, both) == Preload("tcmalloc", tmp_path / "both" / "libtcmalloc_minimal.so.4")
    assert choose({ENV: "auto"}, libraries(tmp_path / "je", "libjemalloc.so.2")) == Preload(
        "jemalloc", tmp_path / "je" / "libjemalloc.so.2"
    )
    assert choose({}, [tmp_path / "nothing"]) is None


def test_an_explicit_choice_takes_that_one_or_fails_clearly(tmp_path: Path) -> None:
    dirs = libraries(tmp_path, "libjemalloc.so.2", "libtcmalloc_minimal.so.4")
    assert choose({ENV: "JeMalloc"}, dirs) == Preload("jemalloc", tmp_path / "libjemalloc.so.2")
    with pytest.raises(UserError, match=r"HFSM_MALLOC=tcmalloc, but none of libtcmalloc_minimal\.so\.4"):
        choose({ENV: "tcmalloc"}, [tmp_path / "nothing"])
    with pytest.raises(UserError, match=r"HFSM_MALLOC='fast': expected auto, tcmalloc, jemalloc or system"):
        choose({ENV: "fast"}, dirs)


def test_nothing_is_done_twice_or_against_the_users_wish(tmp_path: Path) -> None:
    dirs = libraries(tmp_path, "libtcmalloc_minimal.so.4")
    assert choose({ENV: "system"}, dirs) is None
    assert choose({ACTIVE_ENV: "tcmalloc"}, dirs) is None, "the re-executed process and its children"
    assert choose({"LD_PRELOAD": "/opt/lib/libjemalloc.so.2"}, dirs) is None, "the user preloaded one"


def test_the_new_environment_puts_the_library_first_and_keeps_the_rest() -> None:
    preload = Preload("tcmalloc", Path("/usr/lib/libtcmalloc_minimal.so.4"))
    env = preload_environ({"LD_PRELOAD": "/opt/libfoo.so", "PATH": "/bin"}, preload)
    assert env["LD_PRELOAD"] == "/usr/lib/libtcmalloc_minimal.so.4 /opt/libfoo.so"
    assert env[ACTIVE_ENV] == "tcmalloc" and env["PATH"] == "/bin"
    assert all(env[key] == value for key, value in QUIET.items())
    mine = preload_environ({"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "1024"}, preload)
    assert mine["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == "1024" and mine["LD_PRELOAD"] == str(
        preload.library
    )


def test_is_mapped_reads_the_process_maps(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f10 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4\n")
    assert is_mapped(["libtcmalloc_minimal.so.4"], maps) is True
    assert is_mapped(["libjemalloc.so.2"], maps) is False
    assert is_mapped(["libjemalloc.so.2"], tmp_path / "absent") is None
    assert is_mapped(["libc.so.6", "libc-"]) is True  # this very process


def run_hfsm(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in (ENV, ACTIVE_ENV, "LD_PRELOAD")}
    return subprocess.run(
        [sys.executable, "-m", "hfsm", *args],
        env={**clean, "SAGEMAKER_BASE_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_allocator
def test_train_restarts_itself_with_the_allocator_loaded(tmp_path: Path) -> None:
    # no hyperparameters: the job fails at once, after the restart
    done = run_hfsm(tmp_path, "train")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "memory allocator: " in done.stdout, "logged only once the library is mapped into the process"
    assert "is not in this process" not in done.stdout
    assert "Hyperparameter 'task_name' is required" in (tmp_path / "output" / "failure").read_text()


@needs_allocator
def test_the_trained_models_were_trained_under_it(trained: dict[str, TrainResult]) -> None:
    assert "memory allocator: " in trained["ner"].output


def test_system_keeps_glibc_and_a_bad_value_fails_the_job_with_a_reason(tmp_path: Path) -> None:
    done = run_hfsm(tmp_path, "train", HFSM_MALLOC="system")
    assert done.returncode == 1 and "memory allocator" not in done.stdout
    bad = run_hfsm(tmp_path, "train", HFSM_MALLOC="fast")
    assert bad.returncode == 1
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure == "UserError: HFSM_MALLOC='fast': expected auto, tcmalloc, jemalloc or system"
