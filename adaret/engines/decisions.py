"""What the builder will do, decided as data before TensorRT is touched (pure Python, tested without TensorRT).

The decisions are Polygraphy ``CreateConfig`` keyword arguments (``BuildDecisions.create_config_kwargs``) plus
what CreateConfig has no keyword for: the layer precisions (Polygraphy's ``SetLayerPrecisions``), the DLA core
and, on TensorRT 11.x, the ONNX conversion before parsing.

TensorRT 10.x builds weakly typed networks by default: precision is a builder flag (FP16, BF16, INT8 for
explicitly quantised Q/DQ graphs) and TensorRT picks kernels per layer. TensorRT 11.x removed those flags:
every network is strongly typed, so the precision comes from the ONNX types. For fp16/bf16 on 11.x the ONNX is
converted first with ModelOpt AutoCast (``convert_to_mixed_precision``), which is the documented migration
path; the retention score path is kept in FP32 on both majors, because the order of the scores decides which
tokens survive and FP16 rounding can swap near-ties. On 10.x that is done with FP32 layer precisions and
``precision_constraints="prefer"``; on 11.x by excluding those nodes from AutoCast.

TensorRT enum members are named as dotted strings (``"MemoryPoolType.WORKSPACE"``). The methods that emit
keyword arguments take a resolver that turns a name into the member (``builder.tensorrt_enum(trt)``); the
default keeps the name, so that tests compare the arguments without TensorRT.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from adaret.core.errors import AdaretError
from adaret.engines.profiles import Profile

PRECISIONS = ("fp32", "fp16", "bf16", "int8-qdq")
TARGETS = ("datacenter", "jetson-orin")
HARDWARE_COMPAT = {"ampere+": "AMPERE_PLUS"}
SUPPORTED_MAJORS = (10, 11)
GiB = 1 << 30
DEFAULT_WORKSPACE = {"datacenter": 4 * GiB, "jetson-orin": 1 * GiB}  # Orin shares DRAM with the CPU
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default; 4-5 search longer for (sometimes) faster engines
#: CreateConfig's precision keywords set for each precision on TensorRT 10.x (11.x has none: strongly typed)
PRECISION_KWARGS: dict[str, tuple[str, ...]] = {"fp32": (), "fp16": ("fp16",), "bf16": ("bf16",),
                                                "int8-qdq": ("int8", "fp16")}
FP32 = "DataType.FLOAT"

EnumResolver = Callable[[str], Any]


def enum_name(name: str) -> str:
    """The default resolver: keep ``"MemoryPoolType.WORKSPACE"`` as it is (no TensorRT needed)."""
    return name


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked for, plus the facts about the ONNX that change the decisions."""

    tensorrt_version: str
    target: str = "datacenter"
    precision: str = "fp16"
    dla_core: int | None = None
    hardware_compat: str | None = None
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL
    workspace_bytes: int | None = None
    onnx_has_qdq: bool = False
    onnx_low_precision: bool = False  # already FP16/BF16 (cast or autocast before the build)
    profile: Profile | None = None  # the graph's bucket (profiles.profile_for_graph); None: Polygraphy's default
    score_path: tuple[str, ...] = ()  # graph_facts.score_path_node_names: what stays FP32
    timing_cache: str | None = None  # read before the build and updated after it


