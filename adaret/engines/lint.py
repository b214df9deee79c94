"""TensorRT-readiness lint: checks an ONNX graph against the parser's documented constraints, without TensorRT.

Each finding names the node, says what TensorRT will do with it and how to fix it. Blockers stop
``adaret build``; warnings and info are printed and kept in the report.
"""

from __future__ import annotations

import collections
import enum
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from adaret.core import graph_facts as gf
from adaret.core.constants import MIN_OPSET as EXPORT_OPSET
from adaret.core.metadata import PREFIX
from adaret.engines import support_matrix as sm

TARGETS = ("datacenter", "jetson-orin")
INT32_MAX = np.iinfo(np.int32).max
STATIC_EXPORT_FIX = "export the static form: adaret export --static --seq-len 128,256,512 (one graph per bucket)"


class Severity(str, enum.Enum):
    BLOCKER = "blocker"
    WARNING = "warning"
    INFO = "info"


_ORDER = {Severity.BLOCKER: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    rule: str
    node: str
    message: str
    fix: str


@dataclass
class LintReport:
    source: str
    target: str
    dla: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.BLOCKER]

    @property
    def passed(self) -> bool:
        return not self.blockers

    def rules(self, severity: Severity | None = None) -> set[str]:
        return {f.rule for f in self.findings if severity is None or f.severity is severity}

    def as_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "dla": self.dla, "passed": self.passed,
                "parser_matrix": sm.PARSER_MATRIX_VERSION,
                "findings": [asdict(f) | {"severity": f.severity.value} for f in self.findings]}

    def summary(self) -> str:
        counts = collections.Counter(f.severity for f in self.findings)
        verdict = "ready for TensorRT" if self.passed else "NOT ready for TensorRT"
        where = f"{self.target}{' + DLA' if self.dla else ''}"
        return (f"{Path(self.source).name} ({where}): {counts[Severity.BLOCKER]} blocker(s), "
                f"{counts[Severity.WARNING]} warning(s), {counts[Severity.INFO]} info; {verdict}")

    def table(self, width: int = 120) -> str:
        """Findings as a fixed-width table, blockers first; the fix is printed under each message."""
        cols = (8, 22, 26)
        text_width = max(40, width - sum(cols) - len(cols))
        lines = [f"{'SEVERITY':<{cols[0]}} {'RULE':<{cols[1]}} {'NODE':<{cols[2]}} MESSAGE / FIX",
                 "-" * min(width, sum(cols) + len(cols) + text_width)]
        for finding in self.findings:
            body = textwrap.wrap(finding.message, text_width) + textwrap.wrap("fix: " + finding.fix, text_width)
            node = finding.node if len(finding.node) <= cols[2] else finding.node[: cols[2] - 1] + "~"
            head = f"{finding.severity.value:<{cols[0]}} {finding.rule:<{cols[1]}} {node:<{cols[2]}} "
            lines.append(head + body[0])
            lines += [" " * len(head) + line for line in body[1:]]
        return "\n".join([*lines, self.summary()])


@dataclass(frozen=True)
class _Context:
    model: ir.Model
    target: str
    dla: bool
    precision: str | None
    origins: dict[ir.Value, gf.Origin]
    score_nodes: frozenset[str]


