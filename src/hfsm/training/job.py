"""The ``train`` job: SageMaker tree in, model folder, metrics and predictions out."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import ModelBundle
from ..config import parse_hyperparameters
from ..data.records import Dataset, ordered_labels, word_spans
from ..data.windows import WordTokenizer
from ..errors import TrainingInterrupted, UserError
from ..inference.onnx_engine import ONNX_DIR
from ..inference.postprocess import (
    classif_prediction,
    multilabel_prediction,
    ner_prediction,
    regression_prediction,
)
from ..sagemaker import SageMakerEnv
from ..tasks import CLASSIF, MULTILABEL, NER, REGRESSION, get_task
from . import metrics as task_metrics
from .arguments import training_arguments
from .checkpoints import (
    foreign_checkpoint_reason,
    latest_complete_checkpoint,
    mean_training_loss,
)
from .distributed import agreed_checkpoint, log_share, share_first_process_weights
from .features import EncodedSplit, LengthSortedSplit, encode_split
from .lora import final_model, is_lora, with_lora
from .model_loading import load_tokenizer_and_model, resolve_model_source
from .outputs import check_artifacts, check_weights_finite, finite_or_null, writing
from .predictions import example_outputs, gold_and_pred
from .splits import Splits, read_splits

log = logging.getLogger("hfsm.train")


def check_order(split: EncodedSplit, label_ids: Any) -> None:
    """Fail loudly if evaluation outputs do not come back in the dataset's order.

    Windows are mapped back to examples by position; transformers 5 applies length grouping to
    evaluation too (see :class:`JobTrainer`), which once scrambled every metric silently; evaluation
    now runs longest first (:class:`LengthSortedSplit`) and outputs are restored to dataset order.
    """
    if label_ids is None:
        return
    label_ids = np.asarray(label_ids)
    if len(label_ids) != len(split.features):
        raise RuntimeError(f"evaluation returned {len(label_ids)} rows for {len(split.features)} features")
    for row in (0, len(split.features) // 2, len(split.features) - 1):
        expected = np.asarray(split.features[row]["labels"], dtype=label_ids.dtype)
        got = label_ids[row][: expected.size] if expected.ndim else label_ids[row]
        if not np.allclose(np.asarray(got).reshape(expected.shape), expected):
            raise RuntimeError(f"evaluation outputs are not in dataset order (row {row})")


class TrainingRun:
    """One training job; each step is a method so that the flow reads top to bottom in :meth:`run`."""

    def __init__(self, env: SageMakerEnv) -> None:
        self.env = env
        self.config = parse_hyperparameters(env.hyperparameters)
        self.task = get_task(self.config.task_name)
        # set by run() once the data is read (labels) and after training (threshold)
        self.labels: list[str] = []
        self.label2id: dict[str, int] = {}
        self.id2label: dict[int, str] = {}
        self.threshold = 0.5
        # dev outputs of the latest evaluation, reused when that evaluation's checkpoint is the best
        self._last_dev_outputs: list[np.ndarray] | None = None
        # set by run() with the trainer: whether SIGTERM arrived, and the step reached
        self._sigterm: Any = None
        self._job_trainer: Any = None

    def run(self) -> dict[str, Any]:
        from transformers import set_seed

        from ..logs import route_transformers_logs

        route_transformers_logs()  # our line format; no progress bars or escapes in CloudWatch

        started = time.monotonic()
        config, task = self.config, self.task
        splits = read_splits(self.env, config)
        labels = self._labels(splits)
        self.labels = labels
        self.label2id = {name: i for i, name in enumerate(labels)}
        # before the model loads: an optimizer, schedule or metric that cannot work fails in seconds
        arguments = training_arguments(config, task, self.env.checkpoint_dir, splits.dev is not None)
        source = resolve_model_source(config, self.env)
        log.info("task %s, model %s, %d labels", task.name, source, len(labels))
        set_seed(config.seed)
        tokenizer, model = load_tokenizer_and_model(source, task, labels, config)
        model_type = model.config.model_type
        if config.apply_lora:
            model = with_lora(model, config, task)
        self.id2label = {i: name for i, name in enumerate(labels)}
        wt = WordTokenizer(tokenizer, config.max_seq_length) if task.token_level else None
        encoded = {
            name: self._encode(split, tokenizer, wt)
            for name, split in (("train", splits.train), ("dev", splits.dev), ("test", splits.test))
            if split is not None
        }
        log.info("features: %s", {name: len(split) for name, split in encoded.items()})

        trainer, sigterm = self._trainer(arguments, model, tokenizer, encoded, splits)
        self._sigterm, self._job_trainer = sigterm, trainer
        resume = agreed_checkpoint(latest_complete_checkpoint(self.env.checkpoint_dir))
        if resume is not None:
            reason = foreign_checkpoint_reason(resume, model_type, self.id2label)
            if reason is not None:
                raise UserError(
                    f"The checkpoint {resume} is not this job's: {reason}. It came from another job (a "
                    "reused checkpoint_s3_uri?): give this job an empty checkpoint location, or delete it."
                )
            log.info("resuming from checkpoint %s", resume)
        train_result = self._train_or_resume(trainer, resume)
        self._stop_if_interrupted()
        check_weights_finite(trainer.model, trainer.state.global_step, config.learning_rate)
        share_first_process_weights(trainer.model)
        args = trainer.args
        log_share(
            args.process_index,
            args.world_size,
            trainer.features_seen,
            len(encoded["train"]),
            trainer.state.global_step,
            args.per_device_train_batch_size,
            args.gradient_accumulation_steps,
        )

        trainer.compute_metrics = None
        threshold = config.multilabel_threshold
        results: dict[str, Any] = {}
        evaluated: dict[str, tuple[Any, Any]] = {}  # gold and predictions per split, for the report
        dev_outputs = None
        if "dev" in encoded:
            dev_outputs = self._best_dev_outputs(trainer, encoded["dev"])
        if task.name == MULTILABEL and threshold is None:
            threshold = self._tune_threshold(splits.dev, dev_outputs)
        self.threshold = threshold if threshold is not None else 0.5
        for name, outputs in (
            ("dev", dev_outputs),
            ("test", self._outputs(trainer, encoded["test"]) if "test" in encoded else None),
        ):
            if outputs is None:
                continue
            split = getattr(splits, name)
            gold, pred = gold_and_pred(task.name, split.examples, outputs, self.id2label, self.label2id)
            evaluated[name] = (gold, pred)
            _, detail = task_metrics.score(
                task.name, gold, pred, labels, self.threshold, seqeval_mode=config.seqeval_mode
            )
            results[name] = detail
            for line in task_metrics.metric_lines(name, task_metrics.summarize_detail(detail)):
                log.info(line)
            if name == "test" and trainer.is_world_process_zero():
                self._write_predictions(split, outputs)
        train_metrics = dict(train_result.metrics)
        whole_run_loss = mean_training_loss(trainer.state.log_history, trainer.state.global_step)
        if whole_run_loss is not None:  # the Trainer's own covers only the steps since a resume
            train_metrics["train_loss"] = whole_run_loss
        train_metrics["train_examples"] = len(splits.train.examples)
        train_metrics["train_features"] = len(encoded["train"])
        train_metrics["global_step"] = trainer.state.global_step
        train_metrics["packed_batches"] = trainer.packing is True
        train_metrics["wall_seconds"] = round(time.monotonic() - started, 2)
        results["train"] = train_metrics
        log.info("train_loss=%.6f", train_metrics.get("train_loss", float("nan")))
        self._save(trainer, tokenizer, results)
        if trainer.is_world_process_zero():  # after the model and metrics: a failure here only warns
            from .report import write_report_or_warn

            write_report_or_warn(
                self.env.output_data_dir,
                task.name,
                results,
                labels,
                evaluated,
                trainer.state.log_history,
                args.metric_for_best_model,
                args.greater_is_better is not False,
                self.threshold,
            )
        return results

    def _labels(self, splits: Splits) -> list[str]:
        if self.task.name == REGRESSION:
            return []
        names = set(splits.train.labels)
        for split in (splits.dev, splits.test):
            if split is not None:
                names |= split.labels
        labels = ordered_labels(self.task.name, names)
        if self.task.name == CLASSIF and len(labels) < 2:
            raise UserError(f"classif needs at least 2 classes; the data has only {labels}.")
        if self.task.name == MULTILABEL and not labels:
            raise UserError("multilabel-classif data has no labels at all.")
        return labels

    def _encode(self, split: Dataset, tokenizer: Any, wt: WordTokenizer | None) -> EncodedSplit:
        c = self.config
        return encode_split(
            self.task.name,
            split.examples,
            tokenizer,
            wt,
            self.label2id,
            max_seq_length=c.max_seq_length,
            stride=c.stride,
            label_all_tokens=c.label_all_tokens,
            use_bbox=c.use_bbox,
        )

    def _trainer(
        self, args: Any, model: Any, tokenizer: Any, encoded: dict[str, EncodedSplit], splits: Splits
    ) -> tuple:
        import torch
        from transformers import EarlyStoppingCallback
        from transformers.trainer_callback import PrinterCallback

        from ..data.collate import Collator
        from .callbacks import (
            LogAtCheckpointCallback,
            LogLinesCallback,
            PackingStateCallback,
            ResumeAtEndCallback,
            SigtermCallback,
        )
        from .losses import TaskLoss
        from .trainer import JobTrainer

        sigterm = SigtermCallback()
        packing_state = PackingStateCallback()
        callbacks: list = [
            LogLinesCallback(),
            sigterm,
            LogAtCheckpointCallback(),
            packing_state,  # before ResumeAtEnd, which ends a resume at the last step in on_train_begin
            ResumeAtEndCallback(),
        ]
        from .report import tensorboard_callback  # output/tensorboard (transformers 5 has no logging_dir)

        tensorboard = tensorboard_callback(self.env.output_dir / "tensorboard")
        if tensorboard is not None:
            callbacks.append(tensorboard)
        if self.config.early_stopping_patience and args.eval_strategy != "no":
            callbacks.append(
                EarlyStoppingCallback(early_stopping_patience=self.config.early_stopping_patience)
            )
        compute = None
        dev_view = None
        if "dev" in encoded:
            dev_split, dev_examples = encoded["dev"], splits.dev.examples  # type: ignore[union-attr]
            dev_view = LengthSortedSplit.of(dev_split)
            threshold = self.config.multilabel_threshold or 0.5

            def compute(prediction: Any) -> dict[str, float]:
                outputs = self._restored_outputs(dev_view, prediction)
                self._last_dev_outputs = outputs
                gold, pred = gold_and_pred(
                    self.task.name, dev_examples, outputs, self.id2label, self.label2id
                )
                summary, _ = task_metrics.score(
                    self.task.name, gold, pred, self.labels, threshold, seqeval_mode=self.config.seqeval_mode
                )
                return summary

        collator = Collator(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            pad_to_multiple_of=8 if torch.cuda.is_available() else None,
        )
        trainer = JobTrainer(
            model=model,
            args=args,
            pack_sequences=self.config.pack_sequences,
            train_dataset=encoded["train"],
            eval_dataset=dev_view,
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=compute,
            compute_loss_func=TaskLoss(self.task.name, self._class_weights(encoded["train"])),
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # prints raw dicts; LogLinesCallback logs readable lines
        packing_state.trainer = trainer
        return trainer, sigterm

    def _class_weights(self, train: EncodedSplit) -> list[float] | None:
        """The loss weight of each label (``class_weights``), from the labels training sees."""
        from .losses import class_weight_vector

        if self.config.class_weights == "none":
            return None
        counts: Counter[int] = Counter()
        for feature in train.features:
            labels = feature["labels"]  # NER: one per sub-token, -100 where unlabelled; classif: one
            counts.update([label for label in labels if label >= 0] if isinstance(labels, list) else [labels])
        weights = class_weight_vector(self.config.class_weights, counts, self.labels)
        assert weights is not None
        log.info(
            "class weights: %s", {name: round(w, 4) for name, w in zip(self.labels, weights, strict=True)}
        )
        return weights

    def _outputs(self, trainer: Any, split: EncodedSplit) -> list[np.ndarray]:
        view = LengthSortedSplit.of(split)
        return self._restored_outputs(view, trainer.predict(view))

    def _restored_outputs(self, view: LengthSortedSplit, prediction: Any) -> list[np.ndarray]:
        """Per-example outputs of a prediction over ``view``, checked to be back in dataset order."""
        logits = prediction.predictions
        logits = view.restore(np.asarray(logits[0] if isinstance(logits, tuple) else logits))
        label_ids = prediction.label_ids
        check_order(view.split, None if label_ids is None else view.restore(np.asarray(label_ids)))
        return example_outputs(self.task.name, view.split, logits)

    def _best_dev_outputs(self, trainer: Any, split: EncodedSplit) -> list[np.ndarray]:
        """Dev outputs of the restored best checkpoint: those of its evaluation when that was the latest.

        The best checkpoint is reloaded at the end of training; when it is the one evaluated last, its
        dev outputs are already at hand, and predicting dev again would only cost time.
        """
        evaluated = [entry["step"] for entry in trainer.state.log_history if "eval_runtime" in entry]
        latest = evaluated[-1] if evaluated else None
        if self._last_dev_outputs is not None and latest == trainer.state.best_global_step:
            log.info("dev outputs of the best checkpoint (step %d) taken from its evaluation", latest)
            return self._last_dev_outputs
        return self._outputs(trainer, split)

    def _tune_threshold(self, dev: Dataset | None, outputs: list[np.ndarray] | None) -> float:
        if dev is None or outputs is None:
            log.info("no dev split: multilabel threshold 0.5")
            return 0.5
        gold, probs = gold_and_pred(MULTILABEL, dev.examples, outputs, self.id2label, self.label2id)
        threshold = task_metrics.tune_threshold(gold, probs, self.labels)
        log.info("multilabel threshold tuned on dev: %.2f", threshold)
        return threshold

    def _write_predictions(self, split: Dataset, outputs: list[np.ndarray]) -> None:
        self._stop_if_interrupted()
        lines = [
            json.dumps(finite_or_null(self._prediction_record(example, output)), ensure_ascii=False) + "\n"
            for example, output in zip(split.examples, outputs, strict=True)
        ]
        out = self.env.output_data_dir
        with writing("the test predictions", out / "test_predictions.jsonl"):
            out.mkdir(parents=True, exist_ok=True)
            with (out / "test_predictions.jsonl").open("w", encoding="utf-8") as handle:
                handle.writelines(lines)

    def _prediction_record(self, example: Any, output: np.ndarray) -> dict[str, Any]:
        task = self.task.name
        if task == NER:
            prediction = ner_prediction(
                output,
                self.id2label,
                example.text,
                word_spans(example.text),
                example.boxes if self.config.use_bbox else None,
            )
            return {"text": example.text, "labels": example.tags, **prediction}
        if task == CLASSIF:
            prediction = classif_prediction(output, self.id2label)
        elif task == MULTILABEL:
            prediction = multilabel_prediction(output, self.id2label, self.threshold)
        else:
            prediction = regression_prediction(output)
        return {"text": example.text, "labels": example.label, **prediction}

    def _save(self, trainer: Any, tokenizer: Any, results: dict[str, Any]) -> None:
        """Write the model folder and metrics; any error here fails the job (never exit 0 without them).

        With several processes, the one of rank 0 writes them: the others hold the same weights.
        """
        self._stop_if_interrupted()
        if not trainer.is_world_process_zero():
            log.info("process %d: the model and metrics are written by process 0", trainer.args.process_index)
            return
        model_dir = self.env.model_dir
        with writing("the model", model_dir):
            model_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(model_dir / ONNX_DIR, ignore_errors=True)  # an earlier run's, for other weights
            if is_lora(trainer.model):
                trainer.model = final_model(trainer.model, model_dir, self.config.merge_lora_weights)
            trainer.save_model(str(model_dir))
            tokenizer.save_pretrained(str(model_dir))
            c = self.config
            ModelBundle(
                task=self.task.name,
                max_seq_length=c.max_seq_length,
                stride=c.stride,
                use_bbox=c.use_bbox,
                threshold=self.threshold if self.task.name == MULTILABEL else None,
            ).save(model_dir)
            for stale in model_dir.glob("training_args.bin"):
                stale.unlink()  # a pickle; the model folder holds none
        if self.config.export_onnx:
            results["onnx_export"] = self._export_onnx(model_dir)
        out = self.env.output_data_dir
        with writing("the metrics", out / "metrics.json"):
            out.mkdir(parents=True, exist_ok=True)
            # strict JSON: a metric that is undefined (Pearson of constant predictions) is null, not NaN
            (out / "metrics.json").write_text(
                json.dumps(finite_or_null(results), indent=2, allow_nan=False) + "\n", encoding="utf-8"
            )
        check_artifacts(model_dir, out / "metrics.json")
        log.info("model saved to %s, metrics to %s", model_dir, out / "metrics.json")

    def _export_onnx(self, model_dir: Path) -> dict[str, Any]:
        """``model/onnx`` for ONNX Runtime serving; what came of it, for ``metrics.json``.

        An export that fails (an architecture the exporter cannot trace, a graph or tokenizer that
        answers differently from torch's) is logged and reported, and the job goes on: the model it
        trained is whole and serves with torch, and a failed job would not upload it.
        """
        from ..inference.onnx_export import export_onnx

        self._stop_if_interrupted()
        try:
            report = export_onnx(model_dir, trust_remote_code=self.config.trust_remote_code)
        except Exception as exc:
            shutil.rmtree(model_dir / ONNX_DIR, ignore_errors=True)
            fault = not isinstance(exc, UserError)  # a refusal says why; anything else gets its traceback
            log.error("ONNX export failed, model/ serves with torch only: %s", exc, exc_info=fault)
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "folder": ONNX_DIR,
            "seconds": round(report.seconds, 1),
            "fp32_max_relative_diff": report.fp32_max_relative_diff,
            "int8_max_relative_diff": report.int8_max_relative_diff,
            "int8_top_agreement_pct": report.int8_top_agreement_pct,
        }

    def _train_or_resume(self, trainer: Any, resume: Path | None) -> Any:
        """Train, from ``resume`` when given; a checkpoint at the last step only restores the result.

        That checkpoint's weights and state are loaded by the Trainer; the best checkpoint replaces
        them as it would at the end of training, and the loss is that of the whole run.
        """
        from transformers.trainer_utils import TrainOutput

        from .callbacks import TrainingAlreadyDone

        try:
            return trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        except TrainingAlreadyDone as done:
            log.info("checkpoint %s is at the end of training (%s): evaluating and saving", resume, done)
        state = trainer.state
        if trainer.args.load_best_model_at_end and state.best_model_checkpoint is not None:
            trainer._load_best_model()  # what the Trainer does at the end of train()
        loss = mean_training_loss(state.log_history, state.global_step)
        metrics = {"train_runtime": 0.0, "total_flos": state.total_flos, "epoch": state.epoch}
        return TrainOutput(state.global_step, float("nan") if loss is None else loss, metrics)

    def _stop_if_interrupted(self) -> None:
        """Raise :class:`TrainingInterrupted` once SIGTERM has arrived, before anything is written.

        The signal may also come after the last step, during the final evaluation or the test
        predictions; the last step is checkpointed by then (the Trainer saves at the end of training),
        so the re-run resumes there and only repeats the predictions and the writing. An interrupted
        job writes nothing to ``model/``: a half-written or unfinished model must not pass for a result.
        """
        if self._sigterm is None or not self._sigterm.received:
            return
        step = self._job_trainer.state.global_step
        checkpoint = latest_complete_checkpoint(self.env.checkpoint_dir)
        saved = (
            f"checkpoint {checkpoint} was saved"
            if checkpoint is not None
            else f"no complete checkpoint is in {self.env.checkpoint_dir}"
        )
        raise TrainingInterrupted(
            f"Training stopped by SIGTERM at step {step}; {saved}. Run the job again with the same "
            "checkpoint location to resume."
        )


def train(env: SageMakerEnv) -> dict[str, Any]:
    from .distributed import close_process_group

    try:
        results = TrainingRun(env).run()
    except BaseException:
        close_process_group(finished=False)
        raise
    close_process_group(finished=True)
    return results
