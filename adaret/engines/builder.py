"""ONNX -> TensorRT plan, with a JSON sidecar and the engine inspector's layer report (TensorRT 10.x and 11.x).

Two halves. ``prepare_build`` needs no TensorRT: it lints the graph, pins the profile to the graph's bucket and
decides the builder configuration for a given TensorRT version (tested here). ``execute_build`` applies those
decisions through the TensorRT Python API; it is written against NVIDIA's documented 10.x/11.x API and runs
only where TensorRT and a GPU exist.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from adaret import __version__
from adaret.engines import graph_facts as gf
from adaret.engines.decisions import BuildDecisions, BuildRequest, decide_build_config
from adaret.engines.environment import GpuInfo, current_gpu, import_tensorrt
from adaret.engines.inspection import LayerSummary, summarize_layers
from adaret.engines.lint import LintReport, lint_model
from adaret.engines.profiles import Profile, ProfileSpec, parse_profile_spec, profile_for_graph
from adaret.engines.sidecar import EngineSidecar, fields_from_metadata, write_sidecar
from adaret.engines.trt_session import device_memory_per_profile
from adaret.errors import AdaretError
from adaret.export.metadata import decode_metadata
from adaret.fileio import atomic_file, sha256_file

LAYERS_SUFFIX = ".layers.json"


@dataclass
class BuildPlan:
    """Everything decided before TensorRT is imported."""

    onnx_path: Path
    onnx_sha256: str
    target: str
    precision: str
    hardware_compat: str | None
    lint: LintReport
    profile: Profile
    decisions: BuildDecisions
    fp32_nodes: list[str]  # the retention score path, kept in FP32
    onnx_ops: dict[str, str]  # node name -> op type, for the layer report
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildResult:
    plan_path: Path
    sidecar_path: Path
    layers_path: Path
    sidecar: EngineSidecar
    summary: LayerSummary
    plan: BuildPlan


def prepare_build(onnx_path: str | Path, *, tensorrt_version: str, target: str = "datacenter",
                  precision: str = "fp16", profiles: str | ProfileSpec | None = None, dla_core: int | None = None,
                  hardware_compat: str | None = None, optimization_level: int = 3,
                  workspace_bytes: int | None = None) -> BuildPlan:
    """Lint, profile and decide; raises AdaretError on blockers or impossible combinations."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise AdaretError(f"{onnx_path} does not exist")
    model = gf.load_model(onnx_path)
    report = lint_model(model, target=target, dla=target == "jetson-orin", precision=precision)
    report.source = str(onnx_path)
    if not report.passed:
        where = "; ".join(f"{f.rule} at {f.node}" for f in report.blockers[:3])
        raise AdaretError(f"{onnx_path.name} is not ready for TensorRT: {len(report.blockers)} blocker(s) ({where}"
                          f"{'; ...' if len(report.blockers) > 3 else ''}); see adaret build --check {onnx_path}")
    spec = parse_profile_spec(profiles) if isinstance(profiles, str) else profiles
    profile = profile_for_graph(gf.input_dims(model), spec, static=target == "jetson-orin")
    request = BuildRequest(tensorrt_version, target, precision, dla_core, hardware_compat, optimization_level,
                           workspace_bytes, gf.has_qdq(model), gf.has_low_precision_weights(model))
    decisions = decide_build_config(request)
    return BuildPlan(onnx_path, sha256_file(onnx_path), target, precision, hardware_compat, report, profile,
                     decisions, gf.score_path_node_names(model) if decisions.keep_score_path_fp32 else [],
                     {node.name: node.op_type for node in gf.nodes(model) if node.name},
                     decode_metadata(model.metadata_props))


def build_engine(onnx_path: str | Path, plan_path: str | Path, *, target: str = "datacenter",
                 precision: str = "fp16", profiles: str | ProfileSpec | None = None,
                 timing_cache: str | Path | None = None, dla_core: int | None = None,
                 hardware_compat: str | None = None) -> Path:
    """Build ``plan_path`` (plus ``<plan>.json`` and ``<plan>.layers.json``) from ``onnx_path``."""
    trt = import_tensorrt()
    plan = prepare_build(onnx_path, tensorrt_version=trt.__version__, target=target, precision=precision,
                         profiles=profiles, dla_core=dla_core, hardware_compat=hardware_compat)
    return execute_build(plan, plan_path, timing_cache=timing_cache).plan_path


def execute_build(plan: BuildPlan, plan_path: str | Path, *, timing_cache: str | Path | None = None) -> BuildResult:
    trt = import_tensorrt()
    gpu = current_gpu()
    plan_path = Path(plan_path)
    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    with tempfile.TemporaryDirectory(prefix=".adaret-build.") as work:
        parse_path = onnx_for_parser(plan, Path(work))
        builder, network, parser = NetworkFromOnnx(parse_path, plan.decisions)(trt, logger)
        configure = ConfigFromPlan(plan, timing_cache)
        config = configure(trt, builder, network)
        dla = planned_placement(config, network) if plan.decisions.default_device_type == "DLA" else None
        build_facts = {"fp32_pinned_layers": configure.pinned, "dla": dla}
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise AdaretError(f"TensorRT could not build {plan.onnx_path.name} (see the TensorRT log above)")
        save_timing_cache(config, timing_cache)
        del parser  # the parser owns weights the network refers to until the build is done
    engine_bytes = bytes(serialized)
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise AdaretError(f"TensorRT built {plan_path.name} but cannot deserialize it")
    with atomic_file(plan_path) as tmp:
        tmp.write_bytes(engine_bytes)
    return _finish(trt, plan, plan_path, engine, engine_bytes, gpu, build_facts, time.perf_counter() - started)


