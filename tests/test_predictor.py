"""The predictor in-process on models trained by the real ``train`` command."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from functools import partial

import pytest

from hfsm.bundle import ModelBundle
from hfsm.data.records import word_spans
from hfsm.errors import UserError
from hfsm.inference import cpu, onednn_linear
from hfsm.inference import predictor as predictor_module
from hfsm.inference.int8 import quantize_int8
from hfsm.inference.predictor import PredictOptions, Predictor, RecordError
from sagemaker_tree import TrainResult
from serving_models import always_tagging


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Spin-waiting OpenMP threads make forward passes very slow on a busy shared CI machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def predictors(trained: dict[str, TrainResult]) -> dict[str, Predictor]:
    # a small batch so that several batches, sorted by length, are exercised
    options = PredictOptions(batch_size=3, max_words=3000)
    return {name: Predictor.load(result.model_dir, options) for name, result in trained.items()}


@pytest.fixture(scope="module")
def tagging_ner(trained: dict[str, TrainResult], tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """Tags every word B-location, so every word is an entity whose offsets can be checked."""
    folder = always_tagging(
        trained["ner"].model_dir, tmp_path_factory.mktemp("tagging") / "model", "B-location"
    )
    return Predictor.load(folder, PredictOptions(torch_threads=1))


def long_text(n_words: int) -> str:
    """Words of 1 to 8 WordPiece pieces, an emoji selector, and irregular whitespace between them."""
    vocabulary = ["Paris", "internationalization", "x", "\ufe0f", "New", "York", "café", "2024", "@user"]
    separators = [" ", "  ", "\t", "\n", " \u00a0", "\u3000"]
    words = [vocabulary[i % len(vocabulary)] for i in range(n_words)]
    return "".join(word + separators[i % len(separators)] for i, word in enumerate(words))


def test_each_task_answers_in_its_shape(
    predictors: dict[str, Predictor], trained: dict[str, TrainResult]
) -> None:
    text = "Hello from New York , said @paulwalk"
    ner = predictors["ner"].predict([{"text": text}])[0]
    assert len(ner["pred"]) == len(ner["proba"]) == 7
    classif = predictors["classif"].predict([{"text": text}])[0]
    assert classif["pred"] in classif["scores"]
    assert sum(classif["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    multilabel = predictors["multilabel"].predict([{"text": text}])[0]
    threshold = ModelBundle.load(trained["multilabel"].model_dir).threshold
    assert threshold is not None
    assert multilabel["pred"] == sorted(
        (k for k, v in multilabel["scores"].items() if v >= threshold), key=lambda k: -multilabel["scores"][k]
    )
    regression = predictors["regression"].predict([{"text": text}])[0]
    assert isinstance(regression["pred"], float)


def test_order_is_kept_across_length_sorted_batches(predictors: dict[str, Predictor]) -> None:
    texts = [" ".join(["word"] * n) for n in (1, 150, 3, 70, 9, 200, 2)]
    together = predictors["ner"].predict([{"text": t} for t in texts])
    for text, joint in zip(texts, together, strict=True):
        alone = predictors["ner"].predict([{"text": text}])[0]
        assert len(joint["pred"]) == len(text.split())
        assert joint["proba"] == pytest.approx(alone["proba"], abs=1e-4)
    classif = predictors["classif"]
    together = classif.predict([{"text": t} for t in texts])
    for text, joint in zip(texts, together, strict=True):
        assert joint["scores"] == pytest.approx(classif.predict([{"text": text}])[0]["scores"], abs=1e-4)


def test_two_thousand_word_text_gets_exactly_one_tag_per_word(predictors: dict[str, Predictor]) -> None:
    predictor = predictors["ner"]
    text = long_text(2000)
    pieces = [len(predictor.tokenizer(word, add_special_tokens=False)["input_ids"]) for word in text.split()]
    assert sum(pieces) > 8 * predictor.bundle.max_seq_length  # many windows, words of several pieces
    prediction = predictor.predict([{"text": text}, {"text": "short one"}])
    assert len(prediction[0]["pred"]) == len(prediction[0]["proba"]) == 2000
    assert len(prediction[1]["pred"]) == 2


def test_entity_offsets_point_into_the_request_text(tagging_ner: Predictor) -> None:
    text = long_text(2000)
    prediction = tagging_ner.predict([{"text": text}])[0]
    spans = word_spans(text)
    assert prediction["pred"] == ["B-location"] * 2000
    assert len(prediction["entities"]) == 2000
    for index, entity in enumerate(prediction["entities"]):
        assert entity["words"] == [index, index + 1]
        assert (entity["start"], entity["end"]) == spans[index]
        assert text[entity["start"] : entity["end"]] == entity["text"] == text.split()[index]


def test_words_the_tokenizer_drops_still_get_a_tag(predictors: dict[str, Predictor]) -> None:
    predictor = predictors["ner"]
    assert predictor.tokenizer("\ufe0f", add_special_tokens=False)["input_ids"] == []  # the case is real
    prediction = predictor.predict([{"text": "\ufe0f"}, {"text": "ok \ufe0f \ufe0f\ufe0f fine"}])
    assert len(prediction[0]["pred"]) == 1
    assert len(prediction[1]["pred"]) == 4


def test_large_requests_are_predicted_in_chunks_without_losing_order(
    predictors: dict[str, Predictor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predictor_module, "RECORD_CHUNK", 4)
    records: list[object] = [{"text": " ".join(["w"] * (1 + i % 7))} for i in range(30)]
    records[5] = {"text": None}
    records[13] = 42
    outcomes = predictors["ner"].predict(records)
    for index, outcome in enumerate(outcomes):
        if index in (5, 13):
            assert isinstance(outcome, RecordError)
        else:
            assert len(outcome["pred"]) == 1 + index % 7


def test_empty_text_is_answered_not_refused(predictors: dict[str, Predictor]) -> None:
    assert predictors["ner"].predict([{"text": "  \n "}])[0] == {"pred": [], "proba": [], "entities": []}
    assert "pred" in predictors["classif"].predict([{"text": ""}])[0]


def test_bad_records_get_their_own_error_and_the_others_are_predicted(
    predictors: dict[str, Predictor],
) -> None:
    outcomes = predictors["ner"].predict(
        [
            {"text": "good one"},
            {"txt": "typo"},
            {"text": 5},
            "not an object",
            {"text": "x " * 3001},
            {"text": "fine too"},
        ]
    )
    assert outcomes[0]["pred"] and outcomes[5]["pred"]
    assert outcomes[1] == RecordError("the record has no 'text' field")
    assert outcomes[2] == RecordError("'text' must be a string, got a number")
    assert "must be a JSON object" in outcomes[3].message
    assert outcomes[4].status == 413
    assert "3001 words" in outcomes[4].message and "HFSM_MAX_WORDS" in outcomes[4].message


def test_bbox_model_takes_list_or_training_string_boxes(predictors: dict[str, Predictor]) -> None:
    predictor = predictors["ner_bbox"]
    text = "Invoice  total 42 EUR"
    boxes = [[10, 10, 80, 30], [90, 10, 140, 30], [150, 10, 170, 30], [180, 10, 220, 30]]
    as_string = ",".join(" ".join(str(v) for v in box) for box in boxes)
    from_list, from_string = predictor.predict(
        [{"text": text, "bbox": boxes}, {"text": text, "bbox": as_string}]
    )
    assert len(from_list["pred"]) == 4
    assert from_list == from_string
    for entity in from_list["entities"]:
        chosen = boxes[entity["words"][0] : entity["words"][1]]
        assert entity["bbox"] == [
            min(b[0] for b in chosen),
            min(b[1] for b in chosen),
            max(b[2] for b in chosen),
            max(b[3] for b in chosen),
        ]


def test_bbox_records_are_validated_one_by_one(predictors: dict[str, Predictor]) -> None:
    predictor = predictors["ner_bbox"]
    outcomes = predictor.predict(
        [
            {"text": "a b"},
            {"text": "a b", "bbox": [[0, 0, 1, 1]]},
            {"text": "a b", "bbox": [[0, 0, 1, 1], [0, 0, 1, 2000]]},
            {"text": "a b", "bbox": [[0, 0, 1, 1], [5, 0, 1, 1]]},
            {"text": "a b", "bbox": {"x": 1}},
            {"text": "a b", "bbox": [[0, 0, 1, 1], [2, 0, 3, 1]]},
        ]
    )
    assert "give 'bbox'" in outcomes[0].message
    assert outcomes[1].message == "the text has 2 words but 'bbox' has 1 boxes; give one box per word"
    assert outcomes[2].message.startswith("'bbox': box 2: box coordinate 2000 is outside 0..1000")
    assert "x1 < x0" in outcomes[3].message
    assert "got an object" in outcomes[4].message
    assert len(outcomes[5]["pred"]) == 2


def test_boxes_are_ignored_by_models_without_them(predictors: dict[str, Predictor]) -> None:
    with_boxes, without = predictors["ner"].predict(
        [{"text": "Paris now", "bbox": "not even boxes"}, {"text": "Paris now"}]
    )
    assert with_boxes == without
    assert all("bbox" not in entity for entity in with_boxes["entities"])


def test_warmup_runs_a_real_prediction_for_every_task(predictors: dict[str, Predictor]) -> None:
    for predictor in predictors.values():
        predictor.warmup()
    assert predictors["ner_bbox"].bundle.use_bbox


def test_packed_forward_passes_answer_like_padded_ones(trained: dict[str, TrainResult]) -> None:
    """Warm-up turns packing on for a BERT NER model; merged records of mixed lengths, long texts cut
    into windows included, get the tags and probabilities of padded forward passes."""
    model_dir = trained["ner"].model_dir
    packed = Predictor.load(model_dir, PredictOptions(torch_threads=1, batch_size=8, max_words=3000))
    padded = Predictor.load(
        model_dir, PredictOptions(torch_threads=1, batch_size=8, max_words=3000, pack_sequences=False)
    )
    packed.warmup()
    padded.warmup()
    assert (packed.engine.position_offset, padded.engine.position_offset) == (0, None)
    texts = [
        "Hello from New York",
        "x",
        long_text(300),
        "said @paulwalk in Paris on Monday , 2024",
        "",
        "café",
    ]
    records = [{"text": text} for text in texts * 3]
    for got, expected in zip(packed.predict(records), padded.predict(records), strict=True):
        assert got["pred"] == expected["pred"]
        assert got["proba"] == pytest.approx(expected["proba"], abs=1e-5)
        assert got["entities"] == [
            {**entity, "score": pytest.approx(entity["score"], abs=1e-5)} for entity in expected["entities"]
        ]


def test_models_that_cannot_be_packed_stay_padded(trained: dict[str, TrainResult]) -> None:
    """LayoutLM builds its attention mask from a 2-D one: auto keeps it padded, true refuses it."""
    model_dir = trained["ner_bbox"].model_dir
    auto = Predictor.load(model_dir, PredictOptions(torch_threads=1))
    auto.warmup()
    assert auto.engine.position_offset is None
    required = Predictor.load(model_dir, PredictOptions(torch_threads=1, pack_sequences=True))
    with pytest.raises(UserError, match="HFSM_PACK_SEQUENCES=true, but LayoutLMForTokenClassification"):
        required.warmup()


def test_int8_quantization_answers_like_the_fp32_model(trained: dict[str, TrainResult]) -> None:
    import torch

    options = PredictOptions(torch_threads=1, quantize="int8")
    quantized = {name: Predictor.load(trained[name].model_dir, options) for name in ("ner", "classif")}
    model = quantized["ner"].engine.model
    float_layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert [m.out_features for m in float_layers] == [model.config.num_labels], "only the output layer"
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
    text = "Hello from New York , said @paulwalk"
    ner = quantized["ner"].predict([{"text": text}])[0]
    assert len(ner["pred"]) == len(ner["proba"]) == 7
    classif = quantized["classif"].predict([{"text": text}])[0]
    assert sum(classif["scores"].values()) == pytest.approx(1.0, abs=1e-4)


def test_int8_quantization_is_refused_on_a_gpu(trained: dict[str, TrainResult]) -> None:
    with pytest.raises(UserError, match="CPU only"):
        quantize_int8(object(), "cuda", "x86")


def test_bf16_autocast_runs_the_products_in_bf16_and_answers_like_float32(
    trained: dict[str, TrainResult],
) -> None:
    import torch

    text = "Hello from New York , said @paulwalk in a longer sentence than the others"
    shorter = "Peter Blackburn"
    for name in ("ner", "classif"):
        plain = Predictor.load(trained[name].model_dir, PredictOptions(torch_threads=1))
        fast = Predictor.load(trained[name].model_dir, PredictOptions(torch_threads=1, autocast="bf16"))
        fast.warmup()
        assert next(fast.engine.model.parameters()).dtype == torch.float32, "the weights stay float32"
        seen: list[torch.dtype] = []
        layer = next(m for m in fast.engine.model.modules() if isinstance(m, torch.nn.Linear))
        hook = layer.register_forward_hook(lambda module, args, output, seen=seen: seen.append(output.dtype))
        records = [{"text": text}, {"text": shorter}]
        answers, expected = fast.predict(records), plain.predict(records)
        hook.remove()
        assert seen and set(seen) == {torch.bfloat16}
        for got, want in zip(answers, expected, strict=True):
            if name == "classif":
                assert got["scores"].keys() == want["scores"].keys()
                for label, score in want["scores"].items():
                    assert got["scores"][label] == pytest.approx(score, abs=0.02), label
                continue
            assert len(got["pred"]) == len(want["pred"])
            same = [
                (a, b)
                for a, b, x, y in zip(got["proba"], want["proba"], got["pred"], want["pred"], strict=True)
                if x == y
            ]
            assert len(same) >= len(got["pred"]) - 1, "at most a near-tie may flip"
            assert all(a == pytest.approx(b, abs=0.02) for a, b in same)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"autocast": "fp16"}, "fp16 runs on GPUs only; use bf16 on a CPU"),
        ({"autocast": "bf16", "quantize": "int8"}, "cannot be combined"),
        ({"autocast": "fp8"}, "expected none, bf16 or fp16"),
    ],
)
def test_autocast_settings_that_cannot_work_are_refused(
    trained: dict[str, TrainResult], options: dict, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        Predictor.load(trained["classif"].model_dir, PredictOptions(torch_threads=1, device="cpu", **options))


def test_onednn_linear_routes_every_linear_layer_and_answers_like_addmm(
    trained: dict[str, TrainResult],
) -> None:
    """``onednn_linear=True`` routes every nn.Linear; answers stay those of aten's Linear."""
    import torch

    reason = onednn_linear.unavailable_reason("cpu", "none", "none")
    if reason is not None:
        pytest.skip(f"this torch cannot run it: {reason}")
    texts = ["Hello from New York , said @paulwalk", long_text(300), "x"]
    for name in ("ner", "classif", "ner_bbox"):
        records = [{"text": text} for text in texts]
        if name == "ner_bbox":
            records = [{"text": text, "bbox": [[1, 2, 3, 4]] * len(text.split())} for text in texts]
        routed = Predictor.load(
            trained[name].model_dir, PredictOptions(torch_threads=1, batch_size=2, onednn_linear=True)
        )
        plain = Predictor.load(
            trained[name].model_dir, PredictOptions(torch_threads=1, batch_size=2, onednn_linear=False)
        )
        assert routed.engine.onednn_linear and "oneDNN Linear" in routed.engine.description
        assert not plain.engine.onednn_linear and plain.engine.description == "torch"
        layers = [m for m in routed.engine.model.modules() if type(m) is torch.nn.Linear]
        assert layers and all(isinstance(layer.forward, partial) for layer in layers)
        assert routed.engine.model.state_dict().keys() == plain.engine.model.state_dict().keys()
        for got, want in zip(routed.predict(records), plain.predict(records), strict=True):
            assert isinstance(got, dict) and isinstance(want, dict), (got, want)
            if "scores" in want:
                assert got["scores"] == pytest.approx(want["scores"], abs=1e-4)
                continue
            assert got["pred"] == want["pred"]
            assert got["proba"] == pytest.approx(want["proba"], abs=1e-4)


