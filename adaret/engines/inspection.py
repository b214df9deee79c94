"""Summaries of the engine inspector's layer JSON: what was fused, where TopK and Gather ran, DLA vs GPU.

Input is the string (or parsed dict) of ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``
from an engine built with ``ProfilingVerbosity.DETAILED``: ``{"Layers": [...], "Bindings": [...]}`` in 10.x, with
"Bindings" replaced by "I/O Tensors" in 11.x. Each layer has a "Name", a "LayerType" and, since 8.6, a
"Metadata" string listing the ONNX nodes it implements as ``[ONNX Layer: <name>]`` records separated by
U+001E. The inspector has no documented device field, so DLA layers are recognised by "DLA" in their layer
type or name (the build-time ``can_run_on_dla`` report in builder.py is the documented cross-check).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from adaret.core.errors import AdaretError

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]\x1e\x1f]+)\]")
_PROFILE_SUFFIX = re.compile(r"\[profile \d+\]")
_TOKEN = re.compile(r"[A-Za-z0-9_.:/\-]+")
RETENTION_OPS = ("TopK", "Gather", "GatherElements")


@dataclass(frozen=True)
class LayerRecord:
    name: str
    layer_type: str
    device: str  # "GPU" or "DLA"
    onnx_nodes: tuple[str, ...]
    tactic: str | None = None


@dataclass
class LayerSummary:
    layers: int
    by_type: dict[str, int]
    devices: dict[str, int]
    fused: list[LayerRecord] = field(default_factory=list)
    retention: dict[str, list[LayerRecord]] = field(default_factory=dict)  # ONNX op type -> layers running it
    detailed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"engine layers: {self.layers} ({', '.join(f'{d} {n}' for d, n in sorted(self.devices.items()))}); "
                 f"{len(self.fused)} fused from several ONNX nodes"]
        if not self.detailed:
            lines.append("  (layer names only: build with ProfilingVerbosity.DETAILED for types and ONNX nodes)")
        for op, records in self.retention.items():
            where = collections.Counter(f"{r.layer_type} on {r.device}" for r in records)
            lines.append(f"  {op} ran in {len(records)} layer(s): "
                         + ", ".join(f"{n} x {w}" for w, n in where.most_common()))
        return "\n".join(lines)


def parse_engine_information(info: str | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The layers of the first profile (other profiles repeat them with a ``[profile N]`` suffix)."""
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError as exc:
            raise AdaretError(f"engine inspector output is not JSON: {exc.msg}") from None
    layers = info.get("Layers") if isinstance(info, Mapping) else None
    if not isinstance(layers, list):
        raise AdaretError("engine inspector output has no 'Layers' list")
    raw = [layer if isinstance(layer, Mapping) else {"Name": str(layer)} for layer in layers]
    return [dict(layer) for layer in raw if not _PROFILE_SUFFIX.search(str(layer.get("Name", "")))]


def layer_record(layer: Mapping[str, Any], onnx_ops: Mapping[str, str] | None = None) -> LayerRecord:
    name = str(layer.get("Name", ""))
    layer_type = str(layer.get("LayerType") or layer.get("ParameterType") or "?")
    nodes = _ONNX_LAYER.findall(str(layer.get("Metadata", "")))
    if not nodes and onnx_ops:  # older engines: recover node names from the layer name ("a + b", "PWN(a, b)")
        nodes = [token for token in _TOKEN.findall(name) if token in onnx_ops]
    device = "DLA" if "dla" in layer_type.lower() or "dla" in name.lower() else "GPU"
    tactic = layer.get("TacticName")
    return LayerRecord(name, layer_type, device, tuple(dict.fromkeys(nodes)), str(tactic) if tactic else None)


def summarize_layers(info: str | Mapping[str, Any], onnx_ops: Mapping[str, str] | None = None) -> LayerSummary:
    """``onnx_ops`` maps ONNX node name -> op type (from the graph that was built)."""
    raw = parse_engine_information(info)
    records = [layer_record(layer, onnx_ops) for layer in raw]
    summary = LayerSummary(
        layers=len(records),
        by_type=dict(collections.Counter(r.layer_type for r in records).most_common()),
        devices=dict(collections.Counter(r.device for r in records)),
        fused=[r for r in records if len(r.onnx_nodes) > 1 or r.name.startswith("{ForeignNode[")],
        detailed=any("LayerType" in layer for layer in raw),
    )
    ops = onnx_ops or {}
    for op in RETENTION_OPS:
        running = [r for r in records if any(ops.get(node) == op for node in r.onnx_nodes)]
        if running:
            summary.retention[op] = running
    return summary
