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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..data.windows import IGNORE_INDEX
from ..errors import UserError
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION


def summed_loss(
    task: str, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """The loss summed over the batch's labelled items, and how many items that is.

    ``class_weights`` (ner, classif) multiply each item's loss by its label's weight.
    """
    logits = logits.float()
    if task in (NER, CLASSIF):
        flat = labels.reshape(-1)
        weight = class_weights.to(logits.device) if class_weights is not None else None
        loss = F.cross_entropy(
            logits.reshape(flat.numel(), -1), flat, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum"
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

    def __init__(self, task: str, class_weights: Sequence[float] | None = None) -> None:
        self.task = task
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        loss, items = summed_loss(self.task, outputs["logits"], labels, self.class_weights)
        divisor = num_items_in_batch if num_items_in_batch is not None else max(items, 1)
        if isinstance(divisor, torch.Tensor):
            divisor = divisor.to(loss.device)
        return loss / divisor


def class_weight_vector(
    setting: str | Mapping[str, float], counts: Mapping[int, int], labels: Sequence[str]
) -> list[float] | None:
    """Per label id, the weight of its items in the loss (``class_weights``); None: all equal.

    ``auto`` weighs a label's items N / (K x its count), N the labelled items of train and K the
    labels seen there ("balanced"): every label then carries the same total weight. ``sqrt`` weighs
    them in proportion to 1 / sqrt(count): rare labels still gain, but NER's ``O`` (often 90% of the
    words) is not made nearly weightless, which costs ``auto`` much precision (see the README).
    Both scale the weights so that the items weigh 1 on average and the loss keeps its scale. A
    label absent from train weighs 1 (it never occurs in the loss). A map sets the named labels and
    leaves the others at 1.
    """
    if setting == "none":
        return None
    if setting in ("auto", "sqrt"):
        seen = {label: count for label, count in counts.items() if count > 0}
        power = 1.0 if setting == "auto" else 0.5
        raw = {label: count**-power for label, count in seen.items()}
        scale = sum(seen.values()) / sum(seen[label] * raw[label] for label in seen)
        return [scale * raw[i] if i in seen else 1.0 for i in range(len(labels))]
    assert isinstance(setting, Mapping)
    unknown = sorted(set(setting) - set(labels))
    if unknown:
        raise UserError(
            f"Hyperparameter 'class_weights' names labels the data does not have: {unknown}; "
            f"the labels are {list(labels)}"
        )
    return [float(setting.get(name, 1.0)) for name in labels]
