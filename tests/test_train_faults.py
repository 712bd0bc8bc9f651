"""Faults of a real ``train`` process: spot interruptions (SIGTERM, SIGKILL), checkpoints cut off while
being written, outputs that cannot be written, and hub tokens that must never be written or logged.

Every job is a subprocess on a real SageMaker tree; faults are real signals and real filesystem states
(a cut-off file, a file where a folder belongs, ``/dev/full`` for a full disk).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import quick_hyperparameters
from hfsm.training.checkpoints import incomplete_reason
from sagemaker_tree import DATA_DIR, TrainResult, make_tree, run_train

GRACE_S = 120.0
"""SageMaker's SIGKILL follows SIGTERM after 120 s; the job must be gone well before."""

FAKE_TOKEN = "hf_FAKEtokenForLeakTests4f9c2e7a1b3d"


def environment(base: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(extra or {}),
    }


@dataclass
class Stopped:
    """A job stopped by a signal sent when a log line matched."""

    base: Path
    returncode: int
    output: str
    exit_seconds: float
    """From the signal to the end of the process."""

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text(encoding="utf-8") if path.exists() else None


def stop_when(base: Path, pattern: str, sig: int = signal.SIGTERM, timeout: float = 300) -> Stopped:
    """Run ``train`` and send ``sig`` as soon as a line of its output matches ``pattern``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hfsm", "train"],
        env=environment(base),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    sent = None
    for line in process.stdout:
        lines.append(line)
        if sent is None and re.search(pattern, line):
            process.send_signal(sig)
            sent = time.monotonic()
    process.wait(timeout=timeout)
    assert sent is not None, f"{pattern!r} never appeared:\n{''.join(lines)[-3000:]}"
    return Stopped(base, process.returncode, "".join(lines), time.monotonic() - sent)


def repeated_data(folder: Path, dev: int = 1, test: int = 1) -> Path:
    """The NER sample with its dev and test rows repeated, for evaluations that take a while."""
    folder.mkdir(parents=True)
    for split, times in (("train", 1), ("dev", dev), ("test", test)):
        header, *rows = (DATA_DIR / "ner" / f"{split}.csv").read_text(encoding="utf-8").splitlines()
        (folder / f"{split}.csv").write_text("\n".join([header, *rows * times]) + "\n", encoding="utf-8")
    return folder


def final_state(base: Path) -> dict:
    """The trainer state of the newest checkpoint: the whole run's log history."""
    newest = max((base / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((newest / "trainer_state.json").read_text(encoding="utf-8"))


def weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def assert_same_weights(left: Path, right: Path, atol: float = 1e-5) -> None:
    a, b = weights(left), weights(right)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=atol, err_msg=name)


def interrupted_checkpoint(stopped: Stopped) -> tuple[int, Path]:
    """The step and checkpoint that the failure reason of an interrupted job names, checked whole."""
    assert stopped.returncode == 143, stopped.output[-3000:]
    assert stopped.failure is not None and stopped.failure.startswith("Interrupted: "), stopped.failure
    match = re.search(r"at step (\d+); checkpoint (\S+) was saved", stopped.failure)
    assert match, stopped.failure
    step, checkpoint = int(match.group(1)), Path(match.group(2))
    assert checkpoint == stopped.base / "checkpoints" / f"checkpoint-{step}"
    assert incomplete_reason(checkpoint, step) is None, "the SIGTERM checkpoint is whole"
    assert not (stopped.base / "model").exists(), "an interrupted job writes no model/"
    assert not (stopped.base / "output" / "data" / "metrics.json").exists()
    assert stopped.exit_seconds < GRACE_S / 2, f"took {stopped.exit_seconds:.0f}s after SIGTERM"
    return step, checkpoint


def loss_log(state: dict, after: int) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e and e["step"] > after}


# --- spot interruption: SIGTERM, checkpoint, exit 143, resume -------------------------------------------


