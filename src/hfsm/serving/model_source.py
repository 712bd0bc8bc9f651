"""Where the served model comes from: the model folder, or ``HF_MODEL_ID`` as the Hugging Face DLC reads it.

SageMaker unpacks ``ModelDataUrl`` into ``/opt/ml/model``. A model deployed without one names a Hub
model (or a local folder) in ``HF_MODEL_ID``, with ``HF_MODEL_REVISION`` and ``HF_TOKEN`` (or
``HF_API_TOKEN``) for a pinned or gated one; it is fetched once, in the master before the workers
start, into a writable folder. A model folder that holds files wins, with a warning: that is what
the DLC serves too.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

from ..errors import UserError
from .settings import ServingSettings

log = logging.getLogger("hfsm.serve")

HUB_IGNORED = ["*.h5", "*.msgpack", "*.ckpt*", "tf_model*", "flax_model*", "rust_model*", "*.tflite", "*.ot"]
"""Weights of other frameworks in a Hub repository, never read here."""


def resolve_model_source(settings: ServingSettings) -> ServingSettings:
    """``settings`` with ``model_dir`` pointing at the folder to serve."""
    model_id = settings.hf_model_id
    if model_id is None or settings.multi_model:
        if model_id is not None:
            log.warning("HF_MODEL_ID=%s is ignored: a multi-model endpoint loads models by name", model_id)
        return settings
    if _holds_files(settings.model_dir):
        log.warning(
            "HF_MODEL_ID=%s is ignored: %s holds a model (from ModelDataUrl), which is served",
            model_id,
            settings.model_dir,
        )
        return settings
    local = Path(model_id)
    if local.is_absolute() or model_id.startswith("."):
        if not local.is_dir():
            raise UserError(f"HF_MODEL_ID={model_id!r} is a path, and no such folder exists")
        log.info("serving HF_MODEL_ID=%s (a local folder)", model_id)
        return dataclasses.replace(settings, model_dir=local)
    return dataclasses.replace(settings, model_dir=download_from_hub(settings))


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def download_from_hub(settings: ServingSettings) -> Path:
    """Fetch ``HF_MODEL_ID`` from the Hub into a fresh folder; a clear start error when it cannot be."""
    model_id = settings.hf_model_id
    assert model_id is not None
    from huggingface_hub import constants, snapshot_download

    target = Path(tempfile.mkdtemp(prefix="hfsm-hub-model-"))
    revision = settings.hf_model_revision
    log.info(
        "fetching HF_MODEL_ID=%s%s from the Hugging Face Hub into %s",
        model_id,
        f" at revision {revision}" if revision else "",
        target,
    )
    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False  # the image is offline for everything else; this is asked for
    try:
        snapshot_download(
            repo_id=model_id,
            revision=revision,
            token=settings.hf_token or False,
            local_dir=target,
            ignore_patterns=HUB_IGNORED,
        )
    except Exception as exc:
        detail = _masked(f"{type(exc).__name__}: {exc}", settings.hf_token)
        raise UserError(
            f"HF_MODEL_ID={model_id!r} cannot be fetched from the Hugging Face Hub: this endpoint has no "
            "network access to huggingface.co (network isolation, or a VPC without a route out), or the "
            "model id, HF_MODEL_REVISION or HF_TOKEN is wrong. Package the model as a model.tar.gz "
            f"(ModelDataUrl) instead, or set HF_MODEL_ID to a local folder. ({detail.splitlines()[0]})"
        ) from None
    finally:
        constants.HF_HUB_OFFLINE = offline
    return target


def _masked(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
