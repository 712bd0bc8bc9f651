"""The Trainer, with evaluation kept in dataset order, packed NER batches and a length-grouping sampler.

transformers 5 applies ``train_sampling_strategy="group_by_length"`` to evaluation as well, which
reorders predictions. NER windows are mapped back to their texts by position, so evaluation must
stay sequential (``check_order`` in :mod:`hfsm.training.job` guards this).

For training, ``group_by_length`` uses :class:`ShuffledLengthGroupedSampler` instead of the
Trainer's own ``LengthGroupedSampler``: the same padding savings, without the latter's pattern of
batches running from the longest to the shortest inside every group of 50 batches.

Token-classification batches are packed (:mod:`hfsm.data.packing`) once the first batch has
shown that the model computes packed windows like padded ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler, SequentialSampler
from transformers import Trainer

from ..data.packing import can_pack, check_packing, float_dtype, pack_batch, position_offset_candidates
from ..errors import UserError

log = logging.getLogger("hfsm.train")

PACKING_TOLERANCE = 1e-3
"""Largest packed-vs-padded logit difference, relative to the largest logit, in float32."""
MIXED_PRECISION_PACKING_TOLERANCE = 5e-2

GROUP_BATCHES = 50
"""Batches per length-sorted group: large enough that each batch holds texts of nearly one length."""


class ShuffledLengthGroupedSampler(Sampler[int]):
    """Random batches of similar lengths, in random order.

    Each epoch: a random permutation is cut into groups of ``GROUP_BATCHES`` batches; each group is
    sorted by length and cut into batches; then the order of all full batches is shuffled (a last
    partial batch stays last, so that the DataLoader cuts the same batches). Every example is seen
    once per epoch. Randomness comes from torch's global generator, which ``set_seed`` seeds and a
    resumed checkpoint restores.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int = GROUP_BATCHES) -> None:
        if batch_size < 1 or group_batches < 1:
            raise ValueError("batch_size and group_batches must be positive")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.group_size = batch_size * group_batches

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def order(self) -> list[int]:
        permutation = torch.randperm(len(self.lengths)).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(permutation), self.group_size):
            group = sorted(permutation[start : start + self.group_size], key=self.lengths.__getitem__)
            batches.extend(group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size))
        partial = batches.pop() if batches and len(batches[-1]) < self.batch_size else None
        shuffled = [batches[i] for i in torch.randperm(len(batches)).tolist()]
        if partial is not None:
            shuffled.append(partial)
        return [index for batch in shuffled for index in batch]


class JobTrainer(Trainer):
    """A Trainer whose evaluation sees the dataset in order and whose NER batches can be packed.

    ``pack_sequences``: ``None`` packs when the first batch passes :func:`check_packing` and pads
    otherwise; ``True`` fails the job if it does not pass; ``False`` always pads.
    """

    def __init__(self, *args: Any, pack_sequences: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pack_sequences = pack_sequences
        self.packing: bool | None = None if pack_sequences is not False else False
        """Whether training batches are packed; None until the first token-classification batch."""
        self.position_offset = 0
        self.features_seen = 0
        """Training features (rows of the padded batches) this process has trained on: its share."""

    def training_step(
        self, model: Any, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        self.features_seen += int(inputs["input_ids"].shape[0])
        if self.packing is not False and can_pack(inputs):
            inputs = self._prepare_inputs(inputs)
            if self.packing is None:
                self.packing = self._packing_works(model, inputs)
            if self.packing:
                packed = pack_batch(
                    inputs, mask_dtype=float_dtype(model), position_offset=self.position_offset
                )
                inputs = packed.inputs
        return super().training_step(model, inputs, num_items_in_batch)

    def _packing_works(self, model: Any, batch: dict[str, torch.Tensor]) -> bool | None:
        mixed = self.args.bf16 or self.args.fp16
        tolerance = MIXED_PRECISION_PACKING_TOLERANCE if mixed else PACKING_TOLERANCE
        unwrapped = self.accelerator.unwrap_model(model)
        name = type(unwrapped).__name__
        check = check_packing(model, batch, tolerance, position_offset_candidates(unwrapped.config))
        if not check.conclusive:
            return None  # this batch is padded, the next one is checked
        if check.position_offset is not None:
            self.position_offset = check.position_offset
            log.info(
                "training batches are packed: %s computes packed windows like padded ones "
                "(positions from %d)",
                name,
                check.position_offset,
            )
            return True
        reason = check.reason
        if self.pack_sequences:
            raise UserError(
                f"pack_sequences=true, but {name} does not compute packed windows like padded ones "
                f"({reason}); set pack_sequences to auto or false."
            )
        log.info("training batches are padded: %s cannot be packed (%s)", name, reason)
        return False

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and self.args.world_size <= 1:
            lengths = [len(feature["input_ids"]) for feature in dataset]
            return ShuffledLengthGroupedSampler(lengths, self.args.train_batch_size)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        # distributed evaluation shards sequentially and gathers in order when no sampler is given
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
