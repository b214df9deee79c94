"""What the builder will do, decided as data before TensorRT is touched (pure Python, tested without TensorRT).

TensorRT 10.x builds weakly typed networks by default: precision is a builder flag (FP16, BF16, INT8 for
explicitly quantised Q/DQ graphs) and TensorRT picks kernels per layer. TensorRT 11.x removed those flags:
every network is strongly typed, so the precision comes from the ONNX types. For fp16/bf16 on 11.x the ONNX is
converted first with ModelOpt AutoCast (``convert_to_mixed_precision``), which is the documented migration
path; the retention score path is kept in FP32 on both majors, because the order of the scores decides which
tokens survive and FP16 rounding can swap near-ties. On 10.x that is done with per-layer precision and
PREFER_PRECISION_CONSTRAINTS; on 11.x by excluding those nodes from AutoCast.

``BuildDecisions`` names every TensorRT enum member by its Python attribute name (``BuilderFlag.FP16`` ->
``"FP16"``), so ``builder.py`` applies them with ``getattr`` and the decisions can be compared in tests.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from adaret.errors import AdaretError

PRECISIONS = ("fp32", "fp16", "bf16", "int8-qdq")
TARGETS = ("datacenter", "jetson-orin")
HARDWARE_COMPAT = {"ampere+": "AMPERE_PLUS"}
SUPPORTED_MAJORS = (10, 11)
GiB = 1 << 30
DEFAULT_WORKSPACE = {"datacenter": 4 * GiB, "jetson-orin": 1 * GiB}  # Orin shares DRAM with the CPU
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default; 4-5 search longer for (sometimes) faster engines


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked for, plus the two facts about the ONNX that change the decisions."""

    tensorrt_version: str
    target: str = "datacenter"
    precision: str = "fp16"
    dla_core: int | None = None
    hardware_compat: str | None = None
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL
    workspace_bytes: int | None = None
    onnx_has_qdq: bool = False
    onnx_low_precision: bool = False  # already FP16/BF16 (cast or autocast before the build)


@dataclass(frozen=True)
class BuildDecisions:
    tensorrt_major: int
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members to set
    memory_pools: dict[str, int]  # MemoryPoolType member -> bytes
    optimization_level: int
    profiling_verbosity: str  # ProfilingVerbosity member; DETAILED feeds the engine inspector
    preview_features: dict[str, bool]  # PreviewFeature member -> enabled
    default_device_type: str  # DeviceType member
    dla_core: int | None
    hardware_compatibility_level: str | None  # HardwareCompatibilityLevel member
    onnx_conversion: str | None  # "autocast-fp16" / "autocast-bf16": convert the ONNX before parsing (11.x)
    keep_score_path_fp32: bool  # pin the retention score path to FP32 (layer precision on 10.x, AutoCast on 11.x)
    static_shapes: bool  # profiles must have min == opt == max (DLA)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """JSON-ready (tuples as lists), so that it survives the sidecar's round trip unchanged."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


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
        flags.append("GPU_FALLBACK")
        notes.append("DLA runs what it can; TopK/Gather and int64 layers fall back to the GPU")
    # Wherever TensorRT (or AutoCast) may lower float precision, the score path stays FP32.
    keep_fp32 = bool({"FP16", "BF16"} & set(flags)) or conversion is not None
    if keep_fp32 and major == 10:  # 11.x removed the flag; there AutoCast leaves those nodes in FP32
        flags.append("PREFER_PRECISION_CONSTRAINTS")
    workspace = request.workspace_bytes or DEFAULT_WORKSPACE[request.target]
    return BuildDecisions(
        tensorrt_major=major,
        network_flags=(),  # EXPLICIT_BATCH is ignored in 10.x and gone in 11.x; STRONGLY_TYPED: see below
        builder_flags=tuple(flags),
        memory_pools={"WORKSPACE": workspace},
        optimization_level=request.optimization_level,
        profiling_verbosity="DETAILED",
        preview_features={},
        default_device_type="DLA" if dla else "GPU",
        dla_core=(request.dla_core if request.dla_core is not None else 0) if dla else None,
        hardware_compatibility_level=HARDWARE_COMPAT[request.hardware_compat] if request.hardware_compat else None,
        onnx_conversion=conversion,
        keep_score_path_fp32=keep_fp32,
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


def _precision_flags(request: BuildRequest, major: int) -> tuple[list[str], str | None, list[str]]:
    precision, notes = request.precision, []
    if major >= 11:
        # Strongly typed is the only mode; the STRONGLY_TYPED creation flag is deprecated and ignored, so it is
        # not set. Precision must already be in the ONNX.
        if precision in ("fp16", "bf16") and not request.onnx_low_precision:
            notes.append(f"TensorRT {major}.x has no precision flags: the ONNX is converted with ModelOpt "
                         f"AutoCast to {precision} before parsing (score path kept in FP32)")
            return [], f"autocast-{precision}", notes
        if precision == "int8-qdq":
            notes.append("INT8 comes from the graph's Q/DQ nodes (strong typing); no builder flag")
        return [], None, notes
    flags = {"fp32": [], "fp16": ["FP16"], "bf16": ["BF16"], "int8-qdq": ["INT8", "FP16"]}[precision]
    if precision == "int8-qdq":
        notes.append("INT8 flag with a Q/DQ graph selects explicit quantisation; FP16 covers unquantised layers")
    return list(flags), None, notes
