"""Padding-free token-classification batches: the same batch, packed into fewer rows.

A random batch of 16 CoNLL-2003 sentences is padded to its longest member, so more than half of
the tokens the model computes are padding (20 real sub-tokens on average against a longest of about
45). Packing puts several windows of the batch side by side in one row, gives every window its own
positions (restarting at 0) and a block-diagonal attention mask (a token sees only its own window),
and keeps each token's label in place. Every window is then computed exactly as it would be alone,
the loss is the mean over the same labelled tokens, and the optimiser sees the same batch: the
gradient is the padded batch's gradient (up to float rounding and which dropout masks are drawn),
for about half the compute on CPU. Serving packs the same way: requests merged by dynamic batching
hold sentences of any lengths, and a packed forward pass gives them the padded pass's logits.

Which models compute a packed row like separate windows is a property of their code (absolute
positions taken from ``position_ids``, a 4-D additive attention mask honoured as given), so it is
checked, not assumed: :func:`check_packing` compares the logits of a real batch padded and packed
before the first step uses it. Seen here (transformers 5.23): BERT, DistilBERT, ELECTRA, RoBERTa and
XLM-R pack; LayoutLM and DeBERTa-v2 build their own masks from a 2-D one and are padded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

PACKED_KEYS = ("input_ids", "token_type_ids", "bbox", "labels")
"""Per-token inputs that move with their token; any other key makes a batch unpackable."""


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of ``lengths`` grouped into rows of at most ``capacity`` tokens.

    Longest first, each into the first row with room. ``capacity`` is at least the longest length,
    so no row is ever longer than the padded batch was and memory never exceeds padding's.
    """
    if lengths and capacity < max(lengths):
        raise ValueError(f"capacity {capacity} is shorter than the longest sequence {max(lengths)}")
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for row, room in enumerate(free):
            if lengths[index] <= room:
                rows[row].append(index)
                free[row] -= lengths[index]
                break
        else:
            rows.append([index])
            free.append(capacity - lengths[index])
    return rows


@dataclass(frozen=True)
class Placement:
    """Where sequence ``index`` of the padded batch went: row, first column and length."""

    row: int
    offset: int
    length: int


@dataclass(frozen=True)
class PackedBatch:
    inputs: dict[str, torch.Tensor]
    placements: list[Placement]
    """One per sequence of the padded batch, in its order."""

    @property
    def rows(self) -> int:
        return int(self.inputs["input_ids"].shape[0])


def can_pack(batch: Mapping[str, Any]) -> bool:
    """A padded token-classification batch: 2-D attention mask and per-token labels, nothing else."""
    mask, labels = batch.get("attention_mask"), batch.get("labels")
    return (
        isinstance(mask, torch.Tensor)
        and mask.dim() == 2
        and isinstance(labels, torch.Tensor)
        and labels.shape == mask.shape
        and set(batch) <= {*PACKED_KEYS, "attention_mask"}
    )


