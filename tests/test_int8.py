"""Dynamic int8 quantization: which quantized engine packs the weights, and what it leaves behind."""

from __future__ import annotations

import logging
import platform

import pytest

from hfsm.errors import UserError
from hfsm.inference import cpu, int8
from hfsm.inference.predictor import PredictOptions, Predictor
from sagemaker_tree import TrainResult

TEXTS = ["Hello from New York , said @paulwalk", "Peter Blackburn", " ".join(["EU rejects German call"] * 40)]


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni", "amx_int8"}, "onednn"),  # Sapphire Rapids and later
        ("x86_64", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, None),  # Zen 4: level, the default
        ("x86_64", {"avx2", "avx_vnni"}, None),  # AVX2 only: not measured, torch's default
        ("aarch64", set(), None),
    ],
)
def test_auto_packs_for_onednn_only_on_the_cpus_where_it_was_measured_faster(
    monkeypatch: pytest.MonkeyPatch, machine: str, flags: set[str], expected: str | None
) -> None:
    import torch

    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    default = torch.backends.quantized.engine
    assert int8.choose_engine("auto") == (expected or default)
    assert int8.choose_engine("x86") == "x86", "an explicit engine wins on any CPU"


def test_an_engine_this_torch_lacks_is_refused_with_the_ones_it_has(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int8, "supported_engines", lambda: ["x86", "fbgemm"])
    with pytest.raises(UserError, match=r"HFSM_QUANTIZED_ENGINE=onednn: torch .* has x86, fbgemm; set one"):
        int8.choose_engine("onednn")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_vnni", "amx_int8"}))
    assert int8.choose_engine("auto") != "onednn", "auto never picks an engine torch lacks"


def test_supported_engines_are_torch_ones_without_none() -> None:
    engines = int8.supported_engines()
    assert engines and "none" not in engines


@pytest.mark.parametrize("name", ["ner", "classif"])
def test_each_packing_answers_alike_and_leaves_the_process_engine_as_it_was(
    trained: dict[str, TrainResult], name: str
) -> None:
    import torch

    engines = [engine for engine in ("onednn", "x86") if engine in int8.supported_engines()]
    if len(engines) < 2:
        pytest.skip(f"this torch has {int8.supported_engines()}")
    before = torch.backends.quantized.engine
    records = [{"text": text} for text in TEXTS]
    plain = Predictor.load(trained[name].model_dir, PredictOptions(torch_threads=1)).predict(records)
    answers = {}
    for engine in engines:
        options = PredictOptions(torch_threads=1, quantize="int8", quantized_engine=engine)
        predictor = Predictor.load(trained[name].model_dir, options)
        assert torch.backends.quantized.engine == before, "packing must not change the process's engine"
        assert predictor.engine.quantized_engine == engine
        assert predictor.engine.description == f"torch, int8 dynamic quantization ({engine} kernels)"
        answers[engine] = predictor.predict(records)
    for got, want, fp32 in zip(answers["onednn"], answers["x86"], plain, strict=True):
        assert isinstance(got, dict) and isinstance(want, dict) and isinstance(fp32, dict)
        if name == "classif":
            for label, score in want["scores"].items():
                assert got["scores"][label] == pytest.approx(score, abs=0.01), label
                assert got["scores"][label] == pytest.approx(fp32["scores"][label], abs=0.05), label
            continue
        agree = sum(a == b for a, b in zip(got["pred"], want["pred"], strict=True))
        assert agree >= len(want["pred"]) - 1, "at most a near-tie may flip between kernels"
        assert got["proba"] == pytest.approx(want["proba"], abs=0.02)


def test_the_engine_setting_without_int8_is_reported_as_having_no_effect(
    trained: dict[str, TrainResult], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hfsm.predict"):
        predictor = Predictor.load(
            trained["classif"].model_dir, PredictOptions(torch_threads=1, quantized_engine="onednn")
        )
    assert predictor.engine.quantized_engine is None
    assert "HFSM_QUANTIZED_ENGINE=onednn has no effect without HFSM_QUANTIZE=int8" in caplog.text