@dataclass(frozen=True)
class BuildDecisions:
    tensorrt_major: int
    precision_flags: tuple[str, ...]  # CreateConfig boolean keywords to set: "fp16", "bf16", "int8"
    precision_constraints: str | None  # "prefer": TensorRT honours the FP32 layer precisions where it can
    keep_score_path_fp32: bool  # the build may lower float precision, so the score path is pinned
    fp32_nodes: tuple[str, ...]  # the score path's nodes (layer precisions on 10.x, AutoCast exclusions on 11.x)
    profiles: tuple[Profile, ...]  # one: a static-K graph is one sequence bucket, only the batch varies
    workspace_bytes: int
    optimization_level: int
    profiling_verbosity: str  # ProfilingVerbosity member; DETAILED feeds the engine inspector
    hardware_compatibility_level: str | None  # HardwareCompatibilityLevel member
    use_dla: bool
    allow_gpu_fallback: bool
    dla_core: int | None
    timing_cache: str | None
    onnx_conversion: str | None  # "autocast-fp16" / "autocast-bf16": convert the ONNX before parsing (11.x)
    static_shapes: bool  # profiles must have min == opt == max (DLA)
    notes: tuple[str, ...] = ()

    def create_config_kwargs(self, enum: EnumResolver = enum_name) -> dict[str, Any]:
        """Keyword arguments for ``polygraphy.backend.trt.CreateConfig``."""
        compat = self.hardware_compatibility_level
        return {
            # Polygraphy clears TF32, which TensorRT enables by default: kept off, because TF32 rounds matmul
            # inputs to a 10-bit mantissa and would undo the FP32 pin on the score path.
            "tf32": False,
            **{flag: flag in self.precision_flags for flag in ("fp16", "bf16", "int8")},
            "precision_constraints": self.precision_constraints,
            "profiles": [polygraphy_profile(p) for p in self.profiles] or None,
            "load_timing_cache": self.timing_cache,
            "memory_pool_limits": {enum("MemoryPoolType.WORKSPACE"): self.workspace_bytes},
            "builder_optimization_level": self.optimization_level,
            "profiling_verbosity": enum(f"ProfilingVerbosity.{self.profiling_verbosity}"),
            "hardware_compatibility_level": enum(f"HardwareCompatibilityLevel.{compat}") if compat else None,
            "use_dla": self.use_dla,
            "allow_gpu_fallback": self.allow_gpu_fallback,
        }

    def layer_precisions(self, enum: EnumResolver = enum_name) -> dict[str, Any]:
        """``SetLayerPrecisions``' mapping: layer name -> FP32, for the score path on 10.x (the parser names a
        layer after its ONNX node). Empty on 11.x, where AutoCast already left those nodes in FP32."""
        if self.tensorrt_major != 10 or not self.keep_score_path_fp32:
            return {}
        return {name: enum(FP32) for name in self.fp32_nodes}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists, profiles as dicts), so that it survives the sidecar's round trip."""
        data = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        data["profiles"] = [profile.as_dict() for profile in self.profiles]
        return data


