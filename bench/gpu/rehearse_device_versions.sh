#!/usr/bin/env bash
# Rehearses bench/gpu/run.sh here, on the CPU, with the library versions of the GPU machine's image
# (the pins below, as the device tool's KINDS.md read them in 2026-11) instead of requirements.txt's,
# so that an API change between them fails here rather than in the 15 minutes of a device lease.
# torch stays the local 2.13.0 CPU wheel and Python 3.11 (the device has torch 2.11.0 on Python
# 3.12; neither is installable offline here).
#   bash bench/gpu/make_kit.sh && bash bench/gpu/rehearse_device_versions.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
VENV=${VENV:-/tmp/hfsm-device-versions}
if [[ ! -x $VENV/bin/python ]]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
"$VENV/bin/pip" install -q --disable-pip-version-check transformers==5.17.0 tokenizers==0.23.2 \
  huggingface_hub==1.33.0 accelerate==1.15.0 safetensors==0.8.0 pandas scikit-learn matplotlib tensorboard requests psutil peft
DEVICE=cpu LIMIT=${LIMIT:-200} SECONDS_PER_LEVEL=${SECONDS_PER_LEVEL:-3} PYTHON=$VENV/bin/python \
  OUT=${OUT:-bench/results/gpu-rehearsal-device-versions} bash bench/gpu/run.sh
