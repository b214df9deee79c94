"""SmoothQuant (Xiao et al., 2023) for the MatMuls that will be quantised: move activation outliers into weights.

A MatMul ``y = x W`` is unchanged when a per-input-channel scale s moves from the activation to the weight:

    y = (x / s) (diag(s) W),      s_j = max|x_j|^alpha / max|W_j.|^(1 - alpha)

where max|x_j| is channel j's largest magnitude on calibration data and max|W_j.| row j's largest weight.
Per-tensor INT8 of ``x`` spends its 255 levels on the largest channel; dividing the outlier channels down lets
the others keep their resolution, and per-channel weight INT8 absorbs the larger rows. MatMuls that read the
same tensor (Q, K and V) share one s (the max over their weight rows) and one ``Mul(x, 1/s)``.

Why by hand: ONNX Runtime's ``SmoothQuant`` option calls neural-compressor 2.x's ONNX adaptor, which
neural-compressor 3 dropped, and it needs a live data reader where ours quantises from a saved range cache.
Why a ``Mul`` and not folding 1/s into the producer: here the producers are a LayerNorm whose output is also
the residual stream, an attention node, and a GELU, none of which can absorb a per-channel scale exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from adaret.calibration.int8.defaults import SMOOTH_ALPHA
from adaret.core import graph_facts as gf

_FLOOR = 1e-5  # dead channels (all-zero activations or weight rows) get this instead of a 0 or inf scale


@dataclass
class SmoothReport:
    alpha: float
    groups: dict[str, list[str]] = field(default_factory=dict)  # smoothed tensor -> MatMuls that read it
    largest_scale: float = 0.0


def channel_absmax(model: onnx.ModelProto, tensors: list[str], batches: Iterable[dict]) -> dict[str, np.ndarray]:
    """max |x_j| per last-axis channel of each tensor in ``tensors``, over every batch."""
    from adaret.calibration.int8.verify import session_with_outputs

    session = session_with_outputs(model, tensors)
    names = [i.name for i in session.get_inputs()]
    absmax: dict[str, np.ndarray] = {}
    for feeds in batches:
        for name, value in zip(tensors, session.run(tensors, {k: feeds[k] for k in names}), strict=True):
            channel = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            absmax[name] = np.maximum(absmax[name], channel) if name in absmax else channel
    return absmax


def smoothing_scales(activation_absmax: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s_j = max|x_j|^alpha / max|W_j.|^(1 - alpha), the row max taken over every weight that reads x."""
    weight_absmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    a, w = np.maximum(activation_absmax, _FLOOR), np.maximum(weight_absmax, _FLOOR)
    return np.maximum(a ** alpha / w ** (1.0 - alpha), _FLOOR).astype(np.float32)


def smooth(model: ir.Model, matmuls: list[str], batches: Iterator[dict], alpha: float = SMOOTH_ALPHA) -> SmoothReport:
    """Rescale ``matmuls`` (node names; weights must be constants) in place, scales measured on ``batches``."""
    by_name = {node.name: node for node in gf.nodes(model)}
    groups: dict[str, list[ir.Node]] = {}
    for name in matmuls:
        node = by_name[name]
        groups.setdefault(node.inputs[0].name, []).append(node)
    absmax = channel_absmax(ir.serde.serialize_model(model), sorted(groups), batches)
    report = SmoothReport(alpha)
    for tensor, users in groups.items():
        weights = [gf.const_array(user.inputs[1]) for user in users]
        scales = smoothing_scales(absmax[tensor], weights, alpha)
        _rescale(model, users, weights, scales)
        report.groups[tensor] = [user.name for user in users]
        report.largest_scale = max(report.largest_scale, float(scales.max()))
    return report


def _rescale(model: ir.Model, users: list[ir.Node], weights: list[np.ndarray], scales: np.ndarray) -> None:
    """x -> Mul(x, 1/s) for every user; each user's W -> diag(s) W."""
    source = users[0].inputs[0]
    inverse = ir.Value(name=f"{source.name}.smooth_inverse", const_value=ir.tensor(1.0 / scales))
    model.graph.register_initializer(inverse)
    mul = ir.Node("", "Mul", [source, inverse], name=f"{source.name}.smooth", num_outputs=1)
    smoothed = mul.outputs[0]
    smoothed.name, smoothed.dtype, smoothed.shape = f"{source.name}.smoothed", source.dtype, source.shape
    model.graph.insert_before(_first_in_graph(model, users), mul)
    for user, weight in zip(users, weights, strict=True):
        original = user.inputs[1]
        scaled = ir.Value(name=f"{original.name}.smoothed",
                          const_value=ir.tensor((weight * scales[:, None]).astype(np.float32)))
        model.graph.register_initializer(scaled)
        user.replace_input_with(0, smoothed)
        user.replace_input_with(1, scaled)
        if not original.uses() and original.name in model.graph.initializers:
            del model.graph.initializers[original.name]


def _first_in_graph(model: ir.Model, users: list[ir.Node]) -> ir.Node:
    wanted = {id(user) for user in users}
    return next(node for node in model.graph if id(node) in wanted)