@pytest.mark.parametrize(
    ("machine", "vendor", "routed"),
    [("x86_64", "AuthenticAMD", True), ("x86_64", "GenuineIntel", False), ("aarch64", None, False)],
)
def test_auto_routes_the_linear_layers_only_on_the_cpus_where_it_was_faster(
    monkeypatch: pytest.MonkeyPatch, machine: str, vendor: str | None, routed: bool
) -> None:
    if onednn_linear.unavailable_reason("cpu", "none", "none") is not None:
        pytest.skip("this torch cannot run it")
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(cpu, "cpu_vendor", lambda: vendor)
    assert onednn_linear.decide(None, "cpu", "none", "none") is routed
    assert onednn_linear.decide(False, "cpu", "none", "none") is False
    assert onednn_linear.decide(True, "cpu", "none", "none") is True, "required: on any CPU"
    assert onednn_linear.decide(None, "cuda:0", "none", "none") is False
    assert onednn_linear.decide(None, "cpu", "int8", "none") is False
    assert onednn_linear.decide(None, "cpu", "none", "bf16") is False


def test_quantized_and_autocast_models_keep_aten_linear(trained: dict[str, TrainResult]) -> None:
    import torch

    quantized = Predictor.load(trained["ner"].model_dir, PredictOptions(torch_threads=1, quantize="int8"))
    assert not quantized.engine.onednn_linear
    bf16 = Predictor.load(trained["ner"].model_dir, PredictOptions(torch_threads=1, autocast="bf16"))
    assert not bf16.engine.onednn_linear
    layers = [m for m in bf16.engine.model.modules() if type(m) is torch.nn.Linear]
    assert layers and not any(isinstance(layer.forward, partial) for layer in layers)