def test_sigterm_mid_training_resumes_to_the_uninterrupted_result(
    tmp_path: Path, base_models: dict[str, Path]
) -> None:
    hyper = quick_hyperparameters("ner", base_models["bert"], max_steps=100, eval_steps=25, logging_steps=5)
    reference = run_train(make_tree(tmp_path / "reference", DATA_DIR / "ner", hyper))
    assert reference.returncode == 0, reference.output[-3000:]

    stopped = stop_when(make_tree(tmp_path / "spot", DATA_DIR / "ner", hyper), r"step 30/100 ")
    step, _ = interrupted_checkpoint(stopped)
    assert 30 <= step < 100, "stopped mid-way, at the end of the step in progress"

    resumed = run_train(stopped.base)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert f"resuming from checkpoint {stopped.base / 'checkpoints' / f'checkpoint-{step}'}" in resumed.output
    assert resumed.failure is None, "the interrupted run's output/failure does not outlive the resume"
    ours, theirs = resumed.metrics(), reference.metrics()
    assert ours["train"]["global_step"] == theirs["train"]["global_step"] == 100
    assert ours["train"]["train_loss"] == pytest.approx(theirs["train"]["train_loss"], rel=1e-4)
    for split in ("dev", "test"):
        for name in ("precision", "recall", "f1", "accuracy"):
            assert ours[split][name] == pytest.approx(theirs[split][name], abs=1e-4), (split, name)
    # same batches, dropout and learning rates after the resume: the same loss at every logged step
    # (the first logging window after the resume is shorter, so it is left out)
    after = (step // 5 + 1) * 5
    ours_log, theirs_log = (
        loss_log(final_state(resumed.base), after),
        loss_log(final_state(reference.base), after),
    )
    assert ours_log.keys() == theirs_log.keys() and len(ours_log) >= 5
    for at, loss in theirs_log.items():
        assert ours_log[at] == pytest.approx(loss, rel=1e-4), at
    assert_same_weights(resumed.model_dir, reference.model_dir, atol=1e-4)


def test_sigterm_during_an_evaluation_checkpoints_the_evaluated_step(
    tmp_path: Path, base_models: dict[str, Path]
) -> None:
    """The signal arrives while dev is evaluated (300 copies of it, a second or two): the job
    checkpoints that step after its evaluation instead of training another one, and the resumed job
    neither loses nor repeats the evaluation."""
    hyper = quick_hyperparameters("ner", base_models["bert"], max_steps=40, eval_steps=20, logging_steps=5)
    base = make_tree(tmp_path / "tree", repeated_data(tmp_path / "data", dev=300), hyper)
    stopped = stop_when(base, r"step 20/40 ")  # logged just before the evaluation of step 20
    step, checkpoint = interrupted_checkpoint(stopped)
    assert step == 20
    saved = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    assert [e["step"] for e in saved["log_history"] if "eval_loss" in e] == [20]

    resumed = run_train(base)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.metrics()["train"]["global_step"] == 40
    assert [e["step"] for e in final_state(base)["log_history"] if "eval_loss" in e] == [20, 40]


def test_sigterm_after_the_last_step_writes_no_model_and_the_rerun_does_not_train_again(
    tmp_path: Path, base_models: dict[str, Path]
) -> None:
    """Stopped while the last step is evaluated and checkpointed: nothing is written to model/; the
    re-run resumes at the last step, trains no further (no step 31), restores the best checkpoint
    and writes the model, metrics and predictions."""
    hyper = quick_hyperparameters("ner", base_models["bert"], max_steps=30, eval_steps=10, logging_steps=5)
    base = make_tree(tmp_path / "tree", repeated_data(tmp_path / "data", test=60), hyper)
    stopped = stop_when(base, r"step 30/30 ")
    step, _ = interrupted_checkpoint(stopped)
    assert step == 30
    assert not (base / "output" / "data" / "test_predictions.jsonl").exists()

    resumed = run_train(base)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert "is at the end of training" in resumed.output
    assert resumed.metrics()["train"]["global_step"] == 30
    assert resumed.metrics()["train"]["packed_batches"] is True, "the checkpoint's packing decision"
    assert not (base / "checkpoints" / "checkpoint-31").exists()
    state = final_state(base)
    best = Path(state["best_model_checkpoint"])
    assert best.is_dir()
    assert_same_weights(resumed.model_dir, best, atol=0)
    assert len((resumed.output_data / "test_predictions.jsonl").read_text().splitlines()) == 16 * 60


# --- checkpoints cut off while being written --------------------------------------------------------


CHECKPOINTED = {"max_steps": 30, "save_steps": 10, "save_total_limit": 0, "logging_steps": 5}
"""No dev split: a checkpoint every 10 steps, all kept; the model is the last step's."""


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory: pytest.TempPathFactory, base_models: dict[str, Path]) -> TrainResult:
    root = tmp_path_factory.mktemp("checkpointed")
    hyper = quick_hyperparameters("ner", base_models["bert"], **CHECKPOINTED)
    base = make_tree(root, {"train": DATA_DIR / "ner" / "train.csv"}, hyper)
    result = run_train(base)
    assert result.returncode == 0, result.output[-3000:]
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == [
        "checkpoint-10",
        "checkpoint-20",
        "checkpoint-30",
    ]
    return result


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def keep_only(folder: Path, *names: str) -> None:
    for child in folder.iterdir():
        if child.name not in names:
            child.unlink()


