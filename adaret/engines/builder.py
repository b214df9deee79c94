"""ONNX -> TensorRT plan through Polygraphy's lazy loaders, with a JSON sidecar and the engine inspector's layer
report (TensorRT 10.x and 11.x).

Two halves. ``prepare_build`` needs no TensorRT: it lints the graph, pins the profile to the graph's bucket and
decides the ``CreateConfig`` arguments for a given TensorRT version (tested here). ``execute_build`` turns the
decisions into one Polygraphy loader chain and calls it once:

    SaveEngine(EngineFromBytes(EngineBytesFromNetwork(
        SetLayerPrecisions(NetworkFromOnnxPath(onnx), {score-path layer: FP32}),
        config=PostprocessConfig(CreateConfig(**kwargs), BuildFacts), save_timing_cache=cache)), path=<temp>)

The temporary plan is renamed onto its final path only when everything succeeded. Only ``execute_build`` needs
TensorRT and a GPU; it follows Polygraphy's and NVIDIA's documented API and is tested where they exist.
"""

from __future__ import annotations

import datetime
import functools
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from adaret import __version__
from adaret.core import graph_facts as gf
from adaret.core.errors import AdaretError
from adaret.core.fileio import atomic_file, ensure_writable_dir, sha256_file
from adaret.core.metadata import ExportMetadata
from adaret.engines.decisions import BuildDecisions, BuildRequest, EnumResolver, decide_build_config, enum_name
from adaret.engines.environment import GpuInfo, current_gpu, import_tensorrt
from adaret.engines.inspection import LayerSummary, summarize_layers
from adaret.engines.lint import LintReport, lint_model
from adaret.engines.profiles import Profile, ProfileSpec, parse_profile_spec, profile_for_graph
from adaret.engines.sidecar import EngineSidecar, fields_from_metadata, write_sidecar
from adaret.engines.trt_session import device_memory_per_profile, polygraphy_call

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
    onnx_ops: dict[str, str]  # node name -> op type, for the layer report
    metadata: ExportMetadata | None = None


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
                  workspace_bytes: int | None = None, timing_cache: str | Path | None = None) -> BuildPlan:
    """Lint, profile and decide; raises AdaretError on blockers or impossible combinations."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise AdaretError(f"{onnx_path} does not exist")
    model = gf.load_model(onnx_path)
    report = _lint(model, onnx_path, target, precision)
    spec = parse_profile_spec(profiles) if isinstance(profiles, str) else profiles
    profile = profile_for_graph(gf.input_dims(model), spec, static=target == "jetson-orin")
    request = BuildRequest(tensorrt_version, target, precision, dla_core, hardware_compat, optimization_level,
                           workspace_bytes, onnx_has_qdq=gf.has_qdq(model),
                           onnx_low_precision=gf.has_low_precision_weights(model), profile=profile,
                           score_path=tuple(gf.score_path_node_names(model)),
                           timing_cache=str(timing_cache) if timing_cache else None)
    return BuildPlan(onnx_path, sha256_file(onnx_path), target, precision, hardware_compat, report, profile,
                     decide_build_config(request), {node.name: node.op_type for node in gf.nodes(model) if node.name},
                     ExportMetadata.from_props_if_any(model.metadata_props, onnx_path.name))


def _lint(model: Any, onnx_path: Path, target: str, precision: str) -> LintReport:
    report = lint_model(model, target=target, dla=target == "jetson-orin", precision=precision)
    report.source = str(onnx_path)
    if not report.passed:
        where = "; ".join(f"{f.rule} at {f.node}" for f in report.blockers[:3])
        raise AdaretError(f"{onnx_path.name} is not ready for TensorRT: {len(report.blockers)} blocker(s) ({where}"
                          f"{'; ...' if len(report.blockers) > 3 else ''}); see adaret build --check {onnx_path}")
    return report


def build_engine(onnx_path: str | Path, plan_path: str | Path, *, target: str = "datacenter",
                 precision: str = "fp16", profiles: str | ProfileSpec | None = None,
                 timing_cache: str | Path | None = None, dla_core: int | None = None,
                 hardware_compat: str | None = None) -> Path:
    """Build ``plan_path`` (plus ``<plan>.json`` and ``<plan>.layers.json``) from ``onnx_path``."""
    trt = import_tensorrt()  # first: without TensorRT, say so before reading the ONNX
    plan = prepare_build(onnx_path, tensorrt_version=trt.__version__, target=target, precision=precision,
                         profiles=profiles, dla_core=dla_core, hardware_compat=hardware_compat,
                         timing_cache=timing_cache)
    return execute_build(plan, plan_path).plan_path


def tensorrt_enum(trt: ModuleType) -> EnumResolver:
    """Resolves the decisions' dotted names against ``trt``: ``"MemoryPoolType.WORKSPACE"`` -> the member."""
    return lambda name: functools.reduce(getattr, name.split("."), trt)


