"""Custom inference code: ``code/inference.py`` in the model folder, as SageMaker inference toolkits read it.

The script may define ``model_fn(model_dir)``, ``input_fn(body, content_type)``,
``predict_fn(data, model)``, ``output_fn(prediction, accept)``, or ``transform_fn(model, body,
content_type, accept)`` instead of the last three; each may take a trailing ``context`` argument
(its ``system_properties`` hold ``model_dir`` and ``gpu_id``). What it leaves out is ours:

* ``model_fn``: this image's model for the folder, a callable ``model(inputs, **parameters)`` that
  answers as the transformers pipeline does (the DLC's ``model_fn`` returns a pipeline), with
  :meth:`PipelineModel.predict` for this image's own request forms;
* ``input_fn``: JSON, or JSON Lines as a list of values, one per line;
* ``predict_fn``: ``model(data["inputs"], **data["parameters"])`` as in the DLC; with our model, a
  body in our own forms (``{"data": ...}``, ``{"text": ...}``) gets our schema;
* ``output_fn``: JSON (numpy values as numbers), or JSON Lines when asked for and the prediction is
  a list.

``code/requirements.txt`` is installed by ``serve`` before the workers start. An exception in user
code is a 500 (traceback in the log); :class:`hfsm.errors.RequestError` (with its status) and
:class:`hfsm.errors.UserError` (400) are the client errors user code may raise.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

from ..errors import RequestError, UserError

log = logging.getLogger("hfsm.serve")

HOOKS = {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4}
"""Each hook's arguments without ``context``."""
JSON, JSONLINES = "application/json", "application/jsonlines"


@dataclass(frozen=True)
class UserCode:
    """Where the script is (found in the master, loaded in each worker)."""

    script: Path

    @property
    def requirements(self) -> Path:
        return self.script.parent / "requirements.txt"


def find_user_code(model_dir: Path, environ: Mapping[str, str]) -> UserCode | None:
    """``SAGEMAKER_PROGRAM`` in ``SAGEMAKER_SUBMIT_DIRECTORY`` (a local folder, else ``model/code``),
    or ``model/code/inference.py``; None when there is neither."""
    program = environ.get("SAGEMAKER_PROGRAM", "").strip()
    if program:
        submit = environ.get("SAGEMAKER_SUBMIT_DIRECTORY", "").strip()
        folder = Path(submit) if submit and Path(submit).is_dir() else model_dir / "code"
        script = folder / program
        if not script.is_file():
            raise UserError(f"SAGEMAKER_PROGRAM={program!r}: {script} does not exist")
        return UserCode(script)
    script = model_dir / "code" / "inference.py"
    return UserCode(script) if script.is_file() else None


def install_requirements(code: UserCode) -> None:
    """``pip install -r code/requirements.txt``; a start error naming the file when it fails."""
    path = code.requirements
    if not path.is_file():
        return
    log.info("installing %s", path)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-r", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise UserError(
            f"{path} could not be installed (pip exited {done.returncode}; without network access, "
            f"ship the wheels in code/ and name them in the file):\n{tail}"
        )