def lint_model(source: str | Path | onnx.ModelProto | ir.Model, *, target: str = "datacenter",
               dla: bool = False, precision: str | None = None) -> LintReport:
    """Lint ``source`` for ``target``; ``dla`` adds the DLA rules, ``precision`` the INT8 Q/DQ ones."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    model = gf.with_types(gf.load_model(source))
    ctx = _Context(model, target, dla, precision, gf.value_origins(model), frozenset(gf.score_path_node_names(model)))
    findings = [finding for rule in RULES for finding in rule(ctx)]
    findings.sort(key=lambda f: _ORDER[f.severity])
    label = str(source) if isinstance(source, str | Path) else (model.graph.name or "<in-memory model>")
    return LintReport(label, target, dla, findings)


# ---------------------------------------------------------------------------------------------- rules


def _check_opset(ctx: _Context) -> Iterator[Finding]:
    opset = gf.default_opset(ctx.model)
    if opset is None:
        yield Finding(Severity.BLOCKER, "opset", "<model>", "the model imports no default-domain opset",
                      f"re-export with torch.onnx.export(..., opset_version={EXPORT_OPSET})")
    elif opset < sm.MIN_OPSET:
        yield Finding(Severity.BLOCKER, "opset", "<model>",
                      f"opset {opset} is older than the parser's minimum ({sm.MIN_OPSET})",
                      f"re-export with --opset {EXPORT_OPSET}, or upgrade it with onnx.version_converter")
    elif opset > sm.MAX_OPSET_11X:
        yield Finding(Severity.BLOCKER, "opset", "<model>",
                      f"opset {opset} is newer than any TensorRT parser supports (11.x: <= {sm.MAX_OPSET_11X})",
                      f"re-export with --opset {EXPORT_OPSET}")
    elif opset > sm.MAX_OPSET_10X:
        severity = Severity.BLOCKER if ctx.target == "jetson-orin" else Severity.WARNING
        yield Finding(severity, "opset", "<model>",
                      f"opset {opset} is beyond TensorRT 10.x's parser (opset <= {sm.MAX_OPSET_10X}); only 11.x "
                      f"accepts it" + (" and Jetson Orin (JetPack 6) ships 10.x" if ctx.target == "jetson-orin"
                                       else ""),
                      f"re-export with --opset {EXPORT_OPSET}")


def _check_ops(ctx: _Context) -> Iterator[Finding]:
    for node in gf.nodes(ctx.model):
        name = gf.node_label(node)
        if node.domain not in ("", "ai.onnx"):
            yield Finding(Severity.BLOCKER, "custom-domain", name,
                          f"{node.domain}::{node.op_type} has no TensorRT importer (only a plugin of that name "
                          f"could load it)",
                          "build from the graph before ONNX Runtime-specific fusions (com.microsoft ops), or "
                          "register a TensorRT plugin for it")
        elif node.op_type in sm.UNSUPPORTED_OPS or node.op_type not in sm.SUPPORTED_OPS:
            listed = "marked unsupported" if node.op_type in sm.UNSUPPORTED_OPS else "not listed"
            yield Finding(Severity.BLOCKER, "unsupported-op", name,
                          f"{node.op_type} is {listed} in the {sm.PARSER_MATRIX_VERSION} support matrix",
                          "fold it away (polygraphy surgeon sanitize --fold-constants) or express it with "
                          "supported ops")
        else:
            yield from _check_operand_type(node, name)
            yield from _check_constant_inputs(node, name)
            yield from _check_op_restrictions(ctx, node, name)


def _typed_operand(node: ir.Node) -> ir.Value | None:
    if node.op_type == "Where":
        return node.inputs[1] if len(node.inputs) > 1 else None
    if not node.inputs or node.op_type in ("Constant", "ConstantOfShape", "EyeLike") or node.op_type.startswith(
            "Random"):
        return node.outputs[0] if node.outputs else None
    return node.inputs[0]


def _check_operand_type(node: ir.Node, name: str) -> Iterator[Finding]:
    dtype = gf.dtype_name(_typed_operand(node))
    allowed = sm.SUPPORTED_OPS[node.op_type]
    if dtype is not None and dtype not in allowed and not (dtype == "DOUBLE" and "FLOAT" in allowed):
        yield Finding(Severity.BLOCKER, "dtype", name,
                      f"{node.op_type} on {dtype} is not supported (the parser takes {', '.join(sorted(allowed))})",
                      f"insert a Cast to one of {', '.join(sorted(allowed))} before it, or compute it in float")


def _check_constant_inputs(node: ir.Node, name: str) -> Iterator[Finding]:
    for index in sm.CONSTANT_INPUTS.get(node.op_type, ()):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is not None and gf.const_array(value) is None:
            yield Finding(Severity.BLOCKER, "constant-input", name,
                          f"{node.op_type} input {index} ({value.name}) must be an initializer or constant for "
                          f"the TensorRT parser, but it is computed at run time",
                          "fold it to a constant (polygraphy surgeon sanitize --fold-constants) or export with "
                          "fixed axes")


def _check_op_restrictions(ctx: _Context, node: ir.Node, name: str) -> Iterator[Finding]:
    if node.op_type == "TopK":
        yield from _check_topk(ctx, node, name)
    elif node.op_type == "LayerNormalization" and any(
            out is not None and (out.uses() or out.is_graph_output()) for out in node.outputs[1:]):
        yield Finding(Severity.BLOCKER, "layernorm-outputs", name,
                      "LayerNormalization Mean/InvStdDev outputs are used; the parser imports only Y",
                      "recompute the statistics with ReduceMean if they are needed")
    elif node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2] is not None:
        training = gf.const_array(node.inputs[2])
        if training is None or bool(training.reshape(-1)[0]):
            yield Finding(Severity.BLOCKER, "dropout-training", name,
                          "Dropout in training mode (or with a run-time training flag) cannot be imported",
                          "export the module in eval mode (.eval()) so Dropout is dropped")


def _check_topk(ctx: _Context, node: ir.Node, name: str) -> Iterator[Finding]:
    sorted_attr = node.attributes.get("sorted")
    if sorted_attr is not None and int(sorted_attr.value) == 0:
        yield Finding(Severity.BLOCKER, "topk-sorted", name, "TopK with sorted=0; the parser requires sorted=1",
                      "export with sorted=True (torch.topk default)")
    k_value = node.inputs[1] if len(node.inputs) > 1 else None
    if k_value is None:
        return  # opset < 10 keeps K in an attribute, which is always constant
    k = gf.const_array(k_value)
    origin = ctx.origins.get(k_value, gf.Origin.DATA)
    if k is not None:
        k_int = int(k.reshape(-1)[0])
        if k_int >= sm.TOPK_MAX_K:
            yield Finding(Severity.BLOCKER, "topk-k-limit", name,
                          f"TopK K={k_int} is beyond TensorRT's TopK limit (K must be < {sm.TOPK_MAX_K})",
                          f"use a shorter sequence bucket or a lower budget: K_l = max(2, ceil(f_l * n)) must stay "
                          f"below {sm.TOPK_MAX_K}")
    elif origin is gf.Origin.SHAPE:
        yield Finding(Severity.BLOCKER, "topk-dynamic-k", name,
                      f"TopK K ({k_value.name}) is not a constant: it is computed from the input shape at run "
                      f"time. Parsers before TensorRT 10 require an initializer, a run-time K cannot be checked "
                      f"against the K < {sm.TOPK_MAX_K} limit, and adaret's bucket profiles assume constant K",
                      STATIC_EXPORT_FIX)
    else:
        yield Finding(Severity.BLOCKER, "data-dependent-shape", name,
                      f"TopK K ({k_value.name}) depends on tensor values, so the output shape is data-dependent",
                      STATIC_EXPORT_FIX)


def _check_data_dependent(ctx: _Context) -> Iterator[Finding]:
    for node in gf.nodes(ctx.model):
        name = gf.node_label(node)
        if node.op_type in sm.DATA_DEPENDENT_SHAPE_OPS:
            yield Finding(Severity.BLOCKER, "data-dependent-shape", name,
                          f"{node.op_type} has a data-dependent output shape: TensorRT needs an output allocator "
                          f"and run-time synchronisation for it, DLA cannot run it, and fixed-size engine "
                          f"buffers cannot hold it",
                          "replace it with a fixed-size formulation (TopK over a score with masked entries set "
                          "to -inf, or Where over a mask)")
            continue
        if node.op_type == "TopK":
            continue  # its K is reported by the TopK rule, with a TopK-specific fix
        for index in sm.SHAPE_INPUTS.get(node.op_type, ()):
            value = node.inputs[index] if index < len(node.inputs) else None
            if value is not None and ctx.origins.get(value, gf.Origin.DATA) is gf.Origin.DATA:
                yield Finding(Severity.BLOCKER, "data-dependent-shape", name,
                              f"{node.op_type} input {index} ({value.name}) depends on tensor values, so its "
                              f"output shape is data-dependent",
                              "compute shapes from Shape()/constants only; keep data in masks, not in shapes")


def _check_value_types(ctx: _Context) -> Iterator[Finding]:
    graph = ctx.model.graph
    io = {v.name for v in (*graph.inputs, *graph.outputs)}
    for value in _all_values(ctx.model):
        dtype = gf.dtype_name(value)
        where = (value.producer().name if value.producer() else value.name) or value.name
        if dtype is None or dtype in sm.PARSER_TYPES - {"DOUBLE", "UINT8"}:
            continue
        if dtype == "DOUBLE":
            yield Finding(Severity.WARNING, "dtype", where,
                          f"{value.name} is DOUBLE: TensorRT casts it down to FLOAT, clamping to +-FLT_MAX",
                          "compute in float32 in the source model")
        elif dtype == "UINT8" and value.name not in io:
            yield Finding(Severity.WARNING, "dtype", where,
                          f"{value.name} is UINT8 inside the graph: TensorRT takes UINT8 only at graph inputs and "
                          f"outputs", "cast to INT32 or FLOAT right after the input")
        elif dtype != "UINT8":
            yield Finding(Severity.BLOCKER, "dtype", where, f"{value.name} is {dtype}, a type TensorRT does not have",
                          "cast it to INT32, INT64, FLOAT or BOOL")


def _all_values(model: ir.Model) -> Iterator[ir.Value]:
    graph = model.graph
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in gf.nodes(model):
        yield from (v for v in node.outputs if v is not None)


def _check_int64(ctx: _Context) -> Iterator[Finding]:
    severity = Severity.WARNING if ctx.dla else Severity.INFO
    wide_inputs = [v.name for v in ctx.model.graph.inputs if gf.dtype_name(v) == "INT64"]
    if wide_inputs:
        yield Finding(severity, "int64-input", wide_inputs[0],
                      f"int64 graph inputs ({', '.join(wide_inputs)}): TensorRT >= 9 binds them as int64 (bind "
                      f"int64 buffers); TensorRT 8.x narrowed int64 to int32 with clamping"
                      + ("; DLA has no int64, so the layers reading them run on the GPU" if ctx.dla else ""),
                      "nothing to do on TensorRT 10/11; for 8.x or DLA, export int32 inputs (token ids, masks "
                      "and positions all fit int32) and feed int32")
    computing = [node for node in gf.nodes(ctx.model) if node.op_type not in ("Shape", "Size", "Constant")
                 and any(gf.dtype_name(out) == "INT64" for out in node.outputs)
                 and any(ctx.origins.get(out) is gf.Origin.DATA for out in node.outputs)]
    if computing:
        ops = collections.Counter(node.op_type for node in computing)
        detail = ", ".join(f"{op} x{n}" for op, n in ops.most_common())
        yield Finding(severity, "int64-compute", gf.node_label(computing[0]),
                      f"{len(computing)} nodes compute int64 data ({detail}); e.g. "
                      f"{', '.join(gf.node_label(n) for n in computing[:3])}. TensorRT 10/11 run int64 natively "
                      f"(TopK makes int32 indices and the parser casts them to int64); 8.x narrowed them to int32"
                      + ("; on DLA these run on the GPU" if ctx.dla else ""),
                      "keep index arithmetic (positions, TopK indices) in int32 to save casts; values fit int32")
    yield from _check_int64_range(ctx)


def _check_int64_range(ctx: _Context) -> Iterator[Finding]:
    slice_bounds = {node.inputs[i].name for node in gf.nodes(ctx.model) if node.op_type == "Slice"
                    for i in (1, 2) if i < len(node.inputs) and node.inputs[i] is not None}
    wide = []
    for value in ctx.model.graph.initializers.values():
        array = gf.const_array(value) if gf.dtype_name(value) == "INT64" else None
        if array is not None and array.size and value.name not in slice_bounds \
                and int(np.abs(array.astype(np.float64)).max()) > INT32_MAX:
            wide.append(value.name)
    if wide:
        yield Finding(Severity.WARNING, "int64-range", wide[0],
                      f"int64 constants beyond the int32 range: {', '.join(wide[:5])}. TensorRT 8.x (and DLA) "
                      f"narrow int64 to int32 and clamp these values",
                      "replace sentinel values with ones that fit int32 (e.g. 2**31 - 1)")


def _check_dla(ctx: _Context) -> Iterator[Finding]:
    if not ctx.dla:
        return
    for name, dims in gf.input_dims(ctx.model).items():
        dynamic = [str(d) for d in dims if not isinstance(d, int)]
        if dynamic:
            yield Finding(Severity.BLOCKER, "dla-static-shape", name,
                          f"input {name} has dynamic dimensions ({', '.join(dynamic)}); DLA needs static shapes",
                          "export with fixed shapes: adaret export --static --batch N --seq-len L")
    gpu_only = collections.Counter(node.op_type for node in gf.nodes(ctx.model)
                                   if node.op_type in sm.DLA_GPU_ONLY_OPS)
    if gpu_only:
        detail = ", ".join(f"{op} x{n}" for op, n in gpu_only.most_common())
        yield Finding(Severity.INFO, "dla-gpu-fallback", "<model>",
                      f"no DLA implementation for {detail}: with GPU_FALLBACK these run on the GPU, with a "
                      f"DLA<->GPU hand-over around each pruned layer",
                      "expected for TopK/Gather retention; read the DLA/GPU layer report after the build")


def _check_qdq(ctx: _Context) -> Iterator[Finding]:
    qdq = [node for node in gf.nodes(ctx.model) if node.op_type in gf.QDQ_OPS]
    if ctx.precision == "int8-qdq" and not qdq:
        yield Finding(Severity.BLOCKER, "qdq-missing", "<model>",
                      "precision int8-qdq needs explicit Q/DQ nodes, and this graph has none",
                      "quantise first (adaret calibrate: ONNX Runtime QDQ or ModelOpt), then build the QDQ graph")
    for node in qdq:
        yield from _check_qdq_node(ctx, node, gf.node_label(node))


def _check_qdq_node(ctx: _Context, node: ir.Node, name: str) -> Iterator[Finding]:
    scale = node.inputs[1] if len(node.inputs) > 1 else None
    zero = node.inputs[2] if len(node.inputs) > 2 else None
    if scale is not None and gf.const_array(scale) is None:
        yield Finding(Severity.BLOCKER, "qdq-scale", name, f"{node.op_type} scale is computed at run time",
                      "use constant scales (static calibration)")
    if zero is not None:
        zp = gf.const_array(zero)
        if zp is None or np.any(zp != 0):
            yield Finding(Severity.BLOCKER, "qdq-zero-point", name,
                          f"{node.op_type} has a non-zero (or run-time) zero point; TensorRT supports symmetric "
                          f"quantisation only", "quantise symmetrically (zero point 0)")
    if _touches_topk(ctx, node):
        yield Finding(Severity.BLOCKER, "qdq-topk", name,
                      f"{node.op_type} sits on a TopK score or index path: quantising the retention scores "
                      f"changes which tokens are kept, and indices are integers",
                      "quantise only MatMul/Gemm inputs; exclude the gate scorer, TopK and Gather (nodes_to_exclude)")
    if node.op_type == "QuantizeLinear" and node.outputs and not any(
            user.op_type == "DequantizeLinear" for user, _ in gf.consumers(node.outputs[0])):
        yield Finding(Severity.WARNING, "qdq-unpaired", name,
                      "QuantizeLinear is not followed by DequantizeLinear; TensorRT's explicit quantisation "
                      "expects Q->DQ pairs", "insert the matching DequantizeLinear")


def _touches_topk(ctx: _Context, node: ir.Node) -> bool:
    if node.name in ctx.score_nodes:
        return True
    for value in node.inputs[:1]:
        producer = value.producer() if value is not None else None
        if producer is not None and producer.op_type == "TopK":
            return True
    for out in node.outputs:
        for user, index in gf.consumers(out):
            if user.op_type == "TopK" or (user.op_type in ("GatherElements", "Gather", "GatherND") and index == 1):
                return True
            if user.name in ctx.score_nodes:
                return True
    return False


def _check_optimized_for(ctx: _Context) -> Iterator[Finding]:
    target = ctx.model.metadata_props.get(PREFIX + "optimized_for")
    if isinstance(target, str) and target != "tensorrt":
        yield Finding(Severity.WARNING, "optimized-for", "<model>",
                      f"the graph passes ran for {target}, whose fusions target ONNX Runtime, not TensorRT",
                      "optimise the export for TensorRT: adaret optimize model.onnx -o model.opt.onnx "
                      "--target tensorrt")


RULES: tuple[Callable[[_Context], Iterator[Finding]], ...] = (
    _check_opset, _check_optimized_for, _check_ops, _check_data_dependent, _check_value_types, _check_int64,
    _check_dla, _check_qdq,
)
