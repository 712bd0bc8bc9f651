"""The four tasks and what differs between them, in one table."""

from __future__ import annotations

from dataclasses import dataclass

NER = "ner"
CLASSIF = "classif"
MULTILABEL = "multilabel-classif"
REGRESSION = "regression"
TASK_NAMES: tuple[str, ...] = (NER, CLASSIF, MULTILABEL, REGRESSION)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    token_level: bool
    """True: one label per word (AutoModelForTokenClassification); else one per text."""
    problem_type: str | None
    """``config.problem_type`` for sequence classification; selects the loss in transformers."""
    best_metric: str
    greater_is_better: bool

    def auto_model_class(self) -> type:
        # imported here so that the CLI and the serving master start without loading torch
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

        return AutoModelForTokenClassification if self.token_level else AutoModelForSequenceClassification


TASKS: dict[str, TaskSpec] = {
    NER: TaskSpec(NER, token_level=True, problem_type=None, best_metric="f1", greater_is_better=True),
    CLASSIF: TaskSpec(
        CLASSIF,
        token_level=False,
        problem_type="single_label_classification",
        best_metric="f1_macro",
        greater_is_better=True,
    ),
    MULTILABEL: TaskSpec(
        MULTILABEL,
        token_level=False,
        problem_type="multi_label_classification",
        best_metric="f1_micro",
        greater_is_better=True,
    ),
    REGRESSION: TaskSpec(
        REGRESSION, token_level=False, problem_type="regression", best_metric="mse", greater_is_better=False
    ),
}


def get_task(name: str) -> TaskSpec:
    return TASKS[name]


LOWER_IS_BETTER = {"mse", "mae", "loss", "rmse"}
