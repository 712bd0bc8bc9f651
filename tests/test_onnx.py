"""The ONNX export and the ONNX Runtime engine: checked exports, the same answers as torch, no torch.

Models are the session's tiny trained ones (BERT for every task, LayoutLM with word boxes), exported
by the real exporter into copies of their folders.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import quick_hyperparameters
from hfsm.errors import UserError
from hfsm.inference import onnx_export
from hfsm.inference.exported_tokenizer import TOKENIZER_FILE, ExportedTokenizer, TokenizerSpec
from hfsm.inference.onnx_engine import INT8_FILE, MANIFEST_FILE, MODEL_FILE, ONNX_DIR, batch_plan
from hfsm.inference.onnx_export import check_tokenizer, export_onnx, logits_producers
from hfsm.inference.predictor import PredictOptions, Predictor
from hfsm.inference.runtime import resolve_runtime
from hfsm.serving.settings import ServingSettings
from hfsm.training.lora import ADAPTER_DIR
from live_server import LiveServer, child_pids, ok_json
from sagemaker_tree import DATA_DIR, TrainResult, make_tree, run_train
from serving_models import always_tagging
from test_predictor import long_text

CASES = ("ner", "classif", "multilabel", "regression", "ner_bbox")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exported(trained: dict[str, TrainResult], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of each trained folder with its ONNX export (float32 and int8)."""
    root = tmp_path_factory.mktemp("exported")
    folders = {}
    for name in CASES:
        folder = root / name
        shutil.copytree(trained[name].model_dir, folder)
        export_onnx(folder)
        folders[name] = folder
    return folders


def records_for(name: str) -> list[dict[str, object]]:
    texts = [
        "Hello from New York , said @paulwalk",
        "x",
        long_text(150),  # several NER windows of 64 sub-tokens; truncated for the other tasks
        "",
        "café ❤️ \ufe0f 東京 U.S. 2024",
        "said @paulwalk in Paris on Monday",
    ]
    if name != "ner_bbox":
        return [{"text": text} for text in texts]
    return [
        {"text": text, "bbox": [[i % 900, 10, i % 900 + 40, 30] for i in range(len(text.split()))]}
        for text in texts
    ]


def test_an_export_holds_checked_graphs_tokenizer_and_manifest(exported: dict[str, Path]) -> None:
    for name, folder in exported.items():
        onnx_dir = folder / ONNX_DIR
        for file in (MODEL_FILE, INT8_FILE, TOKENIZER_FILE, MANIFEST_FILE):
            assert (onnx_dir / file).is_file(), f"{name}: {file}"
        manifest = json.loads((onnx_dir / MANIFEST_FILE).read_text())
        assert manifest["checks"]["fp32_max_relative_diff"] <= onnx_export.FP32_TOLERANCE, name
        assert manifest["token_level"] is name.startswith("ner")
        assert manifest["weights"]["bytes"] == (folder / "model.safetensors").stat().st_size
        expected = {"input_ids", "attention_mask", "token_type_ids"} | (
            {"bbox"} if name == "ner_bbox" else set()
        )
        assert set(manifest["inputs"]) == expected, name
        assert not list(folder.glob(".onnx-export-*")), "the work folder is gone"
    assert (
        json.loads((exported["regression"] / ONNX_DIR / MANIFEST_FILE).read_text())["checks"][
            "int8_top_agreement_pct"
        ]
        is None
    ), "regression has no label to agree on"


