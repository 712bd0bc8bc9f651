#!/usr/bin/env bash
# The whole check from a fresh clone: venv + pinned dependencies, a container engine (podman, via
# ../shared/container/provision.sh where this workplace provides it), lint, then the default pytest
# suite (everything but `slow`, container tests included). Exits with pytest's exit code; when the
# tests pass but ruff found problems, exits 1 (lint does not stop the tests from running).
#   bash scripts/test.sh                 # all of it
#   bash scripts/test.sh -k transform    # extra arguments go to pytest
#   HFSM_TEST_WORKERS=1 bash scripts/test.sh   # pytest processes (default: one per core, at most 4)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
PROVISION=../shared/container/provision.sh
BASE_IMAGE=localhost/python-base:bookworm

if [[ ! -x .venv/bin/python ]]; then
  echo "== creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "== installing dependencies"
# torch first, on its own, so that a local CPU wheel (find-links) is used rather than the CUDA build
pip install -q torch==2.13.0
pip install -q -r requirements-dev.txt -e .

echo "== container engine"
if [[ -f $PROVISION ]]; then
  if ! command -v podman >/dev/null 2>&1 || ! podman image exists "$BASE_IMAGE" 2>/dev/null; then
    echo "provisioning podman and $BASE_IMAGE with $PROVISION"
    bash "$PROVISION" || echo "WARNING: $PROVISION failed: the container tests will be skipped"
  else
    echo "podman and $BASE_IMAGE are ready"
  fi
else
  echo "NOTE: $PROVISION not found: the container tests run only where podman/docker can build the image"
  echo "      (set HFSM_TEST_BASE_IMAGE / HFSM_TEST_IMAGE, see tests/test_container.py); otherwise they skip"
fi

echo "== tcmalloc"
# train and serve preload it when installed (src/hfsm/allocator.py); the tests check that they do
if ! python -c "from hfsm.allocator import find_library; raise SystemExit(find_library('tcmalloc') is None)"; then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -q libtcmalloc-minimal4 >/dev/null; } \
      || echo "WARNING: could not install libtcmalloc-minimal4: train and serve keep glibc's malloc"
  else
    echo "NOTE: libtcmalloc-minimal4 is not installed: train and serve keep glibc's malloc"
  fi
fi

echo "== ruff"
lint=0
ruff check . || lint=1
ruff format --check . || lint=1
((lint == 0)) || echo "ruff found problems (fix: ruff check --fix . && ruff format .); running the tests anyway"

echo "== pytest"
# One pytest process per core (pytest-xdist), at most 4, a test file each at a time (--dist loadfile:
# a file's module fixtures are built once; the container tests share one image build). Most of the
# suite waits on one single-threaded thing at a time (a subprocess importing torch, a tiny training
# loop), so one process left the second core of a 2-core machine idle half the time.
cores=$(nproc)
workers=${HFSM_TEST_WORKERS:-$((cores < 4 ? cores : 4))}
parallel=()
((workers <= 1)) || parallel=(-n "$workers" --dist loadfile)
set +e
python -m pytest -m "not slow" --durations=15 "${parallel[@]}" "$@"
code=$?
set -e
if ((code == 0 && lint != 0)); then
  echo "tests passed, but ruff failed"
  exit 1
fi
exit "$code"