def truncate_all(checkpoints: Path, name: str) -> None:
    for folder in checkpoints.glob("checkpoint-*"):
        truncate(folder / name)


CUT_OFF: dict[str, tuple[Callable[[Path], None], bool]] = {
    "weights cut off": (lambda ck: truncate(ck / "checkpoint-30" / "model.safetensors"), True),
    "trainer state cut off": (lambda ck: truncate(ck / "checkpoint-30" / "trainer_state.json"), True),
    "optimizer state cut off": (lambda ck: truncate(ck / "checkpoint-30" / "optimizer.pt"), True),
    "only the config written": (lambda ck: keep_only(ck / "checkpoint-30", "config.json"), True),
    "every checkpoint cut off": (lambda ck: truncate_all(ck, "model.safetensors"), False),
}


@pytest.mark.parametrize("case", sorted(CUT_OFF))
def test_a_cut_off_checkpoint_is_skipped_for_the_last_complete_one(
    tmp_path: Path, checkpointed: TrainResult, case: str
) -> None:
    damage, resumes = CUT_OFF[case]
    base = tmp_path / "tree"
    shutil.copytree(checkpointed.base, base)
    shutil.rmtree(base / "model")
    shutil.rmtree(base / "output")
    damage(base / "checkpoints")

    result = run_train(base)
    assert result.returncode == 0, result.output[-3000:]
    assert re.search(
        rf"checkpoint {re.escape(str(base))}/checkpoints/checkpoint-30 is incomplete", result.output
    )
    if resumes:
        assert f"resuming from checkpoint {base}/checkpoints/checkpoint-20" in result.output
    else:
        assert "resuming from checkpoint" not in result.output, "nothing whole: trains from the start"
    assert result.metrics()["train"]["global_step"] == 30
    assert result.metrics()["train"]["train_loss"] == pytest.approx(
        checkpointed.metrics()["train"]["train_loss"], rel=1e-4
    )
    assert_same_weights(result.model_dir, checkpointed.model_dir)


