"""Builder decisions per TensorRT major version, as Polygraphy CreateConfig arguments (no TensorRT needed)."""

from __future__ import annotations

import json

import pytest

from adaret.core.errors import AdaretError
from adaret.engines.decisions import BuildRequest, GiB, decide_build_config, parse_version
from adaret.engines.profiles import parse_profile_spec, profile_for_graph

NAMES = ("input_ids", "attention_mask")
SCORE_PATH = ("/gate0/LayerNorm", "/gate0/scorer/MatMul", "/gate0/TopK")
PRECISION_KEYS = {"fp16", "bf16", "int8"}
TARGET_PRECISIONS = [("datacenter", "fp32"), ("datacenter", "fp16"), ("datacenter", "bf16"),
                     ("datacenter", "int8-qdq"), ("jetson-orin", "fp16"), ("jetson-orin", "int8-qdq")]


def _profile(spec="1x64,8x64,32x64"):
    return profile_for_graph({name: ["batch", 64] for name in NAMES}, parse_profile_spec(spec))


def _decide(version="10.3.0", **kwargs):
    kwargs.setdefault("score_path", SCORE_PATH)
    if kwargs.get("target") == "jetson-orin":
        kwargs.setdefault("profile", _profile("8x64"))
    return decide_build_config(BuildRequest(version, **kwargs))


def _set_flags(kwargs):
    return {key for key in PRECISION_KEYS if kwargs[key]}


@pytest.mark.parametrize(("precision", "qdq", "flags"), [
    ("fp32", False, set()), ("fp16", False, {"fp16"}), ("bf16", False, {"bf16"}),
    ("int8-qdq", True, {"int8", "fp16"})])
def test_tensorrt_10_sets_precision_with_create_config_flags(precision, qdq, flags):
    decisions = _decide(precision=precision, onnx_has_qdq=qdq)
    kwargs = decisions.create_config_kwargs()
    assert decisions.tensorrt_major == 10 and decisions.onnx_conversion is None
    assert _set_flags(kwargs) == flags and kwargs["tf32"] is False
    lowered = bool(flags & {"fp16", "bf16"})
    assert decisions.keep_score_path_fp32 is lowered
    assert kwargs["precision_constraints"] == ("prefer" if lowered else None)


@pytest.mark.parametrize(("target", "precision"), TARGET_PRECISIONS)
def test_the_score_path_is_pinned_to_fp32_by_layer_precision_whenever_precision_is_lowered(target, precision):
    decisions = _decide(target=target, precision=precision, onnx_has_qdq=True)
    if precision == "fp32":  # nothing is lowered (and TF32 is off), so nothing needs pinning
        assert decisions.layer_precisions() == {} and decisions.fp32_nodes == ()
        return
    assert decisions.layer_precisions() == {name: "DataType.FLOAT" for name in SCORE_PATH}
    assert decisions.create_config_kwargs()["precision_constraints"] == "prefer"  # else TensorRT ignores them


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1.2"])
@pytest.mark.parametrize(("precision", "conversion"), [("fp32", None), ("fp16", "autocast-fp16"),
                                                       ("bf16", "autocast-bf16"), ("int8-qdq", None)])
def test_tensorrt_11_has_no_precision_flags_and_converts_the_onnx(version, precision, conversion):
    decisions = _decide(version, precision=precision, onnx_has_qdq=True)
    kwargs = decisions.create_config_kwargs()
    assert decisions.tensorrt_major == 11
    assert not _set_flags(kwargs) and kwargs["precision_constraints"] is None  # both removed in TensorRT 11
    assert decisions.onnx_conversion == conversion
    assert decisions.keep_score_path_fp32 is (conversion is not None)
    assert decisions.layer_precisions() == {}  # AutoCast leaves the score path in FP32 instead:
    assert decisions.fp32_nodes == (SCORE_PATH if conversion else ())


def test_tensorrt_11_skips_autocast_for_an_onnx_already_in_low_precision():
    decisions = _decide("11.1.0", precision="fp16", onnx_low_precision=True)
    assert decisions.onnx_conversion is None and not decisions.keep_score_path_fp32


@pytest.mark.parametrize("version", ["10.0.1", "10.13.0", "11.2.0"])
def test_every_build_gets_workspace_detail_timing_cache_and_its_bucket_profile(version, tmp_path):
    cache = str(tmp_path / "timing.cache")
    decisions = _decide(version, profile=_profile(), timing_cache=cache)
    kwargs = decisions.create_config_kwargs()
    assert kwargs["memory_pool_limits"] == {"MemoryPoolType.WORKSPACE": 4 * GiB}
    assert kwargs["profiling_verbosity"] == "ProfilingVerbosity.DETAILED"  # feeds the engine inspector
    assert kwargs["builder_optimization_level"] == 3 and kwargs["load_timing_cache"] == cache
    assert decisions.timing_cache == cache
    assert kwargs["use_dla"] is False and kwargs["allow_gpu_fallback"] is False and decisions.dla_core is None
    assert kwargs["hardware_compatibility_level"] is None and not decisions.static_shapes
    (profile,) = kwargs["profiles"]
    for name in NAMES:
        assert (profile[name].min, profile[name].opt, profile[name].max) == ((1, 64), (8, 64), (32, 64))


