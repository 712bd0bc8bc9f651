"""Packed NER training batches: the packing itself, the model check, the same gradients, the job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import quick_hyperparameters
from hfsm.data.packing import (
    can_pack,
    check_packing,
    pack_batch,
    pack_rows,
    position_offset_candidates,
)
from hfsm.training.features import EncodedSplit, LengthSortedSplit
from sagemaker_tree import DATA_DIR, make_tree, run_train

NEG = torch.finfo(torch.float32).min


def test_pack_rows_first_fit_decreasing() -> None:
    # longest first: 8 alone; 6 opens a row; 5 opens one; 3 fills 5's row; 2 fills 6's row
    assert pack_rows([5, 3, 8, 2, 6], capacity=8) == [[2], [4, 3], [0, 1]]
    assert pack_rows([], capacity=0) == []
    with pytest.raises(ValueError, match="shorter than the longest"):
        pack_rows([4, 9], capacity=8)


@given(st.lists(st.integers(1, 40), min_size=1, max_size=40), st.integers(0, 40))
def test_pack_rows_places_every_sequence_once_within_capacity(lengths: list[int], extra: int) -> None:
    capacity = max(lengths) + extra
    rows = pack_rows(lengths, capacity)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= capacity for row in rows)
    assert len(rows) <= len(lengths)


def padded_batch(lengths: list[int], *, boxes: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(5, 60, (length,), generator=generator)
        mask[row, :length] = 1
        labels[row, 1 : length - 1] = torch.randint(0, 3, (length - 2,), generator=generator)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": labels,
    }
    if boxes:
        corners = torch.randint(0, 500, (len(lengths), width, 2), generator=generator)
        boxes_ = torch.cat([corners, corners + torch.randint(1, 400, (len(lengths), width, 2))], dim=-1)
        batch["bbox"] = boxes_ * mask[..., None]  # x0 y0 x1 y1 with x1 > x0 and y1 > y0
    return batch


def test_pack_batch_moves_tokens_labels_and_boxes_and_restarts_positions() -> None:
    batch = padded_batch([5, 3, 8, 2, 6], boxes=True)
    packed = pack_batch(batch, position_offset=2)
    inputs = packed.inputs
    assert packed.rows == 3 and inputs["input_ids"].shape == (3, 8)
    for index, place in enumerate(packed.placements):
        span = slice(place.offset, place.offset + place.length)
        assert place.length == int(batch["attention_mask"][index].sum())
        for key in ("input_ids", "labels", "bbox", "token_type_ids"):
            assert torch.equal(inputs[key][place.row, span], batch[key][index, : place.length]), key
        assert inputs["position_ids"][place.row, span].tolist() == list(range(2, 2 + place.length))
    # row 1 holds the 6-token and the 2-token sequence; nothing is left for padding
    assert [(p.row, p.offset) for p in packed.placements] == [(2, 0), (2, 5), (0, 0), (1, 6), (1, 0)]
    assert int((inputs["labels"] != -100).sum()) == int((batch["labels"] != -100).sum())


def test_pack_batch_mask_is_block_diagonal_and_padding_attends_to_itself() -> None:
    packed = pack_batch(padded_batch([4, 2, 3]))  # rows: [4], [3, 2]... capacity 4: [0], [2], [1]
    mask = packed.inputs["attention_mask"]
    assert mask.shape == (packed.rows, 1, 4, 4)
    for place in packed.placements:
        block = mask[place.row, 0, place.offset : place.offset + place.length]
        assert torch.all(block[:, place.offset : place.offset + place.length] == 0)
        outside = torch.ones(4, dtype=torch.bool)
        outside[place.offset : place.offset + place.length] = False
        assert torch.all(block[:, outside] == NEG)
    # the 2-token row has 2 padding columns: they see each other (no all-masked softmax row)
    row = next(p.row for p in packed.placements if p.length == 2)
    assert torch.all(mask[row, 0, 2:, 2:] == 0) and torch.all(mask[row, 0, 2:, :2] == NEG)
    assert packed.inputs["labels"][row, 2:].tolist() == [-100, -100]


def test_can_pack_only_token_level_batches() -> None:
    batch = padded_batch([3, 2])
    assert can_pack(batch)
    assert not can_pack({**batch, "labels": torch.tensor([0, 1])})  # sequence classification
    assert not can_pack({**batch, "pixel_values": torch.zeros(2, 3)})  # an input packing would not move


def tiny(kind: str) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    common = dict(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    configs = {
        "bert": lambda: tf.BertConfig(**common),
        "roberta": lambda: tf.RobertaConfig(**common, pad_token_id=1),
        "layoutlm": lambda: tf.LayoutLMConfig(**common),
    }
    return tf.AutoModelForTokenClassification.from_config(configs[kind]())


@pytest.mark.parametrize(("kind", "offset"), [("bert", 0), ("roberta", 2)])
def test_check_packing_finds_the_position_offset(kind: str, offset: int) -> None:
    model = tiny(kind)
    check = check_packing(model, padded_batch([7, 3, 12, 5]), 1e-3, position_offset_candidates(model.config))
    assert (check.position_offset, check.conclusive) == (offset, True), check.reason
    assert model.training, "the check leaves the model in the mode it found it"


def test_check_packing_refuses_a_model_that_builds_its_own_mask() -> None:
    check = check_packing(tiny("layoutlm"), padded_batch([7, 3, 12, 5], boxes=True), 1e-3, [0])
    assert check.position_offset is None and check.conclusive
    assert "positions from 0" in check.reason


def test_check_packing_is_inconclusive_when_nothing_shares_a_row() -> None:
    check = check_packing(tiny("bert"), padded_batch([6, 6, 5]), 1e-3, [0])
    assert not check.conclusive and check.position_offset is None


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_packed_batch_gives_the_padded_batch_gradient(kind: str) -> None:
    model = tiny(kind)
    batch = padded_batch([9, 4, 12, 3, 7, 2], seed=1)
    offset = position_offset_candidates(model.config)[-1 if kind == "roberta" else 0]

    def gradient(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(**inputs).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    padded = gradient(batch)
    packed = gradient(pack_batch(batch, position_offset=offset).inputs)
    assert padded.keys() == packed.keys()
    for name in padded:
        torch.testing.assert_close(packed[name], padded[name], rtol=1e-4, atol=1e-6, msg=name)


def test_length_sorted_split_restores_dataset_order() -> None:
    features = [{"input_ids": [0] * n} for n in (3, 9, 1, 9, 4)]
    view = LengthSortedSplit.of(EncodedSplit(features, list(range(5)), 5))
    assert view.order == (1, 3, 4, 0, 2)  # longest first, ties in dataset order
    assert [len(view[i]["input_ids"]) for i in range(len(view))] == [9, 9, 4, 3, 1]
    outputs = np.array([[len(view[i]["input_ids"]), view.order[i]] for i in range(len(view))])
    assert view.restore(outputs)[:, 1].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="4 output rows for 5 features"):
        view.restore(outputs[:4])


@pytest.fixture(scope="module")
def packing_runs(tmp_path_factory: pytest.TempPathFactory, base_models: dict[str, Path]) -> dict:
    runs = {}
    for name, kind, case, extra in (
        ("auto", "bert", "ner", {}),
        ("off", "bert", "ner", {"pack_sequences": False}),
        ("boxes_forced", "layoutlm", "ner_bbox", {"use_bbox": True, "pack_sequences": True}),
    ):
        tree = make_tree(
            tmp_path_factory.mktemp(f"packing-{name}"),
            DATA_DIR / case,
            quick_hyperparameters("ner", base_models[kind], **extra),
        )
        runs[name] = run_train(tree)
    return runs


def test_job_packs_ner_batches_by_default(packing_runs: dict) -> None:
    auto, off = packing_runs["auto"], packing_runs["off"]
    assert auto.returncode == 0 and off.returncode == 0, auto.output[-3000:] + off.output[-3000:]
    assert "training batches are packed: BertForTokenClassification" in auto.output
    assert auto.metrics()["train"]["packed_batches"] is True
    assert off.metrics()["train"]["packed_batches"] is False
    assert "training batches are packed" not in off.output
    # same seed, same batches, same gradients up to rounding: the runs end at nearly the same loss
    assert auto.metrics()["train"]["train_loss"] == pytest.approx(
        off.metrics()["train"]["train_loss"], rel=2e-3
    )


def test_forced_packing_of_a_model_that_cannot_fails_the_job(packing_runs: dict) -> None:
    result = packing_runs["boxes_forced"]
    assert result.returncode == 1, result.output[-3000:]
    assert result.failure is not None
    assert result.failure.startswith("UserError: pack_sequences=true, but LayoutLMForTokenClassification")
    assert not (result.base / "model" / "model.safetensors").exists()
    assert (
        json.loads((result.base / "input/config/hyperparameters.json").read_text())["pack_sequences"]
        == "true"
    )
