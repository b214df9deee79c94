"""``adaret explain``: which tokens each layer of an exported graph processed, read from the graph itself.

A retained graph keeps, before each pruned layer, the TopK-chosen slots of the previous layer's tokens. An export
made with ``--with-positions`` returns the original positions per pruned layer (``kept_positions_l<j>``); the
default export drops that chain, but its order-restoring ``TopK(indices, largest=0)`` nodes remain because the
hidden-state Gather needs them. Their values are the kept slots of the previous layer, so exposing them as
graph outputs and composing them in numpy gives the same positions:

    positions_0 = arange(n);  positions_l = take_along_axis(positions_{l-1}, order_l)

The graph is edited in memory at the protobuf wire level rather than with onnx, so that, like the rest of the
runtime, this runs on a deployment's install (numpy, onnxruntime, tokenizers; docs/runtime.md).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from adaret.core.errors import AdaretError
from adaret.core.fileio import atomic_file
from adaret.core.metadata import ExportMetadata
from adaret.core.ort_sessions import make_session
from adaret.core.padding import PAD_MULTIPLE, bucket_widths, pad_batch, smallest_width
from adaret.runtime.limits import DEFAULT_MAX_CHARS, check_max_chars, check_text
from adaret.runtime.options import session_options
from adaret.runtime.runners import ORT_ERRORS, first_line
from adaret.runtime.text import DEFAULT_MAX_LENGTH, TextEncoder

PLAIN_STATIC_GRAPH = re.compile(r"model_seq(\d+)\.onnx")

# --- the ONNX protobuf at the wire level -------------------------------------------------------------
# Field numbers from onnx.proto; only the few that locate TopK nodes, outputs and metadata are named.
MODEL_GRAPH, MODEL_METADATA = 7, 14
GRAPH_NODE, GRAPH_OUTPUT = 1, 12
NODE_INPUT, NODE_OUTPUT, NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 4, 5, 7
ATTRIBUTE_NAME, ATTRIBUTE_INT = 1, 3
INT64 = 7  # TensorProto.DataType
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class _Corrupt(Exception):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    start: int  # offset of the field's tag, so a field can be cut out and replaced
    end: int
    value: Any  # an int for a varint, a memoryview for the rest

    # A damaged file can put any wire type under any field number: reading it as the type ONNX declares
    # would scan an int as bytes or turn a varint into an allocation size.
    def message(self) -> memoryview:
        if self.wire != LENGTH_DELIMITED:
            raise _Corrupt
        return self.value

    def text(self) -> str:
        return bytes(self.message()).decode("utf-8")

    def integer(self) -> int:
        if self.wire != VARINT:
            raise _Corrupt
        return self.value


MAX_VARINT_BYTES = 10  # 64 bits; a longer run of continuation bytes is damage, not a number


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    for _ in range(MAX_VARINT_BYTES):
        if pos >= len(buf):
            raise _Corrupt
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise _Corrupt


def _fields(buf: memoryview) -> Iterator[_Field]:
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        else:
            if wire == LENGTH_DELIMITED:
                size, pos = _varint(buf, pos)
            elif wire in (FIXED64, FIXED32):
                size = 8 if wire == FIXED64 else 4
            else:  # groups are not used by ONNX
                raise _Corrupt
            if pos + size > len(buf):
                raise _Corrupt
            value, pos = buf[pos:pos + size], pos + size
        yield _Field(key >> 3, wire, start, pos, value)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _int64_output(name: str) -> bytes:
    """A GraphProto ``output`` entry: ValueInfoProto(name, TypeProto(tensor_type=Tensor(elem_type=INT64,
    shape=[?, ?]))); the onnx checker requires a shape, and two unknown dimensions say [batch, K]."""
    shape = _length_delimited(2, _length_delimited(1, b"") * 2)
    tensor_type = _length_delimited(1, _encode_varint(1 << 3 | VARINT) + _encode_varint(INT64) + shape)
    return _length_delimited(GRAPH_OUTPUT, _length_delimited(1, name.encode()) + _length_delimited(2, tensor_type))


@dataclass(frozen=True)
class _Node:
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    ints: dict[str, int]


def _node(buf: memoryview) -> _Node:
    strings: dict[int, list[str]] = {NODE_INPUT: [], NODE_OUTPUT: [], NODE_OP_TYPE: [], NODE_DOMAIN: []}
    ints = {}
    for field in _fields(buf):
        if field.number in strings:
            strings[field.number].append(field.text())
        elif field.number == NODE_ATTRIBUTE:
            attribute = {f.number: f for f in _fields(field.message())}
            if ATTRIBUTE_INT in attribute and ATTRIBUTE_NAME in attribute:
                ints[attribute[ATTRIBUTE_NAME].text()] = attribute[ATTRIBUTE_INT].integer()
    return _Node("".join(strings[NODE_OP_TYPE]), "".join(strings[NODE_DOMAIN]), strings[NODE_INPUT],
                 strings[NODE_OUTPUT], ints)


@dataclass
class GraphFile:
    """An exported graph's bytes, with what explaining it needs: metadata, outputs and the order tensors."""

    path: Path
    data: bytes
    metadata: ExportMetadata
    output_names: list[str]
    order_names: list[str]  # values of each order-restoring TopK, in graph (topological) order

    @classmethod
    def read(cls, path: Path) -> GraphFile:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AdaretError(f"cannot read {path}: {exc.strerror}") from None
        try:
            entries, outputs, orders = _scan(memoryview(data))
        except (_Corrupt, UnicodeDecodeError):
            raise AdaretError(f"cannot read {path.name}: not a valid ONNX model, or a truncated or corrupt file") \
                from None
        return cls(path, data, ExportMetadata.from_props(entries, path.name), outputs, orders)

    def with_outputs(self, names: Sequence[str]) -> bytes:
        """The model with ``names`` appended to the graph's outputs (the file is not touched)."""
        buf = memoryview(self.data)
        graph = next(f for f in _fields(buf) if f.number == MODEL_GRAPH)
        extra = b"".join(_int64_output(name) for name in names)
        return bytes(buf[:graph.start]) + _length_delimited(MODEL_GRAPH, bytes(graph.message()) + extra) + \
            bytes(buf[graph.end:])