def test_onnx_runtime_answers_like_torch_for_every_task(exported: dict[str, Path]) -> None:
    for name, folder in exported.items():
        torch_side = Predictor.load(folder, PredictOptions(runtime="torch", torch_threads=1, max_words=3000))
        onnx_side = Predictor.load(
            folder, PredictOptions(runtime="onnxruntime", torch_threads=1, max_words=3000)
        )
        assert onnx_side.engine.name == "onnxruntime" and torch_side.engine.name == "torch"
        records = records_for(name)
        for got, want in zip(onnx_side.predict(records), torch_side.predict(records), strict=True):
            assert not hasattr(got, "message"), got
            if name.startswith("ner"):
                assert got["pred"] == want["pred"], name
                assert got["proba"] == pytest.approx(want["proba"], abs=1e-4)
                assert [(e["type"], e["start"], e["end"]) for e in got["entities"]] == [
                    (e["type"], e["start"], e["end"]) for e in want["entities"]
                ]
            elif name == "regression":
                assert got["pred"] == pytest.approx(want["pred"], abs=1e-4)
            else:
                assert got["pred"] == want["pred"], name
                assert got["scores"] == pytest.approx(want["scores"], abs=1e-4)


def test_the_int8_graph_serves_every_task(exported: dict[str, Path]) -> None:
    for name, folder in exported.items():
        predictor = Predictor.load(
            folder, PredictOptions(runtime="onnxruntime", quantize="int8", torch_threads=1)
        )
        assert predictor.engine.description == f"onnxruntime, {INT8_FILE}, one batch at a time"
        predictor.warmup()
        answers = predictor.predict(records_for(name)[:2])
        if name.startswith("ner"):
            assert len(answers[0]["pred"]) == 7
        elif name == "classif":
            assert sum(answers[0]["scores"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("count", "batch_size", "threads", "plan"),
    [
        (0, 8, 2, []),
        (1, 8, 2, [(0, 1)]),  # a lone record: one batch, no split
        (8, 8, 2, [(0, 4), (4, 4)]),  # eight clients' records: a batch per thread
        (5, 8, 2, [(0, 3), (3, 2)]),
        (20, 8, 2, [(0, 8), (8, 8), (16, 4)]),  # enough for both threads: full batches
        (20, 8, 1, [(0, 8), (8, 8), (16, 4)]),
        (3, 8, 4, [(0, 1), (1, 1), (2, 1)]),
        (7, 1, 2, [(i, 1) for i in range(7)]),
    ],
)
def test_batch_plan_gives_every_thread_a_batch_and_none_over_the_size(
    count: int, batch_size: int, threads: int, plan: list[tuple[int, int]]
) -> None:
    assert batch_plan([12] * count, batch_size, threads) == plan
    assert sum(size for _, size in plan) == count


@pytest.mark.parametrize(
    ("lengths", "batch_size", "threads", "plan"),
    [
        # 4 + 4 would cost 4 x 40 = 160 and 4 x 18 = 72 padded tokens; 3 + 5 cost 120 and 100
        ([40, 30, 25, 20, 18, 15, 10, 8], 8, 2, [(0, 3), (3, 5)]),
        # one long record against seven short ones: it runs alone, the others together
        ([120, 10, 10, 10, 9, 9, 8, 8], 8, 2, [(0, 1), (1, 7)]),
        # never more than batch_size rows, even where that leaves the threads uneven
        ([120, 10, 10, 10, 9, 9, 8, 8], 4, 2, [(0, 4), (4, 4)]),
        ([30, 20, 10], 8, 3, [(0, 1), (1, 1), (2, 1)]),
        ([30, 20, 10], 8, 1, [(0, 3)]),
    ],
)
def test_batch_plan_evens_out_the_threads_work(
    lengths: list[int], batch_size: int, threads: int, plan: list[tuple[int, int]]
) -> None:
    assert batch_plan(lengths, batch_size, threads) == plan


def test_batch_plan_never_costs_more_than_equal_counts() -> None:
    """On random length-sorted batches, the costliest batch is never costlier than with equal counts."""
    rng = random.Random(7)
    for _ in range(500):
        lengths = sorted((rng.randint(3, 200) for _ in range(rng.randint(1, 16))), reverse=True)
        plan = batch_plan(lengths, 8, 2)
        assert sum(size for _, size in plan) == len(lengths) and len(plan) <= 2
        assert all(size <= 8 for _, size in plan)
        half = -(-len(lengths) // 2)
        equal = [(start, min(half, len(lengths) - start)) for start in range(0, len(lengths), half)]
        assert max(size * lengths[start] for start, size in plan) <= max(
            size * lengths[start] for start, size in equal
        )


def test_batches_side_by_side_answer_like_one_at_a_time(exported: dict[str, Path]) -> None:
    for name, folder in exported.items():
        serial = Predictor.load(
            folder, PredictOptions(runtime="onnxruntime", torch_threads=1, max_words=3000)
        )
        parallel = Predictor.load(
            folder, PredictOptions(runtime="onnxruntime", torch_threads=2, batch_size=2, max_words=3000)
        )
        assert parallel.engine.description == f"onnxruntime, {MODEL_FILE}, 2 batches at once"
        # a lone batch runs on the two-thread session, several on the one-thread one, side by side
        assert parallel.engine.batch_session is not None and serial.engine.batch_session is None
        alone, want = parallel.predict(records_for(name)[:1])[0], serial.predict(records_for(name)[:1])[0]
        if name == "regression":
            assert alone["pred"] == pytest.approx(want["pred"], abs=1e-5)
        else:
            assert alone["pred"] == want["pred"], name
        records = records_for(name) * 3
        for got, want in zip(parallel.predict(records), serial.predict(records), strict=True):
            assert not hasattr(got, "message"), got
            assert got.keys() == want.keys()
            if name == "regression":
                assert got["pred"] == pytest.approx(want["pred"], abs=1e-5)
            else:
                assert got["pred"] == want["pred"], name
            for key in ("proba", "scores"):
                if key in want:
                    assert got[key] == pytest.approx(want[key], abs=1e-5), name


def test_the_classifier_product_stays_float_in_the_int8_graph(exported: dict[str, Path]) -> None:
    import onnx

    for name in ("ner", "classif"):
        onnx_dir = exported[name] / ONNX_DIR
        (producer,) = logits_producers(onnx_dir / MODEL_FILE)
        assert "classifier" in producer, producer
        quantized = onnx.load(str(onnx_dir / INT8_FILE)).graph
        kept = [node for node in quantized.node if node.name.startswith(producer)]
        assert [node.op_type for node in kept] in (["MatMul"], ["Gemm"], ["MatMul", "Add"]), kept
        assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in quantized.node)


def test_a_worker_on_the_export_imports_neither_torch_nor_transformers(exported: dict[str, Path]) -> None:
    environ = {"HFSM_MODEL_DIR": str(exported["ner"]), "HFSM_DEVICE": "cpu"}
    program = (
        "import sys\n"
        "from hfsm.serving.settings import ServingSettings\n"
        "from hfsm.serving.app import load_predictor\n"
        f"settings = ServingSettings.from_environ({environ!r})\n"
        "predictor = load_predictor(settings.model_dir, settings.predict)\n"
        "predictor.warmup()\n"
        "print(predictor.predict([{'text': 'Hello from New York'}])[0]['pred'])\n"
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    tags, imported = done.stdout.strip().splitlines()[-2:]
    assert len(json.loads(tags.replace("'", '"'))) == 4
    assert imported == "[]"


def test_auto_takes_the_export_only_where_it_answers_like_torch(
    exported: dict[str, Path], trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    folder, plain = exported["ner"], trained["ner"].model_dir
    cpu = {"CUDA_VISIBLE_DEVICES": ""}
    assert resolve_runtime(folder, PredictOptions(), cpu) == "onnxruntime"
    assert resolve_runtime(folder, PredictOptions(quantize="int8"), cpu) == "onnxruntime"
    assert resolve_runtime(plain, PredictOptions(), cpu) == "torch"
    assert resolve_runtime(folder, PredictOptions(autocast="bf16"), cpu) == "torch"
    assert resolve_runtime(folder, PredictOptions(pack_sequences=True), cpu) == "torch"
    assert resolve_runtime(folder, PredictOptions(), {"CUDA_VISIBLE_DEVICES": "0"}) == "torch"
    assert resolve_runtime(folder, PredictOptions(runtime="torch"), cpu) == "torch"
    no_int8 = tmp_path / "no-int8"
    shutil.copytree(folder, no_int8)
    (no_int8 / ONNX_DIR / INT8_FILE).unlink()
    assert resolve_runtime(no_int8, PredictOptions(quantize="int8"), cpu) == "torch"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (PredictOptions(runtime="onnxruntime", device="cuda"), "CPU only"),
        (PredictOptions(runtime="onnxruntime", autocast="bf16"), "HFSM_AUTOCAST is a torch option"),
        (PredictOptions(runtime="onnxruntime", pack_sequences=True), "HFSM_PACK_SEQUENCES=true needs torch"),
        (PredictOptions(runtime="tensorrt"), "expected one of auto, torch, onnxruntime"),
    ],
)
def test_onnxruntime_refuses_torch_only_options(
    exported: dict[str, Path], options: PredictOptions, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        resolve_runtime(exported["ner"], options, {})


def test_onnxruntime_without_an_export_says_how_to_make_one(trained: dict[str, TrainResult]) -> None:
    with pytest.raises(UserError, match="export_onnx=true, or run `python -m hfsm local export-onnx"):
        Predictor.load(trained["ner"].model_dir, PredictOptions(runtime="onnxruntime"))
    with pytest.raises(UserError, match="HFSM_RUNTIME"):
        ServingSettings.from_environ({"HFSM_RUNTIME": "tensorflow"})
    assert ServingSettings.from_environ({"HFSM_RUNTIME": "OnnxRuntime"}).predict.runtime == "onnxruntime"
    assert ServingSettings.from_environ({}).predict.runtime == "auto"


def test_an_export_of_other_weights_is_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "stale"
    shutil.copytree(exported["classif"], folder)
    manifest = folder / ONNX_DIR / MANIFEST_FILE
    data = json.loads(manifest.read_text())
    data["weights"]["bytes"] += 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(UserError, match="exported from other weights"):
        Predictor.load(folder, PredictOptions(runtime="onnxruntime"))
    (folder / ONNX_DIR / MODEL_FILE).write_bytes(b"not a graph")
    data["weights"]["bytes"] -= 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(UserError, match="Cannot load the ONNX export"):
        Predictor.load(folder, PredictOptions(runtime="onnxruntime"))


def test_an_export_whose_graph_computes_something_else_writes_nothing(
    trained: dict[str, TrainResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph traced from another model (one that tags every word alike) fails the check against
    the folder's model: no onnx/ folder, no work folder left behind."""
    folder = tmp_path / "model"
    shutil.copytree(trained["ner"].model_dir, folder)
    impostor = always_tagging(trained["ner"].model_dir, tmp_path / "impostor", "B-location")
    from transformers import AutoModelForTokenClassification

    other = AutoModelForTokenClassification.from_pretrained(impostor).eval()
    trace = onnx_export._trace
    monkeypatch.setattr(onnx_export, "_trace", lambda model, *args: trace(other, *args))
    with pytest.raises(UserError, match="does not compute what the model does"):
        export_onnx(folder)
    assert not (folder / ONNX_DIR).exists()
    assert not list(folder.glob(".onnx-export-*"))


def test_an_export_writes_its_onnx_folder_and_nothing_else(
    trained: dict[str, TrainResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing lands in the working directory (ONNX Runtime's shape inference tools write temporary
    graphs there: a 90 MB one once ended up in this repository from an experiment) nor stays in the
    temporary directory, and the model folder gains only onnx/."""
    folder = tmp_path / "model"
    shutil.copytree(trained["classif"].model_dir, folder)
    before = {path.relative_to(folder) for path in folder.rglob("*")}
    workdir, temporary = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    temporary.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    export_onnx(folder)
    assert list(workdir.iterdir()) == []
    assert list(temporary.iterdir()) == []
    added = {path.relative_to(folder) for path in folder.rglob("*")} - before
    onnx_dir = Path(ONNX_DIR)
    assert added == {onnx_dir} | {
        onnx_dir / name for name in (MODEL_FILE, INT8_FILE, MANIFEST_FILE, TOKENIZER_FILE)
    }


def test_an_unmerged_lora_adapter_is_not_exported(trained: dict[str, TrainResult], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(trained["ner"].model_dir, folder)
    (folder / ADAPTER_DIR).mkdir()
    (folder / ADAPTER_DIR / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="merge_lora_weights=true"):
        export_onnx(folder)


def test_the_exported_tokenizer_encodes_the_test_data_like_transformers(exported: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    texts = []
    for path in sorted(DATA_DIR.glob("*/*.tsv")) + sorted(DATA_DIR.glob("*/*.csv")):
        texts += [line.split("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()[1:200]]
    assert len(texts) > 200
    for name in ("ner", "ner_bbox"):
        onnx_dir = exported[name] / ONNX_DIR
        spec = TokenizerSpec.from_json(json.loads((onnx_dir / MANIFEST_FILE).read_text())["tokenizer"])
        ours = ExportedTokenizer.load(onnx_dir, spec)
        theirs = AutoTokenizer.from_pretrained(exported[name])
        words = [text.split() for text in texts]
        a = theirs(words, is_split_into_words=True, add_special_tokens=False)
        b = ours(words, is_split_into_words=True, add_special_tokens=False)
        assert a["input_ids"] == b["input_ids"]
        assert all(a.word_ids(i) == b.word_ids(i) for i in range(len(words)))
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert (
                theirs(texts, truncation=True, max_length=16)[key]
                == ours(texts, truncation=True, max_length=16)[key]
            )


def test_a_tokenizer_that_encodes_differently_is_refused(exported: dict[str, Path]) -> None:
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    onnx_dir = exported["ner"] / ONNX_DIR
    spec = TokenizerSpec.from_json(json.loads((onnx_dir / MANIFEST_FILE).read_text())["tokenizer"])
    theirs = AutoTokenizer.from_pretrained(exported["ner"])
    cased = ExportedTokenizer.load(onnx_dir, spec)
    cased.backend.normalizer = normalizers.Sequence([])  # no lowercasing, no accent stripping
    with pytest.raises(UserError, match="encodes the probe words differently"):
        check_tokenizer(theirs, cased, 64)
    no_types = ExportedTokenizer.load(
        onnx_dir, TokenizerSpec(**{**spec.to_json(), "model_input_names": ("input_ids", "attention_mask")})
    )
    with pytest.raises(UserError, match="token_type_ids"):
        check_tokenizer(theirs, no_types, 64)


def test_local_export_onnx_command(trained: dict[str, TrainResult], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(trained["classif"].model_dir, folder)
    command = [sys.executable, "-m", "hfsm", "local", "export-onnx", "--model", str(folder), "--no-int8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ONNX export in" in done.stdout
    assert (folder / ONNX_DIR / MODEL_FILE).is_file() and not (folder / ONNX_DIR / INT8_FILE).exists()
    assert json.loads((folder / ONNX_DIR / MANIFEST_FILE).read_text())["int8"] is False
    with pytest.raises(UserError, match=r"needs .*model\.int8\.onnx"):
        Predictor.load(folder, PredictOptions(runtime="onnxruntime", quantize="int8"))
    missing = subprocess.run(
        [sys.executable, "-m", "hfsm", "local", "export-onnx", "--model", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert missing.returncode == 1
    assert "nothing is not a folder" in missing.stdout + missing.stderr


def test_the_server_answers_from_the_export_without_torch_in_its_worker(
    exported: dict[str, Path], trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    """Real gunicorn on the export (HFSM_RUNTIME=auto): the same answers as a torch server, and the
    worker process never maps libtorch."""
    servers = {
        "onnx": LiveServer.start(exported["ner"], tmp_path / "logs", {"HFSM_DEVICE": "cpu"}, "onnx"),
        "torch": LiveServer.start(exported["ner"], tmp_path / "logs", {"HFSM_RUNTIME": "torch"}, "torch"),
    }
    try:
        for server in servers.values():
            server.wait_ready()
        records = records_for("ner")
        body = "\n".join(json.dumps(record) for record in records) + "\n"
        answers = {}
        for name, server in servers.items():
            response = server.post(body, content_type="application/jsonlines")
            answers[name] = [json.loads(line) for line in response.text.splitlines()]
            assert response.status_code == 200, response.text
        assert [a["pred"] for a in answers["onnx"]] == [a["pred"] for a in answers["torch"]]
        assert ok_json(servers["onnx"].get("/ping")) == {"status": "ready"}
        assert "onnxruntime, model.onnx" in servers["onnx"].logs()
        (worker,) = child_pids(servers["onnx"].process.pid)
        maps = Path(f"/proc/{worker}/maps").read_text()
        assert "onnxruntime" in maps and "libtorch" not in maps
    finally:
        for server in servers.values():
            server.stop()


def test_train_with_export_onnx_writes_an_export_that_serves(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    hyperparameters = quick_hyperparameters("classif", base_models["bert"], export_onnx=True)
    result = run_train(make_tree(tmp_path, DATA_DIR / "classif", hyperparameters))
    assert result.returncode == 0, result.output[-4000:]
    report = result.metrics()["onnx_export"]
    assert report["folder"] == ONNX_DIR and report["fp32_max_relative_diff"] <= onnx_export.FP32_TOLERANCE
    assert (result.model_dir / ONNX_DIR / INT8_FILE).is_file()
    predictor = Predictor.load(result.model_dir, PredictOptions(torch_threads=1, device="cpu"))
    assert predictor.engine.name == "onnxruntime"
    expected = Predictor.load(result.model_dir, PredictOptions(torch_threads=1, runtime="torch"))
    records = records_for("classif")
    assert [a["pred"] for a in predictor.predict(records)] == [a["pred"] for a in expected.predict(records)]


def test_a_failed_export_leaves_the_trained_model_and_says_why(
    trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    """The job's own export step: the refusal is reported (metrics.json gets it), the model stays."""
    from hfsm.sagemaker import SageMakerEnv
    from hfsm.training.job import TrainingRun

    hyperparameters = quick_hyperparameters("ner", trained["ner"].model_dir, export_onnx=True)
    run = TrainingRun(SageMakerEnv.from_base_dir(make_tree(tmp_path / "job", None, hyperparameters)))
    folder = tmp_path / "model"
    shutil.copytree(trained["ner"].model_dir, folder)
    (folder / ADAPTER_DIR).mkdir()
    (folder / ADAPTER_DIR / "adapter_config.json").write_text("{}")
    outcome = run._export_onnx(folder)
    assert "merge_lora_weights=true" in outcome["error"]
    assert not (folder / ONNX_DIR).exists() and (folder / "model.safetensors").is_file()


def test_export_onnx_of_unmerged_lora_adapters_is_refused_at_start(base_models: dict[str, Path]) -> None:
    from hfsm.config import parse_hyperparameters

    hyperparameters = quick_hyperparameters(
        "ner", base_models["bert"], export_onnx=True, apply_lora=True, merge_lora_weights=False
    )
    with pytest.raises(UserError, match="'export_onnx' = True: exports one set of weights"):
        parse_hyperparameters(hyperparameters)


def test_an_export_of_weights_fine_tuned_again_is_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    """A second fine-tune of the same architecture writes weights of exactly the same size: only their
    SHA-256 tells that the export is stale."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "retrained"
    shutil.copytree(exported["classif"], folder)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    tensors = load_file(weights)
    name = next(key for key in tensors if key.endswith("classifier.bias"))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == size
    assert json.loads((folder / ONNX_DIR / MANIFEST_FILE).read_text())["weights"]["sha256"]
    with pytest.raises(UserError, match="size or SHA-256"):
        Predictor.load(folder, PredictOptions(runtime="onnxruntime"))
    assert resolve_runtime(folder, PredictOptions()) == "onnxruntime"  # auto would take it: load refuses
