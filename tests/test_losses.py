"""The task losses: the model's own mean on one batch, and the whole step's mean when split up."""

from __future__ import annotations

import pytest
import torch

from hfsm.tasks import CLASSIF, MULTILABEL, NER, REGRESSION
from hfsm.training.losses import TaskLoss

torch.manual_seed(0)
LOGITS = {
    NER: torch.randn(4, 6, 5),
    CLASSIF: torch.randn(4, 5),
    MULTILABEL: torch.randn(4, 5),
    REGRESSION: torch.randn(4, 1),
}
LABELS = {
    NER: torch.tensor([[-100, 1, 2, -100, -100, -100], [-100, 0, 0, 4, 3, -100],
                       [-100, 2, -100, -100, -100, -100], [-100, 1, 1, 1, 1, 1]]),
    CLASSIF: torch.tensor([0, 3, 4, 1]),
    MULTILABEL: torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]]),
    REGRESSION: torch.tensor([0.5, -1.0, 2.0, 3.5]),
}  # fmt: skip
TORCH_MEAN = {
    NER: lambda x, y: torch.nn.functional.cross_entropy(x.reshape(-1, 5), y.reshape(-1)),
    CLASSIF: torch.nn.functional.cross_entropy,
    MULTILABEL: torch.nn.functional.binary_cross_entropy_with_logits,
    REGRESSION: lambda x, y: torch.nn.functional.mse_loss(x.squeeze(-1), y),
}


@pytest.mark.parametrize("task", [NER, CLASSIF, MULTILABEL, REGRESSION])
def test_one_batch_gives_the_mean_the_model_would(task: str) -> None:
    loss = TaskLoss(task)({"logits": LOGITS[task]}, LABELS[task])
    torch.testing.assert_close(loss, TORCH_MEAN[task](LOGITS[task], LABELS[task]))


@pytest.mark.parametrize("task", [NER, CLASSIF, MULTILABEL, REGRESSION])
def test_batches_of_one_step_add_up_to_the_steps_mean(task: str) -> None:
    """Gradient accumulation or processes: each part divided by the step's items, summed, is the mean."""
    labels, logits = LABELS[task], LOGITS[task]
    items = int((labels != -100).sum())
    loss = TaskLoss(task)
    parts = [loss({"logits": logits[i : i + 2]}, labels[i : i + 2], num_items_in_batch=items) for i in (0, 2)]
    torch.testing.assert_close(sum(parts), TORCH_MEAN[task](logits, labels))