@pytest.mark.parametrize(
    ("device", "quantize", "autocast", "message"),
    [
        ("cuda:0", "none", "none", "it runs on the CPU, the model is on cuda:0"),
        ("cpu", "int8", "none", "HFSM_QUANTIZE=int8 replaces the Linear layers"),
        ("cpu", "none", "bf16", "it does not run under HFSM_AUTOCAST"),
    ],
)
def test_onednn_linear_required_where_it_cannot_run_is_refused(
    device: str, quantize: str, autocast: str, message: str
) -> None:
    with pytest.raises(UserError, match=rf"HFSM_ONEDNN_LINEAR=true, but {message}; set it to auto or false"):
        onednn_linear.decide(True, device, quantize, autocast)


def test_onednn_self_check_reports_a_kernel_that_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    assert onednn_linear.self_check_failure() is None
    monkeypatch.setattr(onednn_linear, "onednn_forward", lambda layer, inputs: layer(inputs) * 1.01)
    assert "differs from addmm by 1.0e-02" in str(onednn_linear.self_check_failure())
    with pytest.raises(UserError, match="self-check differs"):
        onednn_linear.decide(True, "cpu", "none", "none")


def test_routing_bounds_onednns_primitive_caches_unless_the_environment_sizes_them() -> None:
    """One primitive per input shape would otherwise pile up to 1,024 (400 MB more for MiniLM-L6)."""
    environ: dict[str, str] = {"LRU_CACHE_CAPACITY": "8"}
    onednn_linear.bound_primitive_caches(environ)
    assert environ == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32", "LRU_CACHE_CAPACITY": "8"}