def _finish(trt: ModuleType, plan: BuildPlan, plan_path: Path, engine: Any, engine_bytes: bytes, gpu: GpuInfo,
            build_facts: dict[str, Any], seconds: float) -> BuildResult:
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    layers_path = plan_path.with_name(plan_path.name + LAYERS_SUFFIX)
    with atomic_file(layers_path) as tmp:
        tmp.write_text(info)
    summary = summarize_layers(info, plan.onnx_ops)
    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
        precision=plan.precision, target=plan.target, profiles=[plan.profile],
        device_memory_bytes=device_memory_per_profile(engine), onnx_sha256=plan.onnx_sha256,
        onnx_file=plan.onnx_path.name, plan_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        hardware_compat=plan.hardware_compat, dla_core=plan.decisions.dla_core,
        decisions=plan.decisions.as_dict(), layer_summary=summary.as_dict() | {"build": build_facts},
        adaret_version=__version__, built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(seconds, 1), **fields_from_metadata(plan.metadata))
    return BuildResult(plan_path, write_sidecar(plan_path, sidecar), layers_path, sidecar, summary, plan)


def onnx_for_parser(plan: BuildPlan, work: Path) -> Path:
    """The ONNX the parser reads: the input itself, or (TensorRT 11.x, fp16/bf16) its AutoCast conversion."""
    conversion = plan.decisions.onnx_conversion
    if conversion is None:
        return plan.onnx_path
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError:
        raise AdaretError(f"TensorRT {plan.decisions.tensorrt_major}.x takes precision from the ONNX types, and "
                          f"nvidia-modelopt (AutoCast) is not installed to convert it: pip install "
                          f"'adaret[gpu]', or build from an ONNX already cast to {plan.precision}") from None
    low = conversion.removeprefix("autocast-")
    model = convert_to_mixed_precision(onnx_path=str(plan.onnx_path), low_precision_type=low,
                                       nodes_to_exclude=[f"^{re.escape(name)}$" for name in plan.fp32_nodes],
                                       keep_io_types=True)
    out = work / f"{plan.onnx_path.stem}.{low}.onnx"
    onnx.save(model, str(out))
    return out


class NetworkFromOnnx:
    """Lazy loader: (builder, network, parser) for an ONNX path, with the decided network creation flags."""

    def __init__(self, path: Path, decisions: BuildDecisions):
        self.path, self.decisions = path, decisions

    def __call__(self, trt: ModuleType, logger: Any) -> tuple[Any, Any, Any]:
        builder = trt.Builder(logger)
        flags = 0
        for name in self.decisions.network_flags:
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.path)):  # from the path, so external weights resolve
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise AdaretError(f"the TensorRT ONNX parser rejected {self.path.name}: " + " | ".join(errors[:3]))
        return builder, network, parser


class ConfigFromPlan:
    """Lazy loader: an IBuilderConfig with the plan's decisions, profile and timing cache applied."""

    def __init__(self, plan: BuildPlan, timing_cache: str | Path | None):
        self.plan = plan
        self.timing_cache = Path(timing_cache) if timing_cache else None
        self.pinned: int | None = None  # layers pinned to FP32 (10.x), for the sidecar

    def __call__(self, trt: ModuleType, builder: Any, network: Any) -> Any:
        config = builder.create_builder_config()
        apply_decisions(trt, config, self.plan.decisions)
        config.add_optimization_profile(_optimization_profile(builder, self.plan.profile))
        _load_timing_cache(config, self.timing_cache)
        if self.plan.decisions.keep_score_path_fp32 and self.plan.decisions.tensorrt_major == 10:
            self.pinned = pin_layers_fp32(trt, network, set(self.plan.fp32_nodes))
        return config


def apply_decisions(trt: ModuleType, config: Any, decisions: BuildDecisions) -> None:
    for name in decisions.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for pool, size in decisions.memory_pools.items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, pool), size)
    config.builder_optimization_level = decisions.optimization_level
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, decisions.profiling_verbosity)
    for feature, enabled in decisions.preview_features.items():
        config.set_preview_feature(getattr(trt.PreviewFeature, feature), enabled)
    if decisions.hardware_compatibility_level:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                      decisions.hardware_compatibility_level)
    if decisions.default_device_type == "DLA":
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = decisions.dla_core


def _optimization_profile(builder: Any, profile: Profile) -> Any:
    trt_profile = builder.create_optimization_profile()
    for name, shapes in profile.inputs.items():
        trt_profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
    return trt_profile


def _load_timing_cache(config: Any, path: Path | None) -> None:
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(blob), False):
        # a cache from another GPU or TensorRT version is refused: start a fresh one rather than fail
        config.set_timing_cache(config.create_timing_cache(b""), False)


def save_timing_cache(config: Any, path: str | Path | None) -> None:
    if path is None:
        return
    with atomic_file(Path(path)) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))


def pin_layers_fp32(trt: ModuleType, network: Any, names: set[str]) -> int:
    """TensorRT 10.x: run the layers parsed from ``names`` in FP32 (honoured with PREFER_PRECISION_CONSTRAINTS).
    The parser names a layer after its ONNX node; helper layers it adds keep other names and are left alone."""
    floating = {trt.float32, trt.float16, getattr(trt, "bfloat16", trt.float16)}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floating]
        if layer.name not in names or not outputs:
            continue
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def planned_placement(config: Any, network: Any) -> dict[str, Any]:
    """Which network layers TensorRT reports as DLA-capable (IBuilderConfig.can_run_on_dla), before the build."""
    dla, gpu = [], []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        (dla if config.can_run_on_dla(layer) else gpu).append(layer.name)
    return {"dla_capable": len(dla), "gpu_only": len(gpu), "gpu_only_layers": gpu[:50]}
