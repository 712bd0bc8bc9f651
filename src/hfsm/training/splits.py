"""The job's train/dev/test datasets: every channel file read in its format and parsed for the task."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import TrainConfig
from ..data.formats import Columns, DataFile, read_files
from ..data.reading import locate_splits
from ..data.records import Dataset, iob_report, parse_rows
from ..sagemaker import SageMakerEnv
from ..tasks import NER

log = logging.getLogger("hfsm.train")


@dataclass
class Splits:
    train: Dataset
    dev: Dataset | None
    test: Dataset | None


def read_splits(env: SageMakerEnv, config: TrainConfig) -> Splits:
    """Read and parse each split in its format; for NER, log each split's orphan ``I-`` tags.

    The orphan report is a warning unless ``repair_iob`` rewrote them: they are slips a person should
    see (the first few with file and line), and with ``seqeval_mode=strict`` gold orphans in dev/test
    are entities the metrics do not count.
    """
    ner = config.task_name == NER
    files = locate_splits(env.input_data_dir, config.input_format, ner=ner)
    bbox_col = config.bbox_column if config.use_bbox else None
    columns = Columns(
        text=config.text_column,
        labels=config.label_column,
        bbox=bbox_col,
        tokens_field=config.tokens_field,
        tags_field=config.tags_field,
    )

    def parse(name: str, data_files: list[DataFile]) -> Dataset | None:
        if not data_files:
            return None
        notes: list[str] = []
        dataset = parse_rows(
            config.task_name,
            read_files(data_files, columns, notes),
            text_col=config.text_column,
            label_col=config.label_column,
            bbox_col=bbox_col,
            repair_iob=config.repair_iob,
        )
        for note in notes:
            log.info("data %s: %s", name, note)
        if ner:
            report = f"iob: {iob_report(name, dataset)}"
            if dataset.orphans and not dataset.repaired:
                if name != "train" and config.seqeval_mode == "strict":
                    report += "; with seqeval_mode=strict these gold I- tags start no entity"
                log.warning(report)
            else:
                log.info(report)
        return dataset

    train = parse("train", files.train)
    assert train is not None
    log.info(
        "data: train %s, dev %s, test %s",
        [str(f) for f in files.train],
        [str(f) for f in files.dev],
        [str(f) for f in files.test],
    )
    return Splits(train=train, dev=parse("dev", files.dev), test=parse("test", files.test))
