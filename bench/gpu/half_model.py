"""Shrink a model folder to float16 weights and grow it back to float32, for the device machine.

Why: a call to the workplace's GPU machine carries at most 64 MiB, and MiniLM-L6's float32
safetensors are 87 MiB. Float16 halves them; ``unpack`` restores float32 tensors there, each within
float16's rounding (about 5e-4 relative) of the original: enough for throughput benchmarks, which
then fine-tune both sides from the same restored weights. Tokenizer and config files are copied as
they are. Usage::

    python bench/gpu/half_model.py pack MODEL_DIR KIT_DIR
    python bench/gpu/half_model.py unpack KIT_DIR MODEL_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

WEIGHTS = "model.safetensors"


def convert(source: Path, target: Path, dtype_name: str) -> None:
    """Copy ``source`` to ``target`` with every floating-point tensor of its weights in ``dtype_name``."""
    import torch
    from safetensors.torch import load_file, save_file

    if not (source / WEIGHTS).is_file():
        raise SystemExit(f"{source} has no {WEIGHTS}")
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name != WEIGHTS:
            shutil.copy2(path, target / path.name)
    dtype = getattr(torch, dtype_name)
    tensors = {
        name: tensor.to(dtype) if tensor.is_floating_point() else tensor
        for name, tensor in load_file(source / WEIGHTS).items()
    }
    save_file(tensors, target / WEIGHTS, metadata={"format": "pt"})


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[0] not in ("pack", "unpack"):
        raise SystemExit(__doc__)
    action, source, target = argv
    convert(Path(source), Path(target), "float16" if action == "pack" else "float32")
    size = (Path(target) / WEIGHTS).stat().st_size / 2**20
    print(f"{action}: {source} -> {target} ({size:.1f} MiB of weights)")


if __name__ == "__main__":
    main(sys.argv[1:])
