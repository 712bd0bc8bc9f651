"""Dynamic padding for every task, word boxes included."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .windows import IGNORE_INDEX, PAD_BOX


@dataclass
class Collator:
    """Pad a batch to its longest member (optionally to a multiple, for tensor cores).

    Keys other than model inputs (e.g. ``word_index``) are dropped: the caller keeps them.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    model_keys: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids", "bbox", "labels")

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, torch.Tensor] = {}
        first = features[0]
        for key in self.model_keys:
            if key not in first:
                continue
            if key == "labels" and not isinstance(first["labels"], list):
                dtype = torch.float32 if isinstance(first["labels"], float) else torch.long
                batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
                continue
            if key == "labels" and first["labels"] and isinstance(first["labels"][0], float):
                # multi-hot targets of multilabel classification: one vector per text, no padding
                batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float32)
                continue
            pad: Any = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX, "bbox": list(PAD_BOX)}.get(
                key, 0
            )
            rows = [list(f[key]) + [pad] * (longest - len(f[key])) for f in features]
            batch[key] = torch.tensor(rows, dtype=torch.long)
        return batch
