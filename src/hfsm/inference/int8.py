"""Dynamic int8 quantization of a torch model's Linear layers, and which int8 kernels run them.

Why the kernel library is chosen here: torch packs each quantized weight for the quantized engine
in force *when it is packed* (``torch.backends.quantized.engine`` inside ``quantize_dynamic``), and
that packing alone decides the kernel that later runs the product, whatever the engine is then. The
default engine, ``x86``, runs dynamic Linear layers on FBGEMM; ``onednn`` on oneDNN, which uses AMX
tiles where the CPU has them. On a 2-core Xeon with AMX, MiniLM-L6 int8 on 1,600 CoNLL-2003 dev
sentences ran at 746 records/s packed for oneDNN against 614 for the default, F1 86.02 against
86.03 (a single run, not kept in ``bench/results``). On a 2-core Zen 4
EPYC (AVX-512 VNNI, no AMX) the two were level, 460 and 457 records/s over 8 interleaved rounds
(``bench/results/2026-12-07-epyc-avx512/forward_profile_int8.json``), although oneDNN ran the bare
384x1536 products there 1.7x as fast. So ``auto`` goes by one fact, AMX int8; elsewhere it keeps
torch's default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import UserError
from . import cpu

ENGINE_CHOICES = ("auto", "onednn", "x86", "fbgemm", "qnnpack")
"""Values of HFSM_QUANTIZED_ENGINE: ``auto`` or one of torch's quantized engines."""

FASTER_WITH_FLAG = "amx_int8"
"""The CPU flag of the machines where a model packed for oneDNN was measured faster than FBGEMM's."""


def supported_engines() -> list[str]:
    """The quantized engines this torch build has (``none`` is not one)."""
    import torch

    return [name for name in torch.backends.quantized.supported_engines if name != "none"]


def choose_engine(setting: str) -> str:
    """The quantized engine to pack the weights for: ``setting``, or for ``auto`` the measured one."""
    import torch

    supported = supported_engines()
    if setting == "auto":
        if "onednn" in supported and cpu.is_x86_64() and FASTER_WITH_FLAG in cpu.cpu_flags():
            return "onednn"
        return torch.backends.quantized.engine
    if setting not in supported:
        raise UserError(
            f"HFSM_QUANTIZED_ENGINE={setting}: torch {torch.__version__} here has "
            f"{', '.join(supported)}; set one of those or auto"
        )
    return setting


@contextlib.contextmanager
def packing_for(engine: str) -> Iterator[None]:
    """``torch.backends.quantized.engine`` set to ``engine`` inside the block, restored after it, so
    loading a model leaves no process-wide setting behind."""
    import torch

    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def quantize_int8(model: Any, device: str, engine: str) -> Any:
    """The model with its Linear layers as dynamically quantized int8 (weights int8, activations
    quantized per batch), packed for the quantized ``engine``: the matrix products, most of a
    transformer's CPU time, run on int8 kernels (VNNI where the CPU has it). CPU kernels only, hence
    refused on a GPU.

    Weights are quantized per output channel: on CoNLL-2003 (MiniLM-L6) one scale per tensor cost
    1.45 dev F1 points, one per channel about 0.3. The layer that produces the logits (out features =
    the number of labels) stays float: it is a fraction of a percent of the work, and rounding the
    logits themselves cost 0.02 of those points for no speed.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if not device.startswith("cpu"):
        raise UserError(
            f"HFSM_QUANTIZE=int8 runs on the CPU only, but the model is on {device}; "
            "unset it or set HFSM_DEVICE=cpu"
        )
    n_labels = model.config.num_labels
    layers = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module.out_features != n_labels
    }
    with packing_for(engine):
        return quantize_dynamic(model, layers, dtype=torch.qint8)
