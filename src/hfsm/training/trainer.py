"""The Trainer, with evaluation kept in dataset order.

transformers 5 applies ``train_sampling_strategy="group_by_length"`` to evaluation as well, which
reorders predictions. NER windows are mapped back to their texts by position, so evaluation must
stay sequential (``check_order`` in :mod:`hfsm.training.job` guards this).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import SequentialSampler
from transformers import Trainer


class OrderedEvalTrainer(Trainer):
    """A Trainer whose evaluation and prediction see the dataset in order."""

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        # distributed evaluation shards sequentially and gathers in order when no sampler is given
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