def _scan(buf: memoryview) -> tuple[dict[str, str], list[str], list[str]]:
    entries: dict[str, str] = {}
    graph = None
    for field in _fields(buf):
        if field.number == MODEL_METADATA:
            entry = {f.number: f.text() for f in _fields(field.message())}
            entries[entry.get(1, "")] = entry.get(2, "")
        elif field.number == MODEL_GRAPH:
            graph = field.message()
    if graph is None:
        raise _Corrupt
    nodes, outputs = [], []
    for field in _fields(graph):
        if field.number == GRAPH_NODE:
            nodes.append(_node(field.message()))
        elif field.number == GRAPH_OUTPUT:
            outputs.append(next((f.text() for f in _fields(field.message()) if f.number == 1), ""))
    return entries, outputs, _order_names(nodes)


def _order_names(nodes: list[_Node]) -> list[str]:
    """The values of every ``TopK(indices of another TopK, largest=0)``: the kept slots, ascending."""
    topk = [n for n in nodes if n.op_type == "TopK" and n.domain in ("", "ai.onnx")]
    index_outputs = {n.outputs[1] for n in topk if len(n.outputs) > 1}
    return [n.outputs[0] for n in topk if n.ints.get("largest", 1) == 0 and n.inputs and n.inputs[0] in index_outputs]


# --- which layers prune, and running the graph --------------------------------------------------------

def pruned_layers(metadata: ExportMetadata) -> list[int]:
    """0-based layers preceded by a TopK/Gather: those whose schedule numerator is below the denominator
    (an ungated layer always holds the denominator)."""
    schedule = metadata.schedule
    if schedule is None or not {"numerators", "denominator"} <= set(schedule):
        raise AdaretError("the graph records no adaret keep schedule: was it written by adaret export?")
    return [layer for layer, k in enumerate(schedule["numerators"]) if k < schedule["denominator"]]


