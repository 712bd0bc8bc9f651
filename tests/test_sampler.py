"""The length-grouped training sampler on hand-made lengths."""

from __future__ import annotations

import random

import pytest
import torch

from hfsm.training.trainer import ShuffledLengthGroupedSampler


def padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def test_every_example_once_and_far_less_padding_than_random_batches() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(1003)]
    torch.manual_seed(0)
    sampler = ShuffledLengthGroupedSampler(lengths, batch_size=16, group_batches=10)
    order = list(sampler)
    assert sorted(order) == list(range(1003)) and len(sampler) == 1003
    random_order = torch.randperm(1003).tolist()
    assert padded_tokens(order, lengths, 16) < 0.7 * padded_tokens(random_order, lengths, 16)
    # the partial batch (1003 = 62 x 16 + 11) comes last, so the DataLoader cuts full batches first
    batches = [order[i : i + 16] for i in range(0, 1003, 16)]
    assert [len(batch) for batch in batches[:-1]] == [16] * 62 and len(batches[-1]) == 11


def test_batch_order_is_shuffled_not_longest_to_shortest() -> None:
    lengths = list(range(800))
    torch.manual_seed(1)
    order = ShuffledLengthGroupedSampler(lengths, batch_size=8, group_batches=100).order()
    batch_maxima = [max(lengths[i] for i in order[s : s + 8]) for s in range(0, 800, 8)]
    assert batch_maxima != sorted(batch_maxima) and batch_maxima != sorted(batch_maxima, reverse=True)
    assert all(max(order[s : s + 8]) - min(order[s : s + 8]) == 7 for s in range(0, 800, 8))


def test_seeded_and_different_each_epoch() -> None:
    lengths = [5, 9, 2, 7, 1, 8, 3, 6] * 10
    torch.manual_seed(3)
    first, second = list(ShuffledLengthGroupedSampler(lengths, 4)), None
    sampler = ShuffledLengthGroupedSampler(lengths, 4)
    torch.manual_seed(3)
    assert list(sampler) == first
    second = list(sampler)
    assert second != first


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        ShuffledLengthGroupedSampler([1, 2], batch_size=0)
