"""Nothing unpickles untrusted files, nothing evaluates data, remote code stays off by default."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from conftest import quick_hyperparameters
from hfsm.config import parse_hyperparameters
from hfsm.errors import UserError
from hfsm.inference.predictor import Predictor
from hfsm.serving.settings import ServingSettings
from sagemaker_tree import DATA_DIR, TrainResult, make_tree, run_train

SRC = Path(__file__).parents[1] / "src" / "hfsm"


def calls_in_source() -> list[tuple[Path, ast.Call]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [(path, node) for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return found


def imported_modules() -> list[tuple[Path, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path, alias.name.split(".")[0]) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path, node.module.split(".")[0]))
    return found


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_source_never_unpickles_or_evaluates() -> None:
    offenders = []
    for path, call in calls_in_source():
        name = dotted(call.func)
        where = f"{path.relative_to(SRC)}:{call.lineno} {name}"
        if name in {"eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "marshal.loads"}:
            offenders.append(where)
        if name == "torch.load":
            weights_only = [k for k in call.keywords if k.arg == "weights_only"]
            if not (
                weights_only
                and isinstance(weights_only[0].value, ast.Constant)
                and weights_only[0].value.value
            ):
                offenders.append(where + " without weights_only=True")
    assert not offenders, offenders
    unpicklers = {"pickle", "dill", "cloudpickle", "marshal"}
    imports = [f"{path.relative_to(SRC)}: {name}" for path, name in imported_modules() if name in unpicklers]
    assert not imports, imports


def test_remote_code_is_off_unless_asked_for() -> None:
    assert parse_hyperparameters({"task_name": "ner"}).trust_remote_code is False
    assert ServingSettings.from_environ({}).predict.trust_remote_code is False
    assert parse_hyperparameters({"task_name": "ner", "trust_remote_code": "true"}).trust_remote_code is True


class Tripwire:
    """Unpickling this creates ``marker``: proof that somebody executed the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def pickle_only_copy(model_dir: Path, target: Path, marker: Path) -> Path:
    """The model folder with its safetensors weights replaced by a booby-trapped pytorch_model.bin."""
    import torch

    shutil.copytree(model_dir, target)
    for weights in target.glob("model*.safetensors*"):
        weights.unlink()
    torch.save({"weights": Tripwire(marker)}, target / "pytorch_model.bin")
    return target


def test_serving_refuses_pickled_weights_without_running_them(
    trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-was-executed"
    folder = pickle_only_copy(trained["ner"].model_dir, tmp_path / "model", marker)
    with pytest.raises(UserError, match="holds objects other than tensors"):
        Predictor.load(folder)
    assert not marker.exists()


def test_training_refuses_a_pickled_backbone_without_running_it(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-was-executed"
    backbone = pickle_only_copy(base_models["bert"], tmp_path / "backbone", marker)
    tree = make_tree(tmp_path / "tree", DATA_DIR / "ner", quick_hyperparameters("ner", backbone))
    result = run_train(tree)
    assert result.returncode == 1, result.output[-3000:]
    assert result.failure is not None and "safetensors only" in result.failure
    assert not marker.exists()


def test_trained_model_folder_holds_no_pickle(trained: dict[str, TrainResult]) -> None:
    for result in trained.values():
        names = {path.name for path in result.model_dir.iterdir()}
        assert not {name for name in names if name.endswith((".bin", ".pt", ".pth", ".pkl"))}, names
        assert json.loads((result.model_dir / "hfsm.json").read_text())["task"]