def pack_batch(
    batch: Mapping[str, torch.Tensor], mask_dtype: torch.dtype = torch.float32, position_offset: int = 0
) -> PackedBatch:
    """The padded batch (sequences left-aligned, ``attention_mask`` 1 on real tokens) packed into rows.

    Each sequence's ``position_ids`` run from ``position_offset`` (0 for BERT; RoBERTa counts from one
    past its padding index), as the model would number them in a padded row.

    The attention mask becomes additive and 4-D, ``(rows, 1, length, length)``: 0 where query and key
    are in the same sequence, the dtype's minimum elsewhere. Trailing padding of a row forms a block
    of its own, so that no query attends to nothing (a fully masked softmax row gives NaN, which the
    backward pass would spread even though those positions carry no label).
    """
    mask = batch["attention_mask"]
    lengths = [int(n) for n in mask.sum(dim=1).tolist()]
    rows = pack_rows(lengths, capacity=max(lengths, default=0))
    width = max((sum(lengths[i] for i in row) for row in rows), default=0)
    device = mask.device

    placements: list[Placement | None] = [None] * len(lengths)
    source_rows: list[int] = []
    source_cols: list[int] = []
    target_rows: list[int] = []
    target_cols: list[int] = []
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    for row, members in enumerate(rows):
        offset = 0
        for segment, index in enumerate(members):
            length = lengths[index]
            placements[index] = Placement(row, offset, length)
            source_rows += [index] * length
            source_cols += range(length)
            target_rows += [row] * length
            target_cols += range(offset, offset + length)
            positions[row, offset : offset + length] = torch.arange(position_offset, position_offset + length)
            segments[row, offset : offset + length] = segment
            offset += length
        segments[row, offset:] = len(members)

    packed: dict[str, torch.Tensor] = {}
    source = (torch.tensor(source_rows, device=device), torch.tensor(source_cols, device=device))
    target = (torch.tensor(target_rows, device=device), torch.tensor(target_cols, device=device))
    for key in PACKED_KEYS:
        if key not in batch:
            continue
        value = batch[key]
        fill = -100 if key == "labels" else 0
        out = torch.full((len(rows), width, *value.shape[2:]), fill, dtype=value.dtype, device=device)
        out[target] = value[source]
        packed[key] = out
    packed["position_ids"] = positions.to(device)
    segments = segments.to(device)
    same = segments[:, :, None] == segments[:, None, :]
    additive = torch.zeros(same.shape, dtype=mask_dtype, device=device)
    additive.masked_fill_(~same, torch.finfo(mask_dtype).min)
    packed["attention_mask"] = additive[:, None]
    return PackedBatch(packed, [p for p in placements if p is not None])


@dataclass(frozen=True)
class PackingCheck:
    """The outcome of :func:`check_packing`: the position offset that works, or why none does."""

    position_offset: int | None
    reason: str = ""
    conclusive: bool = True
    """False when no two sequences of the batch shared a row: nothing was tested; ask another batch."""


def position_offset_candidates(config: Any) -> list[int]:
    """First position ids to try: 0 (BERT), or one past the padding index (RoBERTa, XLM-R)."""
    candidates = [0]
    pad = getattr(config, "pad_token_id", None)
    if isinstance(pad, int) and pad >= 0:
        candidates.append(pad + 1)
    return candidates


def check_packing(
    model: Any, batch: Mapping[str, torch.Tensor], tolerance: float, position_offsets: Sequence[int] = (0,)
) -> PackingCheck:
    """Whether ``model`` computes the packed batch like the padded one, and with which first position.

    Runs the forward passes in eval mode (no dropout) without gradients and compares the logits of
    every real token. ``tolerance`` is relative to the largest logit (float32: 1e-3 is ample; rounding
    differences are about 1e-6). A batch that packs one sequence per row tests nothing (a model that
    ignored ``position_ids`` or the 4-D mask would pass), so it gives an inconclusive check.
    """
    if all(p.offset == 0 for p in pack_batch(batch).placements):
        return PackingCheck(None, "no two sequences of the batch share a row", conclusive=False)
    unlabelled = {k: v for k, v in batch.items() if k != "labels"}
    was_training = model.training
    model.eval()
    reasons = []
    try:
        with torch.no_grad():
            padded_logits = model(**unlabelled).logits.float()
            scale = max(1.0, float(padded_logits.abs().max()))
            for offset in position_offsets:
                packed = pack_batch(batch, mask_dtype=float_dtype(model), position_offset=offset)
                inputs = {k: v for k, v in packed.inputs.items() if k != "labels"}
                try:
                    packed_logits = model(**inputs).logits.float()
                except (TypeError, ValueError, RuntimeError) as exc:  # the model does not take these inputs
                    reasons.append(f"positions from {offset}: {type(exc).__name__}: {exc}")
                    continue
                worst = max(
                    float(
                        (padded_logits[i, : p.length] - packed_logits[p.row, p.offset : p.offset + p.length])
                        .abs()
                        .max()
                    )
                    for i, p in enumerate(packed.placements)
                )
                if worst <= tolerance * scale:
                    return PackingCheck(offset)
                reasons.append(
                    f"positions from {offset}: logits differ by up to {worst:.3g} (largest logit {scale:.3g})"
                )
    finally:
        model.train(was_training)
    return PackingCheck(None, "; ".join(reasons))


def float_dtype(model: Any) -> torch.dtype:
    """The dtype of the model's weights, which an additive attention mask must match."""
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    return parameter.dtype if parameter is not None else torch.float32