def test_sigkill_while_a_checkpoint_is_written_then_the_rerun_finishes(
    tmp_path: Path, checkpointed: TrainResult, base_models: dict[str, Path]
) -> None:
    """SIGKILL (what ends a spot instance's grace period) the moment checkpoint-20 appears, while the
    Trainer is writing it; the re-run uses checkpoint-20 if it happens to be whole, checkpoint-10
    otherwise, and ends with the uninterrupted run's model."""
    hyper = quick_hyperparameters("ner", base_models["bert"], **CHECKPOINTED)
    base = make_tree(tmp_path / "tree", {"train": DATA_DIR / "ner" / "train.csv"}, hyper)
    target = base / "checkpoints" / "checkpoint-20"
    process = subprocess.Popen(
        [sys.executable, "-m", "hfsm", "train"],
        env=environment(base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not target.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL, "killed before the job ended"
    assert not (base / "model").exists()
    cut_off = incomplete_reason(target, 20) is not None

    result = run_train(base)
    assert result.returncode == 0, result.output[-3000:]
    expected = "checkpoint-10" if cut_off else "checkpoint-20"
    assert f"resuming from checkpoint {base}/checkpoints/{expected}" in result.output
    assert result.metrics()["train"]["global_step"] == 30
    assert_same_weights(result.model_dir, checkpointed.model_dir)


# --- outputs that cannot be written -------------------------------------------------------------------


def _model_is_a_file(base: Path) -> None:
    (base / "model").write_text("not a folder", encoding="utf-8")


def _full_disk_for(relative: str) -> Callable[[Path], None]:
    def prepare(base: Path) -> None:
        target = base / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full volume

    return prepare


def _output_data_is_a_file(base: Path) -> None:
    (base / "output").mkdir()
    (base / "output" / "data").write_text("not a folder", encoding="utf-8")


def _output_is_a_file(base: Path) -> None:
    (base / "output").write_text("not a folder", encoding="utf-8")


UNWRITABLE: dict[str, tuple[Callable[[Path], None], str]] = {
    "model/ is a file": (_model_is_a_file, r"could not write the model to \S+/model: FileExistsError"),
    "disk full while writing the tokenizer": (
        _full_disk_for("model/tokenizer.json"),
        r"could not write the model to \S+/model: .*No space left on device",
    ),
    "output/data is a file": (
        _output_data_is_a_file,
        r"could not write the test predictions to \S+/output/data/test_predictions\.jsonl",
    ),
    "disk full while writing the metrics": (
        _full_disk_for("output/data/metrics.json"),
        r"could not write the metrics to \S+/metrics\.json: OSError: \[Errno 28\] No space left on device",
    ),
    "output/ is a file (no failure file possible)": (
        _output_is_a_file,
        r"could not write the test predictions",
    ),
}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full for a full disk")
@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_outputs_that_cannot_be_written_fail_the_job(
    tmp_path: Path, base_models: dict[str, Path], case: str
) -> None:
    prepare, pattern = UNWRITABLE[case]
    hyper = quick_hyperparameters("ner", base_models["bert"], max_steps=2)
    base = make_tree(tmp_path, {s: DATA_DIR / "ner" / f"{s}.csv" for s in ("train", "test")}, hyper)
    prepare(base)
    result = run_train(base, extra_env={"HF_TOKEN": FAKE_TOKEN})
    assert result.returncode == 2, result.output[-3000:]
    assert re.search(f"OutputError: {pattern}", result.output), result.output[-3000:]
    if (base / "output").is_dir():
        assert result.failure is not None and re.match(f"OutputError: {pattern}", result.failure), (
            result.failure
        )
    assert "Traceback" in result.output, "the traceback is in the log"
    assert_no_token(base, result.output)


# --- hub tokens are never logged or written ---------------------------------------------------------


def files_under(base: Path) -> Iterator[Path]:
    return (path for path in base.rglob("*") if path.is_file() and not path.is_symlink())


def assert_no_token(base: Path, output: str, allowed: tuple[Path, ...] = ()) -> None:
    assert FAKE_TOKEN not in output, "token in the process output"
    leaked = [p for p in files_under(base) if p not in allowed and FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaked, f"token written to {leaked}"


def test_hub_tokens_never_appear_in_logs_or_written_files(
    tmp_path: Path, base_models: dict[str, Path]
) -> None:
    """A successful job (checkpoints with their pickled TrainingArguments, model, metrics, predictions)
    with the token in both environment variables the hub reads, then a job given it as a
    hyperparameter, which fails without repeating it."""
    env = {"HF_TOKEN": FAKE_TOKEN, "HUGGING_FACE_HUB_TOKEN": FAKE_TOKEN}
    hyper = quick_hyperparameters("ner", base_models["bert"], max_steps=4, eval_steps=2)
    base = make_tree(tmp_path / "ok", DATA_DIR / "ner", hyper)
    result = run_train(base, extra_env=env)
    assert result.returncode == 0, result.output[-3000:]
    assert any((base / "checkpoints").rglob("training_args.bin")), "the pickled arguments are checked too"
    assert_no_token(base, result.output)

    base = make_tree(tmp_path / "hyper", DATA_DIR / "ner", {**hyper, "hub_token": FAKE_TOKEN})
    result = run_train(base, extra_env=env)
    assert result.returncode == 1
    assert result.failure is not None and "Unknown hyperparameter 'hub_token'" in result.failure
    given = base / "input" / "config" / "hyperparameters.json"
    assert FAKE_TOKEN in given.read_text(encoding="utf-8"), "the search would find it"
    assert_no_token(base, result.output, allowed=(given,))