def polygraphy_profile(profile: Profile) -> Any:
    """Polygraphy's ``Profile().add(name, min, opt, max)`` for one adaret profile (pure Python, no TensorRT)."""
    from polygraphy.backend.trt import Profile as TrtProfile  # lazy: the CLI imports this module on every run

    out = TrtProfile()
    for name, shapes in profile.inputs.items():
        out.add(name, min=shapes.min, opt=shapes.opt, max=shapes.max)
    return out


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0, 26)``; pre-release suffixes (``10.0.0b6``) are ignored."""
    parts = []
    for piece in str(text).strip().split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    if not parts:
        raise AdaretError(f"cannot read a TensorRT version from {text!r}")
    return tuple(parts)


def decide_build_config(request: BuildRequest) -> BuildDecisions:
    """The builder configuration for ``request``; raises AdaretError for combinations TensorRT cannot build."""
    major = _check_request(request)
    dla = request.target == "jetson-orin"
    flags, conversion, notes = _precision_flags(request, major)
    if dla:
        notes.append("DLA runs what it can; TopK/Gather and int64 layers fall back to the GPU")
    # Wherever TensorRT (or AutoCast) may lower float precision, the score path stays FP32.
    keep_fp32 = bool({"fp16", "bf16"} & set(flags)) or conversion is not None
    return BuildDecisions(
        tensorrt_major=major,
        precision_flags=flags,
        # 11.x removed the precision-constraint flags; there AutoCast leaves the score path in FP32
        precision_constraints="prefer" if keep_fp32 and major == 10 else None,
        keep_score_path_fp32=keep_fp32,
        fp32_nodes=tuple(request.score_path) if keep_fp32 else (),
        profiles=(request.profile,) if request.profile is not None else (),
        workspace_bytes=request.workspace_bytes or DEFAULT_WORKSPACE[request.target],
        optimization_level=request.optimization_level,
        profiling_verbosity="DETAILED",
        hardware_compatibility_level=HARDWARE_COMPAT[request.hardware_compat] if request.hardware_compat else None,
        use_dla=dla,
        allow_gpu_fallback=dla,  # TopK, Gather and friends have no DLA layer
        dla_core=(request.dla_core if request.dla_core is not None else 0) if dla else None,
        timing_cache=request.timing_cache,
        onnx_conversion=conversion,
        static_shapes=dla,
        notes=tuple(notes),
    )


def _check_request(request: BuildRequest) -> int:
    major = parse_version(request.tensorrt_version)[0]
    if major not in SUPPORTED_MAJORS:
        raise AdaretError(f"TensorRT {request.tensorrt_version} is not supported: adaret builds with TensorRT "
                          f"10.x or 11.x")
    if request.target not in TARGETS:
        raise AdaretError(f"unknown target {request.target!r}; choose one of {', '.join(TARGETS)}")
    if request.precision not in PRECISIONS:
        raise AdaretError(f"unknown precision {request.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if request.hardware_compat is not None and request.hardware_compat not in HARDWARE_COMPAT:
        raise AdaretError(f"unknown hardware compatibility {request.hardware_compat!r}; use "
                          f"{', '.join(HARDWARE_COMPAT)}")
    if not 0 <= request.optimization_level <= 5:
        raise AdaretError(f"builder optimization level must be 0..5, got {request.optimization_level}")
    if request.precision == "int8-qdq" and not request.onnx_has_qdq:
        raise AdaretError("precision int8-qdq builds an explicitly quantised graph, and this ONNX has no Q/DQ "
                          "nodes: quantise it first (adaret calibrate)")
    if request.dla_core is not None and request.target != "jetson-orin":
        raise AdaretError("--dla-core needs --target jetson-orin (datacenter GPUs have no DLA)")
    if request.target == "jetson-orin":
        _check_jetson(request, major)
    return major


def _check_jetson(request: BuildRequest, major: int) -> None:
    if major != 10:
        raise AdaretError(f"the jetson-orin preset targets TensorRT 10.x (JetPack 6); found TensorRT "
                          f"{request.tensorrt_version}")
    if request.precision in ("fp32", "bf16"):
        raise AdaretError(f"DLA runs FP16 or INT8 only; --precision {request.precision} is not possible on "
                          f"jetson-orin (use fp16 or int8-qdq)")
    if request.hardware_compat is not None:
        raise AdaretError("hardware-compatible engines are for Ampere+ datacenter GPUs; they cannot use DLA")
    if request.dla_core is not None and request.dla_core not in (0, 1):
        raise AdaretError(f"Jetson Orin has DLA cores 0 and 1, not {request.dla_core}")
    if request.profile is not None and not request.profile.static:
        raise AdaretError(f"DLA engines need one shape per input, but the profile ranges over batches "
                          f"{request.profile.batch_range}")


def _precision_flags(request: BuildRequest, major: int) -> tuple[tuple[str, ...], str | None, list[str]]:
    precision, notes = request.precision, []
    if major >= 11:
        # Strongly typed is the only mode, so precision must already be in the ONNX.
        if precision in ("fp16", "bf16") and not request.onnx_low_precision:
            notes.append(f"TensorRT {major}.x has no precision flags: the ONNX is converted with ModelOpt "
                         f"AutoCast to {precision} before parsing (score path kept in FP32)")
            return (), f"autocast-{precision}", notes
        if precision == "int8-qdq":
            notes.append("INT8 comes from the graph's Q/DQ nodes (strong typing); no builder flag")
        return (), None, notes
    if precision == "int8-qdq":
        notes.append("INT8 flag with a Q/DQ graph selects explicit quantisation; FP16 covers unquantised layers")
    return PRECISION_KWARGS[precision], None, notes