def compose_positions(orders: Sequence[np.ndarray], width: int) -> list[np.ndarray]:
    """Original positions kept at each pruned layer from the per-layer kept slots ([batch, K_l] each)."""
    if not orders:
        return []
    positions = np.tile(np.arange(width, dtype=np.int64), (orders[0].shape[0], 1))
    kept = []
    for order in orders:
        positions = np.take_along_axis(positions, order.astype(np.int64), axis=1)
        kept.append(positions)
    return kept


class RetentionGraph:
    """One exported graph in ONNX Runtime, returning its kept positions per pruned layer."""

    def __init__(self, path: Path, *, threads: int | None = None):
        graph = GraphFile.read(path)
        self.path = path
        self.metadata = graph.metadata
        self.pruned = pruned_layers(self.metadata)
        self.layers = len(self.metadata.schedule["numerators"])
        wanted = [f"kept_positions_l{layer + 1}" for layer in self.pruned]
        self.from_outputs = set(wanted) <= set(graph.output_names)
        if self.from_outputs:
            self.fetch, data = wanted, graph.data
        else:
            self._check_orders(graph)
            self.fetch, data = graph.order_names, graph.with_outputs(graph.order_names)
        self.session = _session(data, path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _check_orders(self, graph: GraphFile) -> None:
        found, wanted = len(graph.order_names), len(self.pruned)
        if found != wanted:
            raise AdaretError(f"{self.path.name}: {found} order-restoring TopK node(s) for {wanted} pruned layer(s); "
                              "the graph's structure was changed (an optimised graph?): pass the unoptimised "
                              "model.onnx that export writes")

    def kept_positions(self, feeds: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
        """Original positions ([batch, K]) kept before each pruned layer, keyed by the 1-based layer they enter."""
        if not self.pruned:
            return {}
        feeds = {name: feeds[name].astype(np.int64, copy=False) for name in self.input_names}
        try:
            fetched = self.session.run(self.fetch, feeds)
        except ORT_ERRORS as exc:
            raise AdaretError(f"ONNX Runtime could not run {self.path.name}: {first_line(exc)}") from None
        positions = fetched if self.from_outputs else compose_positions(fetched, feeds["input_ids"].shape[1])
        return {layer + 1: p for layer, p in zip(self.pruned, positions, strict=True)}


def _session(data: bytes, path: Path, threads: int | None) -> ort.InferenceSession:
    options = session_options(threads=threads)
    # The graph is loaded from memory, so ONNX Runtime must be told where a large model's external data lives.
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
    try:
        return make_session(data, options)
    except ORT_ERRORS as exc:
        raise AdaretError(f"cannot load {path.name}: not a valid ONNX model, or a truncated or corrupt file "
                          f"({first_line(exc)})") from None


# --- texts -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Explanation:
    """The tokens each layer of one graph processed for one text.

    ``layers[j - 1]`` holds the token positions (ascending) that 1-based layer j processed; ``slots[j - 1]`` is
    its K_l at the padded ``width`` the graph ran at (padding slots are kept only when K_l exceeds the text).
    """

    text: str
    tokens: list[str]
    layers: list[list[int]]
    slots: list[int]
    width: int
    truncated: bool
    model: Path
    budget: float | None
    retained: bool  # False: the graph prunes no layer (budget 1.0) and every layer processes every token

    def kept_matrix(self) -> np.ndarray:
        """Boolean [layers, tokens]: True where the layer processed the token."""
        matrix = np.zeros((len(self.layers), len(self.tokens)), dtype=bool)
        for row, kept in enumerate(self.layers):
            matrix[row, kept] = True
        return matrix

    def as_dict(self) -> dict[str, Any]:
        return {"model": str(self.model), "budget": self.budget, "text": self.text, "tokens": self.tokens,
                "width": self.width, "truncated": self.truncated, "retained": self.retained,
                "layers": [{"layer": j, "slots": k, "kept": len(kept), "positions": kept}
                           for j, (kept, k) in enumerate(zip(self.layers, self.slots, strict=True), start=1)]}


class Explainer:
    """Explains texts with an export directory or one ``.onnx`` graph.

    A directory gives its unoptimised ``model.onnx``, else its ``model_seq<N>.onnx`` buckets (each text uses the
    smallest that holds it). A text is padded as ``classify`` pads it, because K_l follows the padded length.
    """

    def __init__(self, model: str | Path, *, threads: int | None = None, max_chars: int = DEFAULT_MAX_CHARS):
        path = Path(model)
        self.max_chars = check_max_chars(max_chars)
        self.paths = _graph_paths(path)
        self.encoder = TextEncoder.from_dir(path if path.is_dir() else path.parent)
        self.threads = threads
        self._graphs: dict[Path, RetentionGraph] = {}
        if None in self.paths:
            graph = self.graph(None)
            recorded = graph.metadata.seq_len
            if recorded is not None:  # a static graph named directly: texts are padded to its one length
                self.paths = {recorded: self.paths[None]}
            self.max_length = recorded or graph.metadata.max_positions or self.encoder.model_max_length \
                or DEFAULT_MAX_LENGTH
        else:
            self.max_length = max(n for n in self.paths if n is not None)
        static = [n for n in self.paths if n is not None]
        self.widths = bucket_widths(self.max_length, static, PAD_MULTIPLE)

    def graph(self, width: int | None) -> RetentionGraph:
        """The graph a text padded to ``width`` runs through, loaded on first use."""
        path = self.paths.get(width) or self.paths[None]
        if path not in self._graphs:
            self._graphs[path] = RetentionGraph(path, threads=self.threads)
        return self._graphs[path]

    def explain(self, text: str) -> Explanation:
        if not isinstance(text, str):
            raise AdaretError(f"explain() takes a string, got a {type(text).__name__}")
        check_text(text, self.max_chars, "the text")
        self.encoder.tokenizer.enable_truncation(self.max_length)
        encoding = self.encoder.tokenizer.encode(text)
        width = smallest_width(self.widths, len(encoding.ids))  # the width classify() would run it at
        graph = self.graph(width)
        kept = graph.kept_positions(pad_batch([encoding.ids], width, self.encoder.pad_id))
        layers, slots = _per_layer(kept, graph.layers, len(encoding.ids), width)
        return Explanation(text, list(encoding.tokens), layers, slots, width, bool(encoding.overflowing), graph.path,
                           graph.metadata.budget, bool(graph.pruned))


def _graph_paths(path: Path) -> dict[int | None, Path]:
    if path.is_dir():
        if (path / "model.onnx").is_file():
            return {None: path / "model.onnx"}
        buckets = {int(m[1]): p for p in path.glob("model_seq*.onnx") if (m := PLAIN_STATIC_GRAPH.fullmatch(p.name))}
        if not buckets:
            raise AdaretError(f"{path} holds no model.onnx or model_seq<N>.onnx (explain reads the unoptimised "
                              "graph that export writes)")
        return dict(buckets)
    if not path.exists():
        raise AdaretError(f"{path} does not exist")
    if not path.name.endswith(".onnx"):
        raise AdaretError(f"{path.name}: expected an export directory or a .onnx graph")
    return {None: path}


def _per_layer(kept: dict[int, np.ndarray], layers: int, length: int,
               width: int) -> tuple[list[list[int]], list[int]]:
    """Each layer's real token positions and slot count; an unpruned layer processes what the one before did."""
    current, slots = list(range(length)), width
    out_positions, out_slots = [], []
    for layer in range(1, layers + 1):
        if layer in kept:
            row = kept[layer][0]
            slots = len(row)
            current = sorted(int(p) for p in row if p < length)  # drop padding slots
        out_positions.append(current)
        out_slots.append(slots)
    return out_positions, out_slots


# --- views -------------------------------------------------------------------------------------------

def render_text(explanation: Explanation) -> str:
    """One line per layer: how many tokens it kept, then those tokens."""
    e = explanation
    budget = f", budget {e.budget:g}" if e.budget is not None else ""
    lines = [f"{e.model.name}{budget}: {len(e.tokens)} tokens, run padded to {e.width}"]
    if e.truncated:
        lines.append(f"note: the text is longer than the model accepts and was truncated to its first {len(e.tokens)} "
                     "tokens")
    if not e.retained:
        lines.append("note: this graph drops no tokens (no layer is pruned, as at budget 1.0): every layer keeps "
                     "every token")
    lines += [f"layer {j} keeps {len(kept)}/{len(e.tokens)}: " + " ".join(e.tokens[p] for p in kept)
              for j, kept in enumerate(e.layers, start=1)]
    return "\n".join(lines)


HTML_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
.text span { padding: 1px 2px; margin: 1px; border-radius: 3px; line-height: 1.9; }
.grid { overflow-x: auto; margin-bottom: 2em; }
table { border-collapse: collapse; font-size: 11px; }
th.token { writing-mode: vertical-rl; transform: rotate(180deg); font-weight: normal; padding: 2px; }
th.layer { text-align: right; padding-right: 6px; white-space: nowrap; }
td { width: 12px; height: 14px; border: 1px solid #eee; }
td.kept { background: #1f77b4; }
"""


def render_html(explanations: Sequence[Explanation], title: str = "Tokens kept per layer") -> str:
    """A self-contained page: per text, the text shaded by how many layers kept each token, and a token-by-layer
    table (a filled cell: that layer processed that token)."""
    sections = "\n".join(_html_section(e) for e in explanations)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{HTML_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{sections}\n</body></html>\n")


def _html_section(e: Explanation) -> str:
    matrix = e.kept_matrix()
    layers = max(len(e.layers), 1)
    shaded = " ".join(
        f'<span style="background: rgba(31, 119, 180, {0.8 * count / layers:.2f})" title="kept by {count} of {layers} '
        f'layers">{html.escape(token)}</span>' for token, count in zip(e.tokens, matrix.sum(axis=0), strict=True))
    header = "".join(f'<th class="token">{html.escape(token)}</th>' for token in e.tokens)
    rows = "".join(
        f'<tr><th class="layer">layer {j} ({len(kept)}/{len(e.tokens)})</th>'
        + "".join('<td class="kept"></td>' if cell else "<td></td>" for cell in matrix[j - 1]) + "</tr>"
        for j, kept in enumerate(e.layers, start=1))
    notes = " Truncated to the model's maximum length." if e.truncated else ""
    notes += "" if e.retained else " This graph drops no tokens."
    budget = f", budget {e.budget:g}" if e.budget is not None else ""
    return (f"<section><p>{html.escape(e.model.name)}{budget}: {len(e.tokens)} tokens, run padded to {e.width}."
            f"{notes}</p>\n<p class=\"text\">{shaded}</p>\n<div class=\"grid\"><table><thead><tr><th></th>{header}"
            f"</tr></thead><tbody>{rows}</tbody></table></div></section>")


def write_html(explanations: Sequence[Explanation], path: str | Path) -> Path:
    path = _output_path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(render_html(explanations), encoding="utf-8")
    return path


def write_png(explanation: Explanation, path: str | Path) -> Path:
    """The token-by-layer map as an image (matplotlib, an optional dependency, imported only here)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise AdaretError("--png needs matplotlib, which is not installed (pip install matplotlib)") from None
    path = _output_path(path)
    e = explanation
    fig = Figure(figsize=(min(max(4.0, 0.16 * len(e.tokens) + 1.5), 60.0), 0.35 * len(e.layers) + 2.0))
    ax = fig.add_subplot()
    ax.imshow(e.kept_matrix(), aspect="auto", cmap="Blues", vmin=0, vmax=1.25, interpolation="nearest")
    ax.set_yticks(range(len(e.layers)), [f"layer {j}" for j in range(1, len(e.layers) + 1)])
    step = max(1, len(e.tokens) // 150)  # beyond ~150 labels they overlap whatever the figure width
    ax.set_xticks(range(0, len(e.tokens), step), e.tokens[::step], rotation=90, fontsize=7)
    ax.set_title(f"{e.model.name}: tokens each layer processed (filled)", fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _output_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise AdaretError(f"{path} is a directory; give a file name to write")
    return path
