"""Float32 Linear layers on oneDNN's inner-product kernel instead of ``aten::addmm`` (MKL's sgemm).

Why: a float32 forward pass of a BERT-sized model is mostly its Linear layers (``aten::addmm`` was
83% of our CPU time on CoNLL-2003 sentences, ``bench/forward_profile.py``). On a 2-core Zen 4 EPYC
oneDNN's ``torch.ops.mkldnn._linear_pointwise`` ran MiniLM-L6's products at 197-215 GFLOP/s where
``addmm`` ran 161-193 in the same run, and the whole forward 7.5% faster, logits within 4e-6 of
``addmm``'s. On a 2-core Xeon with AVX-512 and AMX, where MKL is on its home ground, the two ran the
same products at the same rate (about 300 GFLOP/s) and oneDNN's forward was 5-6% slower. So ``auto``
turns it on for AMD x86-64 CPUs only. It takes and returns ordinary dense tensors, so nothing else in
the model changes; it has no backward, hence inference only (the training loop keeps ``addmm``).

oneDNN keeps a primitive (and its scratch memory) per input shape it has seen, up to 1,024 by
default. With the many shapes an endpoint meets (rows x tokens of each batch) that held about 400 MB
more than ``addmm`` for MiniLM-L6 on tcmalloc, and it made our 8-client load test's resident memory
grow 22% in 30 seconds. Bounding both caches (oneDNN's own and ideep's, torch's wrapper) to
:data:`PRIMITIVE_CACHE_CAPACITY` entries kept memory level with ``addmm``'s at about the same speed
(``bench/onednn_memory.py``). So deciding to route sets them before the first oneDNN call of the
process, unless the environment already does (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``,
``LRU_CACHE_CAPACITY``).

It stays off where it was not measured faster or cannot apply: GPUs, int8 (the layers are no longer
``nn.Linear``), autocast (the op does not take part in autocast's casting), CPUs other than AMD's,
and torch builds without the op or where a one-product self-check disagrees with ``addmm``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from functools import partial
from typing import Any

from ..errors import UserError
from . import cpu

SELF_CHECK_TOLERANCE = 1e-4
"""Largest difference from ``torch.nn.functional.linear`` relative to its largest output."""

PRIMITIVE_CACHE_CAPACITY = 32
"""oneDNN primitives (one per input shape and weight shape) kept per cache; see the module."""
CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")

FASTER_ON = "AuthenticAMD"
"""The CPU vendor on which oneDNN's Linear was measured faster than MKL's ``addmm``."""


def unavailable_reason(device: str, quantize: str, autocast: str) -> str | None:
    """Why the oneDNN Linear cannot serve these options (None: it can), checked without a model."""
    import torch

    if not device.startswith("cpu"):
        return f"it runs on the CPU, the model is on {device}"
    if quantize != "none":
        return "HFSM_QUANTIZE=int8 replaces the Linear layers"
    if autocast != "none":
        return "it does not run under HFSM_AUTOCAST"
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return f"torch {torch.__version__} has no oneDNN _linear_pointwise"
    return self_check_failure()


def self_check_failure() -> str | None:
    """A random product through both kernels; the reason they disagree, or None."""
    import torch

    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(96, 48)
    inputs = torch.randn(2, 5, 96, generator=generator)
    try:
        with torch.inference_mode():
            expected = layer(inputs)
            got = onednn_forward(layer, inputs)
    except RuntimeError as exc:
        return f"its self-check failed: {exc}"
    error = float((got - expected).abs().max() / expected.abs().max())
    if got.shape != expected.shape or not error <= SELF_CHECK_TOLERANCE:
        return f"its self-check differs from addmm by {error:.1e} of the largest output"
    return None


def decide(setting: bool | None, device: str, quantize: str, autocast: str) -> bool:
    """Whether to route the Linear layers: ``setting`` None is auto, True is required."""
    if setting is False:
        return False
    if setting is None and (not cpu.is_x86_64() or cpu.cpu_vendor() != FASTER_ON):
        return False
    bound_primitive_caches()  # before the self-check: its call may be the first to oneDNN
    reason = unavailable_reason(device, quantize, autocast)
    if reason is not None and setting:
        raise UserError(f"HFSM_ONEDNN_LINEAR=true, but {reason}; set it to auto or false")
    return reason is None


def bound_primitive_caches(environ: MutableMapping[str, str] = os.environ) -> None:
    """Cap oneDNN's primitive caches (read by oneDNN and ideep when first used) unless already set."""
    for name in CACHE_VARIABLES:
        environ.setdefault(name, str(PRIMITIVE_CACHE_CAPACITY))


def route_linear_layers(model: Any) -> None:
    """Run every ``nn.Linear`` of ``model`` on oneDNN.

    The layers keep their class, parameters and hooks: only their ``forward`` is replaced, on the
    instance, so ``state_dict``, ``isinstance`` checks and forward hooks see the same model.
    """
    import torch

    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = partial(onednn_forward, module)


def onednn_forward(layer: Any, inputs: Any) -> Any:
    """``layer(inputs)`` through oneDNN: inputs of any leading shape, a dense float32 output."""
    import torch

    return torch.ops.mkldnn._linear_pointwise(inputs, layer.weight, layer.bias, "none", [], "")
