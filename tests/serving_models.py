"""A variant of a trained NER model folder that lets serving tests check what they claim.

The ``trained`` models tag at random, so a test of entity offsets could pass on a text where no
entity was found; :func:`always_tagging` gives a model that tags every word with one label.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def always_tagging(model_dir: Path, target: Path, label: str) -> Path:
    """A copy of a token-classification model whose head predicts ``label`` at every position."""
    import torch
    from transformers import AutoModelForTokenClassification

    shutil.copytree(model_dir, target)
    model = AutoModelForTokenClassification.from_pretrained(target)
    label_id = model.config.label2id[label]
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-5.0)
        model.classifier.bias[label_id] = 5.0
    model.save_pretrained(target)
    return target


def diverged(model_dir: Path, target: Path) -> Path:
    """A copy of a model whose classifier weights are NaN, as a diverged training run leaves them."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, target)
    tensors = load_file(target / "model.safetensors")
    for name in tensors:
        if name.endswith("classifier.weight"):
            tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target