def test_without_a_profile_polygraphy_picks_its_default():
    assert _decide().create_config_kwargs()["profiles"] is None


def test_workspace_and_optimization_level_are_passed_through():
    kwargs = _decide(workspace_bytes=123 << 20, optimization_level=5).create_config_kwargs()
    assert kwargs["memory_pool_limits"] == {"MemoryPoolType.WORKSPACE": 123 << 20}
    assert kwargs["builder_optimization_level"] == 5
    with pytest.raises(AdaretError, match=r"0\.\.5"):
        _decide(optimization_level=6)


def test_jetson_orin_preset_is_dla_with_gpu_fallback_and_static_shapes():
    decisions = _decide("10.3.0", target="jetson-orin", precision="fp16")
    kwargs = decisions.create_config_kwargs()
    assert kwargs["use_dla"] is True and kwargs["allow_gpu_fallback"] is True and kwargs["fp16"] is True
    assert decisions.dla_core == 0 and decisions.static_shapes
    assert kwargs["memory_pool_limits"]["MemoryPoolType.WORKSPACE"] == 1 * GiB
    (profile,) = kwargs["profiles"]
    assert profile["input_ids"].min == profile["input_ids"].max == (8, 64)
    assert _decide("10.3.0", target="jetson-orin", dla_core=1).dla_core == 1
    with pytest.raises(AdaretError, match="one shape per input"):
        _decide("10.3.0", target="jetson-orin", profile=_profile())


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
    kwargs = _decide(hardware_compat="ampere+").create_config_kwargs()
    assert kwargs["hardware_compatibility_level"] == "HardwareCompatibilityLevel.AMPERE_PLUS"


def test_every_enum_value_goes_through_the_resolver():
    """The builder resolves names against the installed tensorrt; no enum may bypass the resolver."""
    decisions = _decide(precision="fp16", hardware_compat="ampere+")
    kwargs = decisions.create_config_kwargs(lambda name: ("resolved", name))
    assert kwargs["profiling_verbosity"] == ("resolved", "ProfilingVerbosity.DETAILED")
    assert kwargs["hardware_compatibility_level"] == ("resolved", "HardwareCompatibilityLevel.AMPERE_PLUS")
    assert list(kwargs["memory_pool_limits"]) == [("resolved", "MemoryPoolType.WORKSPACE")]
    assert set(decisions.layer_precisions(lambda name: ("resolved", name)).values()) == {("resolved",
                                                                                          "DataType.FLOAT")}


@pytest.mark.parametrize(("target", "precision"), TARGET_PRECISIONS)
def test_polygraphy_create_config_accepts_the_kwargs_without_tensorrt(target, precision):
    from polygraphy.backend.trt import CreateConfig

    kwargs = _decide(target=target, precision=precision, onnx_has_qdq=True,
                     profile=_profile("8x64") if target == "jetson-orin" else _profile()).create_config_kwargs()
    config = CreateConfig(**kwargs)  # a loader: TensorRT is imported only when it is called
    for key, value in kwargs.items():
        attribute = {"load_timing_cache": "timing_cache_path"}.get(key, key)
        assert getattr(config, attribute) == value, key


@pytest.mark.parametrize(("text", "parsed"), [("10.3.0.26", (10, 3, 0, 26)), ("11.0.0", (11, 0, 0)),
                                              ("10.0.0b6", (10, 0, 0)), (" 10.7 ", (10, 7))])
def test_version_parsing(text, parsed):
    assert parse_version(text) == parsed


def test_unreadable_version_is_an_error():
    with pytest.raises(AdaretError, match="cannot read a TensorRT version"):
        parse_version("unknown")


def test_decisions_serialise_for_the_sidecar():
    data = json.loads(json.dumps(_decide(precision="fp16", profile=_profile()).as_dict()))
    assert data["precision_flags"] == ["fp16"] and data["precision_constraints"] == "prefer"
    assert data["fp32_nodes"] == list(SCORE_PATH) and data["tensorrt_major"] == 10
    assert data["onnx_conversion"] is None and data["profiles"][0]["inputs"]["input_ids"]["max"] == [32, 64]