class Handler:
    """The hooks of one script, with ours where it defines none; :meth:`invoke` answers a request."""

    def __init__(self, code: UserCode, model_dir: Path, default_model: Callable[[Path], Any]) -> None:
        self.context = SimpleNamespace(
            system_properties={"model_dir": str(model_dir), "gpu_id": os.environ.get("CUDA_VISIBLE_DEVICES")},
            model_dir=str(model_dir),
        )
        module = _import(code.script)
        found = {name: getattr(module, name) for name in HOOKS if callable(getattr(module, name, None))}
        if "transform_fn" in found and {"input_fn", "predict_fn", "output_fn"} & set(found):
            raise UserError(
                f"{code.script}: transform_fn cannot be combined with input_fn, predict_fn or output_fn; "
                "define either transform_fn or the others"
            )
        self.hooks = {name: self._bind(name, fn, code.script) for name, fn in found.items()}
        log.info(
            "custom inference code %s: %s", code.script, ", ".join(sorted(found)) or "no hooks (defaults)"
        )
        started_model = self.hooks.get("model_fn")
        self.model = started_model(str(model_dir)) if started_model else default_model(model_dir)

    def _bind(self, name: str, fn: Callable[..., Any], script: Path) -> Callable[..., Any]:
        expected = HOOKS[name]
        try:
            count = len(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            count = expected
        if count == expected + 1:
            return lambda *args: fn(*args, self.context)
        if count != expected:
            raise UserError(
                f"{script}: {name} takes {count} arguments; expected {expected} (or {expected + 1} with "
                "context)"
            )
        return fn

    def warmup(self) -> None:
        """Our model's own warm-up; a model of the script's ``model_fn`` is ready once it returns."""
        if isinstance(self.model, PipelineModel):
            self.model.predictor.warmup()

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes | str, str]:
        if "transform_fn" in self.hooks:
            result = self.hooks["transform_fn"](self.model, body, content_type, accept)
            if isinstance(result, tuple) and len(result) == 2:
                return result[0], str(result[1])
            return result, accept
        data = self.hooks.get("input_fn", default_input_fn)(body, content_type)
        prediction = self.hooks.get("predict_fn", default_predict_fn)(data, self.model)
        output = self.hooks.get("output_fn", default_output_fn)(prediction, accept)
        if isinstance(output, tuple) and len(output) == 2:
            return output[0], str(output[1])
        return output, accept if "output_fn" in self.hooks else _answer_type(accept, prediction)


def _import(script: Path) -> ModuleType:
    folder = str(script.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the script's own helper modules and vendored packages
    spec = importlib.util.spec_from_file_location(script.stem, script)
    if spec is None or spec.loader is None:
        raise UserError(f"{script} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module
    spec.loader.exec_module(module)
    return module


class PipelineModel:
    """This image's model as the DLC's ``model_fn`` gives it: ``model(inputs, **parameters)``."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def __call__(self, inputs: Any, **parameters: Any) -> Any:
        from ..inference.toolkit_form import FormError, read_toolkit_record

        try:
            record = read_toolkit_record({"inputs": inputs, "parameters": parameters})
        except FormError as exc:
            raise RequestError(str(exc)) from None
        (answer,) = self.predictor.predict([record])
        return _raise_record_error(answer)

    def predict(self, records: list[Any]) -> list[Any]:
        """Our schema for records of our form (``{"text": ...}``), one outcome each."""
        return [_raise_record_error(outcome) for outcome in self.predictor.predict(records)]


def _raise_record_error(outcome: Any) -> Any:
    from ..inference.predictor import RecordError

    if isinstance(outcome, RecordError):
        raise RequestError(outcome.message, outcome.status)
    return outcome


def default_input_fn(body: bytes, content_type: str) -> Any:
    media_type = content_type.split(";")[0].strip().lower() or JSON
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else str(body)
    try:
        if media_type in ("application/jsonlines", "application/x-jsonlines", "application/jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if media_type == JSON:
            return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"invalid JSON in the request body: {exc}") from None
    raise RequestError(f"unsupported Content-Type {content_type!r}; send {JSON} or {JSONLINES}", 415)


def default_predict_fn(data: Any, model: Any) -> Any:
    if isinstance(model, PipelineModel) and not (isinstance(data, dict) and "inputs" in data):
        from ..inference.codecs import decode_json

        items = decode_json(json.dumps(data).encode("utf-8"))
        for item in items:
            if item.error is not None:
                raise RequestError(f"{item.name}: {item.error.message}", item.error.status)
        return {"predictions": model.predict([item.record for item in items])}
    if not isinstance(data, dict):
        return model(data)
    inputs = data.get("inputs", data)
    parameters = data.get("parameters")
    return model(inputs, **parameters) if parameters else model(inputs)


def default_output_fn(prediction: Any, accept: str) -> bytes:
    if _answer_type(accept, prediction) == JSONLINES:
        return "\n".join(_dumps(item) for item in prediction).encode("utf-8")
    return _dumps(prediction).encode("utf-8")


def _answer_type(accept: str, prediction: Any) -> str:
    wanted = accept.split(";")[0].strip().lower()
    return JSONLINES if "jsonl" in wanted and isinstance(prediction, list) else JSON


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable; return it from output_fn encoded")
