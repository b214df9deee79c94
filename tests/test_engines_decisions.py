"""Builder decisions per TensorRT major version, as data (no TensorRT needed)."""

from __future__ import annotations

import json

import pytest

from adaret.engines.decisions import BuildRequest, decide_build_config, parse_version
from adaret.errors import AdaretError

PRECISION_FLAGS = {"FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                   "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"}  # all removed in TensorRT 11


def _decide(version="10.3.0", **kwargs):
    return decide_build_config(BuildRequest(version, **kwargs))


@pytest.mark.parametrize(("precision", "qdq", "flags"), [
    ("fp32", False, set()), ("fp16", False, {"FP16"}), ("bf16", False, {"BF16"}),
    ("int8-qdq", True, {"INT8", "FP16"})])
def test_tensorrt_10_sets_precision_with_builder_flags(precision, qdq, flags):
    decisions = _decide(precision=precision, onnx_has_qdq=qdq)
    assert decisions.tensorrt_major == 10
    assert set(decisions.builder_flags) & (PRECISION_FLAGS - {"PREFER_PRECISION_CONSTRAINTS"}) == flags
    assert decisions.onnx_conversion is None
    lowered = bool(flags & {"FP16", "BF16"})
    assert decisions.keep_score_path_fp32 is lowered
    assert ("PREFER_PRECISION_CONSTRAINTS" in decisions.builder_flags) is lowered


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1.2"])
@pytest.mark.parametrize(("precision", "conversion"), [("fp32", None), ("fp16", "autocast-fp16"),
                                                       ("bf16", "autocast-bf16"), ("int8-qdq", None)])
def test_tensorrt_11_has_no_precision_flags_and_converts_the_onnx(version, precision, conversion):
    decisions = _decide(version, precision=precision, onnx_has_qdq=True)
    assert decisions.tensorrt_major == 11
    assert not set(decisions.builder_flags) & PRECISION_FLAGS
    assert decisions.onnx_conversion == conversion
    assert decisions.keep_score_path_fp32 is (conversion is not None)


def test_tensorrt_11_skips_autocast_for_an_onnx_already_in_low_precision():
    decisions = _decide("11.1.0", precision="fp16", onnx_low_precision=True)
    assert decisions.onnx_conversion is None and not decisions.keep_score_path_fp32


@pytest.mark.parametrize("version", ["10.0.1", "10.13.0", "11.2.0"])
def test_no_removed_network_flags_and_the_inspector_gets_detail(version):
    decisions = _decide(version)
    assert "EXPLICIT_BATCH" not in decisions.network_flags  # ignored in 10.x, removed in 11.x
    assert decisions.profiling_verbosity == "DETAILED"
    assert decisions.memory_pools["WORKSPACE"] > 0 and decisions.default_device_type == "GPU"
    assert decisions.dla_core is None and not decisions.static_shapes


def test_workspace_and_optimization_level_are_passed_through():
    decisions = _decide(workspace_bytes=123 << 20, optimization_level=5)
    assert decisions.memory_pools == {"WORKSPACE": 123 << 20} and decisions.optimization_level == 5
    with pytest.raises(AdaretError, match=r"0\.\.5"):
        _decide(optimization_level=6)


def test_jetson_orin_preset_is_dla_with_gpu_fallback_and_static_shapes():
    decisions = _decide("10.3.0", target="jetson-orin", precision="fp16")
    assert decisions.default_device_type == "DLA" and decisions.dla_core == 0
    assert "GPU_FALLBACK" in decisions.builder_flags and "FP16" in decisions.builder_flags
    assert decisions.static_shapes and decisions.memory_pools["WORKSPACE"] < _decide().memory_pools["WORKSPACE"]
    assert _decide("10.3.0", target="jetson-orin", dla_core=1).dla_core == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(version="11.1.0", target="jetson-orin"), "JetPack 6"),
    (dict(target="jetson-orin", precision="fp32"), "FP16 or INT8 only"),
    (dict(target="jetson-orin", hardware_compat="ampere+"), "cannot use DLA"),
    (dict(target="jetson-orin", dla_core=2), "cores 0 and 1"),
    (dict(dla_core=0), "needs --target jetson-orin"),
    (dict(precision="int8-qdq"), "no Q/DQ"),
    (dict(version="8.6.1"), "10.x or 11.x"),
    (dict(precision="fp8"), "unknown precision"),
    (dict(target="thor"), "unknown target"),
    (dict(hardware_compat="hopper+"), "unknown hardware compatibility")])
def test_impossible_combinations_are_refused(kwargs, message):
    with pytest.raises(AdaretError, match=message):
        _decide(**kwargs)


def test_hardware_compatibility_maps_to_the_enum_member():
    assert _decide(hardware_compat="ampere+").hardware_compatibility_level == "AMPERE_PLUS"
    assert _decide().hardware_compatibility_level is None


@pytest.mark.parametrize(("text", "parsed"), [("10.3.0.26", (10, 3, 0, 26)), ("11.0.0", (11, 0, 0)),
                                              ("10.0.0b6", (10, 0, 0)), (" 10.7 ", (10, 7))])
def test_version_parsing(text, parsed):
    assert parse_version(text) == parsed


def test_unreadable_version_is_an_error():
    with pytest.raises(AdaretError, match="cannot read a TensorRT version"):
        parse_version("unknown")


def test_decisions_serialise_for_the_sidecar():
    data = json.loads(json.dumps(_decide(precision="fp16").as_dict()))
    assert set(data["builder_flags"]) == {"FP16", "PREFER_PRECISION_CONSTRAINTS"}
    assert data["tensorrt_major"] == 10 and data["onnx_conversion"] is None
