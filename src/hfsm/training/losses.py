"""The training loss of each task, summed and divided by the items of the whole optimiser step.

Models compute their own loss as a mean over the batch they are given. The Trainer divides a loss by
``num_items_in_batch`` (the labelled tokens or rows of all the batches of one optimiser step, on all
processes) only when it believes the model does; models whose ``forward`` takes ``**kwargs`` (BERT
and most others in transformers 5) are believed to, but their token and sequence classification
heads ignore it. So with gradient accumulation each batch's mean was added up instead of averaged,
and with several processes each process's mean was multiplied by the number of processes before
DDP averaged them: gradients, gradient clipping and the logged loss were all scaled by the number of
batches or processes. Summing here and dividing by the step's item count gives the mean over every
labelled item of the step, whatever the accumulation and however many processes share it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..data.windows import IGNORE_INDEX
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION


def summed_loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The loss summed over the batch's labelled items, and how many items that is."""
    logits = logits.float()
    if task in (NER, CLASSIF):
        flat = labels.reshape(-1)
        loss = F.cross_entropy(
            logits.reshape(flat.numel(), -1), flat, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return loss, int((flat != IGNORE_INDEX).sum())
    if task == MULTILABEL:
        return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="sum"), labels.numel()
    if task == REGRESSION:
        loss = F.mse_loss(logits.reshape(-1), labels.float().reshape(-1), reduction="sum")
        return loss, labels.numel()
    raise ValueError(task)  # pragma: no cover - tasks are validated with the hyperparameters


class TaskLoss:
    """``compute_loss_func`` for the Trainer: the task's loss over the step's items (see module doc)."""

    def __init__(self, task: str) -> None:
        self.task = task

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        loss, items = summed_loss(self.task, outputs["logits"], labels)
        divisor = num_items_in_batch if num_items_in_batch is not None else max(items, 1)
        if isinstance(divisor, torch.Tensor):
            divisor = divisor.to(loss.device)
        return loss / divisor
