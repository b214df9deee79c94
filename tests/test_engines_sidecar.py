"""The plan sidecar: schema round trip, loading errors, and the TensorRT/GPU compatibility check."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaret.core.errors import AdaretError
from adaret.engines.profiles import Profile, ShapeRange
from adaret.engines.sidecar import (
    SCHEMA_VERSION,
    EngineSidecar,
    check_compatible,
    load_sidecar,
    sidecar_path,
    write_sidecar,
)


def _profile(seq=512, batches=(1, 8, 32)):
    ranges = ShapeRange(*((b, seq) for b in batches))
    return Profile(seq, {"input_ids": ranges, "attention_mask": ranges})


def _sidecar(**overrides) -> EngineSidecar:
    values = dict(tensorrt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                  precision="fp16", target="datacenter", profiles=[_profile()], device_memory_bytes=[12_582_912],
                  onnx_sha256="ab" * 32, onnx_file="model_seq512.onnx", budget=0.4, seq_len=512,
                  schedule={"fractions": [1.0, 0.6, 0.35]}, keep_counts={"512": [512, 308, 180]},
                  label_names=["a", "b"], input_names=["input_ids", "attention_mask"], output_names=["logits"],
                  decisions={"builder_flags": ["FP16"]}, built_at="2025-01-01T00:00:00+00:00")
    values.update(overrides)
    return EngineSidecar(**values)


def test_sidecar_path_sits_next_to_the_plan(tmp_path):
    assert sidecar_path(tmp_path / "model.plan") == tmp_path / "model.plan.json"
    assert sidecar_path("engines/b0.4.engine").name == "b0.4.engine.json"


def test_write_then_load_round_trips(tmp_path):
    sidecar = _sidecar()
    path = write_sidecar(tmp_path / "model.plan", sidecar)
    assert path == tmp_path / "model.plan.json"
    loaded = load_sidecar(tmp_path / "model.plan")
    assert loaded == sidecar
    assert loaded.profiles[0].inputs["input_ids"].max == (32, 512)
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=40, deadline=None)
@given(version=_text, gpu=_text, cc=st.tuples(st.integers(0, 12), st.integers(0, 9)),
       seqs=st.lists(st.integers(2, 4096), min_size=1, max_size=3),
       memory=st.integers(0, 2**40), budget=st.one_of(st.none(), st.floats(0.01, 1.0)),
       labels=st.lists(_text, max_size=4), compat=st.sampled_from([None, "ampere+"]))
def test_round_trip_for_arbitrary_contents(version, gpu, cc, seqs, memory, budget, labels, compat):
    sidecar = _sidecar(tensorrt_version=version, gpu_name=gpu, compute_capability=f"{cc[0]}.{cc[1]}",
                       profiles=[_profile(s) for s in seqs], device_memory_bytes=[memory] * len(seqs),
                       budget=budget, label_names=labels, hardware_compat=compat)
    assert EngineSidecar.from_json(sidecar.to_json()) == sidecar


def test_unknown_keys_from_newer_writers_are_ignored():
    data = _sidecar().to_dict() | {"future_field": 1}
    assert EngineSidecar.from_dict(data) == _sidecar()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("gpu_name"), "missing gpu_name"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this adaret"),
    (lambda d: d.update(device_memory_bytes=[-1]), "non-negative integers"),
    (lambda d: d.update(device_memory_bytes=[1, 2]), "1 profile\\(s\\) but 2"),
    (lambda d: d.update(compute_capability="sm90"), "bad compute capability"),
    (lambda d: d.update(tensorrt_version=10), "tensorrt_version must be a string"),
    (lambda d: d.update(profiles={"seq_len": 1}), "profiles must be a list"),
])
def test_malformed_sidecars_are_refused_with_the_reason(mutate, message):
    data = _sidecar().to_dict()
    mutate(data)
    with pytest.raises(AdaretError, match=message):
        EngineSidecar.from_dict(data, source="model.plan.json")


def test_missing_and_corrupt_sidecar_files(tmp_path):
    with pytest.raises(AdaretError, match=r"has no sidecar.*rebuild"):
        load_sidecar(tmp_path / "model.plan")
    (tmp_path / "model.plan.json").write_text("{not json")
    with pytest.raises(AdaretError, match="not valid JSON"):
        load_sidecar(tmp_path / "model.plan")


def _check(sidecar, version="10.3.0", gpu="NVIDIA H100 80GB HBM3", cc="9.0"):
    check_compatible(sidecar, tensorrt_version=version, gpu_name=gpu, compute_capability=cc)


def test_same_release_and_gpu_are_accepted():
    _check(_sidecar())
    _check(_sidecar(tensorrt_version="10.3.0.26"), version="10.3.0")  # build number does not matter
    _check(_sidecar(), gpu="  nvidia h100 80GB  HBM3 ")  # spacing and case do not either


@pytest.mark.parametrize("other", ["10.4.0", "10.3.1", "11.0.0"])
def test_another_tensorrt_release_is_refused_naming_both(other):
    with pytest.raises(AdaretError) as err:
        _check(_sidecar(), version=other)
    assert "TensorRT 10.3.0" in str(err.value) and f"TensorRT {other}" in str(err.value)


@pytest.mark.parametrize(("gpu", "cc"), [("NVIDIA H100 PCIe", "9.0"), ("NVIDIA A100-SXM4-80GB", "8.0")])
def test_another_gpu_is_refused_naming_both(gpu, cc):
    with pytest.raises(AdaretError) as err:
        _check(_sidecar(), gpu=gpu, cc=cc)
    message = str(err.value)
    assert "NVIDIA H100 80GB HBM3" in message and gpu in message and f"compute capability {cc}" in message


def test_hardware_compatible_plans_run_on_any_ampere_or_newer_gpu():
    sidecar = _sidecar(hardware_compat="ampere+", gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
    for gpu, cc in [("NVIDIA A10", "8.6"), ("NVIDIA L4", "8.9"), ("NVIDIA H100 PCIe", "9.0")]:
        _check(sidecar, gpu=gpu, cc=cc)
    with pytest.raises(AdaretError, match=r"Tesla T4.*7\.5"):
        _check(sidecar, gpu="Tesla T4", cc="7.5")
    with pytest.raises(AdaretError, match="TensorRT"):
        _check(sidecar, version="10.4.0", gpu="NVIDIA A10", cc="8.6")  # the release must still match


def test_a_question_answering_plan_keeps_its_task_and_windows(tmp_path):
    """A plan of a QA export must load as a QA model: the runtime reads the task and the window settings from it."""
    from adaret.core.metadata import ExportMetadata
    from adaret.engines.sidecar import fields_from_metadata
    from adaret.runtime.runners import metadata_from_sidecar

    windows = {"max_length": 384, "doc_stride": 128, "max_query_length": 64, "max_answer_length": 30}
    metadata = ExportMetadata(form="static", budget=0.4, seq_len=384, task="question-answering",
                              question_answering=windows, input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["start_logits", "end_logits"])
    fields = fields_from_metadata(metadata) | {"label_names": []}
    write_sidecar(tmp_path / "qa.plan", _sidecar(**fields))
    loaded = metadata_from_sidecar(load_sidecar(tmp_path / "qa.plan"))
    assert loaded.task == "question-answering" and loaded.question_answering == windows
    assert metadata_from_sidecar(_sidecar(schedule=None)).task == "sequence-classification"  # a classifier, as before
