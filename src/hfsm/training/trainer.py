"""The Trainer, with evaluation kept in dataset order and a padding-saving training sampler.

transformers 5 applies ``train_sampling_strategy="group_by_length"`` to evaluation as well, which
reorders predictions. NER windows are mapped back to their texts by position, so evaluation must
stay sequential (``check_order`` in :mod:`hfsm.training.job` guards this).

For training, ``group_by_length`` uses :class:`ShuffledLengthGroupedSampler` instead of the
Trainer's own ``LengthGroupedSampler``: the same padding savings, without the latter's pattern of
batches running from the longest to the shortest inside every group of 50 batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler, SequentialSampler
from transformers import Trainer

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


class OrderedEvalTrainer(Trainer):
    """A Trainer whose evaluation and prediction see the dataset in order."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and self.args.world_size <= 1:
            lengths = [len(feature["input_ids"]) for feature in dataset]
            return ShuffledLengthGroupedSampler(lengths, self.args.train_batch_size)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        # distributed evaluation shards sequentially and gathers in order when no sampler is given
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
