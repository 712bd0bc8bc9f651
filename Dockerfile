# syntax=docker/dockerfile:1
# One image for Amazon SageMaker bring-your-own-container: `docker run IMAGE train` fine-tunes,
# `docker run IMAGE serve` hosts the model on :8080 (real-time endpoints and Batch Transform).
#
# GPU (default): PyPI's torch 2.13.0 Linux wheels are CUDA 13.0 builds that bring CUDA and cuDNN
# as pip packages (cuda-toolkit 13.0.3, nvidia-cudnn-cu13), so the base image only has to be a
# CUDA 13.0 image for the NVIDIA container runtime (driver >= 580); the slim `base` flavour avoids
# a second copy of cuDNN/cuBLAS.
# CPU: --build-arg BASE_IMAGE=ubuntu:22.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Offline build machines: --build-arg PIP_FIND_LINKS=/dir/with/wheels (+ -v to mount it) and
# --build-arg PIP_CERT=/path/ca.crt. They are ARGs used only by the pip steps: nothing of the build
# machine stays in the image.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-base-ubuntu22.04
FROM ${BASE_IMAGE}

# The Python the venv is made from. Ubuntu 22.04 has python3.11 in universe; Debian bookworm bases
# already ship it (and its venv module), so apt installs it only where it is missing.
ARG PYTHON=python3.11
ARG PIP_VERSION=26.3

# tini is PID 1: it forwards SIGTERM (StopTrainingJob, endpoint updates) to train/serve, which
# a Python or shell PID 1 would otherwise ignore until SIGKILL. train and serve preload tcmalloc
# (hfsm/allocator.py: glibc's malloc page-faults the large per-step buffers of training afresh).
RUN set -eu; \
    packages="tini ca-certificates libtcmalloc-minimal4"; \
    if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then packages="$packages $PYTHON $PYTHON-venv"; fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    "$PYTHON" -m venv /opt/venv

ENV PATH=/opt/venv/bin:/opt/program/container:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HOME=/tmp/huggingface

ARG PIP_CERT=
ARG PIP_FIND_LINKS=
ARG TORCH_INDEX_URL=

# Dependencies first: this layer is rebuilt only when requirements.txt changes. pip reads
# PIP_CERT / PIP_FIND_LINKS from the build arguments' environment when they are set.
COPY requirements.txt /tmp/hfsm/requirements.txt
RUN set -eu; \
    [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    [ -n "$PIP_FIND_LINKS" ] || unset PIP_FIND_LINKS; \
    extra=""; [ -z "$TORCH_INDEX_URL" ] || extra="--extra-index-url $TORCH_INDEX_URL"; \
    pip install --no-cache-dir "pip==$PIP_VERSION"; \
    pip install --no-cache-dir $extra -r /tmp/hfsm/requirements.txt; \
    rm -rf /tmp/hfsm

WORKDIR /opt/program
COPY pyproject.toml README.m[d] ./
COPY src ./src
RUN set -eu; \
    [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    [ -n "$PIP_FIND_LINKS" ] || unset PIP_FIND_LINKS; \
    pip install --no-cache-dir --no-deps . ; \
    rm -rf build src/*.egg-info; \
    python -c "import hfsm.__main__"

# train and serve on PATH: SageMaker runs `docker run IMAGE train` / `docker run IMAGE serve`
COPY --chmod=0755 container ./container

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true \
      org.opencontainers.image.title=hfsm \
      org.opencontainers.image.description="Fine-tune and serve Hugging Face token/sequence classifiers on SageMaker"

EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "hfsm", "--help"]