class BuildFacts:
    """``PostprocessConfig`` step, called with the parsed network and Polygraphy's config: applies what CreateConfig
    has no keyword for, and records for the sidecar what only the network knows before the build."""

    def __init__(self, decisions: BuildDecisions):
        self.decisions = decisions
        self.facts: dict[str, Any] = {"fp32_pinned_layers": None, "dla": None}

    def __call__(self, builder: Any, network: Any, config: Any) -> None:
        pinned = set(self.decisions.layer_precisions())
        if pinned:  # SetLayerPrecisions only warns about names it cannot find; the count shows how many it did
            self.facts["fp32_pinned_layers"] = sum(1 for layer in network if layer.name in pinned)
        if self.decisions.use_dla:
            config.DLA_core = self.decisions.dla_core  # CreateConfig(use_dla=True) always picks core 0
            self.facts["dla"] = planned_placement(config, network)


def engine_loader(decisions: BuildDecisions, parse_path: Path, save_path: Path, *, enum: EnumResolver = enum_name,
                  facts: BuildFacts | None = None) -> Any:
    """The lazy chain that parses, builds, deserialises and saves; nothing runs until it is called. ``enum`` is
    ``tensorrt_enum(trt)`` for a real build (the default keeps names, for inspection without TensorRT)."""
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        EngineFromBytes,
        NetworkFromOnnxPath,
        PostprocessConfig,
        SaveEngine,
        SetLayerPrecisions,
    )

    network = NetworkFromOnnxPath(str(parse_path))  # from the path, so external weights resolve
    precisions = decisions.layer_precisions(enum)
    if precisions:
        network = SetLayerPrecisions(network, precisions)
    config = PostprocessConfig(CreateConfig(**decisions.create_config_kwargs(enum)),
                               func=facts if facts is not None else BuildFacts(decisions))
    engine_bytes = EngineBytesFromNetwork(network, config=config, save_timing_cache=decisions.timing_cache)
    return SaveEngine(EngineFromBytes(engine_bytes), path=str(save_path))


def execute_build(plan: BuildPlan, plan_path: str | Path) -> BuildResult:
    """Build, save (atomically) and describe the plan; needs TensorRT and a GPU."""
    trt = import_tensorrt()
    gpu = current_gpu()
    plan_path = Path(plan_path)
    started = time.perf_counter()
    if plan.decisions.timing_cache:  # Polygraphy locks <cache>.lock beside the cache, so its folder must exist
        ensure_writable_dir(Path(plan.decisions.timing_cache).parent)
    facts = BuildFacts(plan.decisions)
    with tempfile.TemporaryDirectory(prefix=".adaret-build.") as work, atomic_file(plan_path) as tmp:
        chain = engine_loader(plan.decisions, onnx_for_parser(plan, Path(work)), tmp, enum=tensorrt_enum(trt),
                              facts=facts)
        engine = polygraphy_call(chain, f"TensorRT could not build {plan.onnx_path.name}")
    return _finish(trt, plan, plan_path, engine, gpu, facts.facts, time.perf_counter() - started)


def _finish(trt: ModuleType, plan: BuildPlan, plan_path: Path, engine: Any, gpu: GpuInfo, build_facts: dict[str, Any],
            seconds: float) -> BuildResult:
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    layers_path = plan_path.with_name(plan_path.name + LAYERS_SUFFIX)
    with atomic_file(layers_path) as tmp:
        tmp.write_text(info)
    summary = summarize_layers(info, plan.onnx_ops)
    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
        precision=plan.precision, target=plan.target, profiles=[plan.profile],
        device_memory_bytes=device_memory_per_profile(engine), onnx_sha256=plan.onnx_sha256,
        onnx_file=plan.onnx_path.name, plan_sha256=sha256_file(plan_path),  # what SaveEngine wrote
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
                                       nodes_to_exclude=[f"^{re.escape(name)}$" for name in plan.decisions.fp32_nodes],
                                       keep_io_types=True)
    out = work / f"{plan.onnx_path.stem}.{low}.onnx"
    onnx.save(model, str(out))
    return out


def planned_placement(config: Any, network: Any) -> dict[str, Any]:
    """Which network layers TensorRT reports as DLA-capable (IBuilderConfig.can_run_on_dla), before the build."""
    dla, gpu = [], []
    for layer in network:
        (dla if config.can_run_on_dla(layer) else gpu).append(layer.name)
    return {"dla_capable": len(dla), "gpu_only": len(gpu), "gpu_only_layers": gpu[:50]}
