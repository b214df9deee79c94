"""Which nodes of a retained graph are quantised, and which stay fp32 and why (onnx-ir, no torch).

Only MatMuls with a constant weight get Q/DQ: INT8 on their activation input (per tensor, symmetric) and on
their weight (per output channel, symmetric). That is TensorRT's explicit-quantisation placement (Q/DQ on
the inputs of the GEMMs, zero points 0) and also what ONNX Runtime's CPU kernels fuse into integer GEMMs.
Everything else stays fp32, named with a reason in the calibration record:

- score-path: every node from a score TopK back to its gate LayerNorm. A quantised score can swap two
  near-equal tokens at the TopK boundary, and which tokens survive changes everything after it.
- head: the task head that produces the task's outputs (the classifier's logits, the span head's start and end
  logits): small, and its error goes straight into the prediction.
- attention: MatMuls of two activations (Q.K^T, P.V); softmax probabilities in symmetric INT8 keep ~7 bits
  over [0, 1], and these products are a small share of the FLOPs at the retained lengths.
- LayerNormalization and Softmax: not in the quantised op set; listed so that the record is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass

from adaret.core import graph_facts as gf
from adaret.core.errors import AdaretError
from adaret.core.io_spec import TASKS
from adaret.core.metadata import PREFIX

QUANTIZED_OPS = ("MatMul",)
FP32_OPS = ("LayerNormalization", "Softmax", "SkipLayerNormalization")
QUANTIZED_MARKERS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "MatMulInteger",
                               "DynamicQuantizeLinear", "QLinearConv", "ConvInteger", "QAttention",
                               "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm"})
LOW_BIT_TYPES = frozenset({"INT8", "UINT8", "INT4", "UINT4", "FLOAT8E4M3FN"})


@dataclass
class QuantPlan:
    quantize: list[str] = field(default_factory=list)  # MatMuls that get Q/DQ
    exclude: dict[str, str] = field(default_factory=dict)  # node name -> reason it stays fp32
    score_topk: list[str] = field(default_factory=list)
    custom_ops: dict[str, int] = field(default_factory=dict)  # e.g. com.microsoft fused ops, by type

    @property
    def tensorrt_input(self) -> bool:
        """TensorRT parses only default-domain ops; a graph with ORT fusions is an ONNX Runtime-only file."""
        return not self.custom_ops

    def reasons(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for name, reason in sorted(self.exclude.items()):
            grouped.setdefault(reason, []).append(name)
        return grouped


def load(source: str | Path | onnx.ModelProto | ir.Model) -> ir.Model:
    """The graph with types, and a unique name on every node: ORT's quantizer excludes nodes by name."""
    model = gf.with_types(gf.load_model(source))
    return NameFixPass()(model).model


def check_not_quantized(model: ir.Model, label: str) -> None:
    ops = sorted({node.op_type for node in gf.nodes(model) if node.op_type in QUANTIZED_MARKERS})
    low = [v.name for v in model.graph.initializers.values() if gf.dtype_name(v) in LOW_BIT_TYPES]
    if ops or low:
        what = f"it has {', '.join(ops)} nodes" if ops else f"it has low-bit initializers (e.g. {low[0]})"
        raise AdaretError(f"{label} is already quantized ({what}); calibrate the fp32 export instead")


def task_outputs(model: ir.Model) -> tuple[str, ...]:
    """The graph's task outputs (``adaret.core.io_spec``), by its ``adaret.task`` metadata; a graph without it is
    taken for the task whose outputs it has."""
    task = model.metadata_props.get(PREFIX + "task")
    if task in TASKS:
        return TASKS[task].outputs
    names = {v.name for v in model.graph.outputs}
    found = next((spec.outputs for spec in TASKS.values() if set(spec.outputs) <= names), None)
    if found is None:
        expected = " or ".join("/".join(spec.outputs) for spec in TASKS.values())
        raise AdaretError(f"the graph has no {expected} output; is it an adaret export?")
    return found


def head_nodes(model: ir.Model, outputs: tuple[str, ...] | None = None) -> list[ir.Node]:
    """The MatMul/Gemm nearest to each task output, walking back through the nodes between them (one span-head
    MatMul feeds both start and end logits, so it is found once)."""
    outputs = task_outputs(model) if outputs is None else outputs
    values = {v.name: v for v in model.graph.outputs}
    missing = [name for name in outputs if name not in values]
    if missing:
        raise AdaretError(f"the graph has no {missing[0]!r} output; is it an adaret export?")
    found, stack, seen = [], [values[name].producer() for name in outputs], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in ("MatMul", "Gemm"):
            found.append(node)
            continue
        stack.extend(v.producer() for v in node.inputs if v is not None and gf.const_array(v) is None)
    return found


def plan_quantization(model: ir.Model) -> QuantPlan:
    """Decide, node by node, what is quantised (``model`` comes from ``load``, so every node has a name)."""
    plan = QuantPlan()
    plan.score_topk = [n.name for n in gf.nodes(model) if gf.is_score_topk(n)]
    score = set(gf.score_path_node_names(model))
    heads = {n.name for n in head_nodes(model)}
    for node in gf.nodes(model):
        if node.domain not in ("", "ai.onnx"):
            key = f"{node.domain}:{node.op_type}"
            plan.custom_ops[key] = plan.custom_ops.get(key, 0) + 1
        reason = _exclusion_reason(node, score, heads)
        if reason:
            plan.exclude[node.name] = reason
        elif node.op_type in QUANTIZED_OPS:
            plan.quantize.append(node.name)
    if not plan.quantize:
        raise AdaretError("the graph has no MatMul with a constant weight outside the score path and the head: "
                          "nothing to quantize")
    return plan


def _exclusion_reason(node: ir.Node, score: set[str], heads: set[str]) -> str | None:
    if node.name in score:
        return "score-path"
    if node.name in heads:
        return "head"
    if node.op_type in FP32_OPS:
        return "normalization/softmax"
    if node.op_type == "Gemm":
        return "gemm"  # ORT would quantise its bias to INT32, which TensorRT's DequantizeLinear does not take
    if node.op_type == "MatMul" and gf.const_array(node.inputs[1]) is None:
        return "attention"
    return None


def restore_float_consumers(model: ir.Model, quantized: set[str]) -> int:
    """Give every node outside ``quantized`` its float input back; returns how many inputs were rewired.

    ORT's QDQ quantizer replaces a quantised tensor by its DequantizeLinear output for *all* consumers (its
    DedicatedQDQPair option splits pairs only among quantised consumers). That would also round the residual
    stream (Add), the head's CLS Gather and the pooled sum to INT8, which this plan keeps in fp32.
    """
    rewired = 0
    for node in list(gf.nodes(model)):
        if node.op_type != "DequantizeLinear" or not node.inputs or node.inputs[0] is None:
            continue
        q = node.inputs[0].producer()
        if q is None or q.op_type != "QuantizeLinear" or q.inputs[0] is None:
            continue
        for user, index in list(gf.consumers(node.outputs[0])):
            if user.name not in quantized:
                user.replace_input_with(index, q.inputs[0])
                rewired += 1
    return rewired
