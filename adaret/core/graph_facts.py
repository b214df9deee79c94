"""Facts about an exported graph that the lint, the profiles and the builder share (onnx-ir, no TensorRT)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir import convenience
from onnx_ir.passes.common import ShapeInferencePass

from adaret.core.dummy_inputs import Vocabulary
from adaret.core.errors import AdaretError
from adaret.core.metadata import ExportMetadata

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

FLOATING = frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE"})
# Nodes that end a TopK's score path when walking it backwards: the gate's LayerNorm starts the scorer, and
# Gather/TopK belong to the previous layer's retention, not to this layer's scores.
_SCORE_PATH_STOPS = frozenset({"LayerNormalization"})
_SCORE_PATH_BARRIERS = frozenset({"TopK", "Gather", "GatherElements", "GatherND"})


class Origin(enum.Enum):
    """Where a value comes from: a build-time constant, arithmetic on input shapes, or tensor data."""

    CONSTANT = "constant"
    SHAPE = "shape"
    DATA = "data"


def load_model(source: str | Path | onnx.ModelProto | ir.Model) -> ir.Model:
    if isinstance(source, ir.Model):
        return source
    if isinstance(source, onnx.ModelProto):
        return ir.serde.deserialize_model(source)
    path = Path(source)
    try:
        model = ir.load(str(path))
    except FileNotFoundError:
        raise AdaretError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise AdaretError(f"{path} is a directory, not an ONNX file") from None
    except OSError as exc:
        raise AdaretError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # protobuf's DecodeError for bytes that are not a ModelProto; onnx-ir's own for a
        # proto it cannot deserialize: either way the file is not a model
        detail = str(exc).strip().splitlines()
        raise AdaretError(f"cannot load {path.name}: not a valid ONNX model, or a truncated or corrupt file "
                          f"({detail[0] if detail else type(exc).__name__})") from None
    # An empty file, and some short text, parse as a ModelProto with nothing in it
    if not model.graph.outputs:
        raise AdaretError(f"cannot load {path.name}: not a valid ONNX model (its graph has no outputs), or a "
                          "truncated or corrupt file")
    return model


def with_types(model: ir.Model) -> ir.Model:
    """Infer missing value types (hand-edited or pass-produced graphs may lack them); best effort."""
    if all(out.dtype is not None for node in model.graph for out in node.outputs if out is not None):
        return model
    try:
        return ShapeInferencePass(check_type=False, strict_mode=False, data_prop=False)(model).model
    except Exception:  # inference is an aid: a graph it cannot handle is still linted, with fewer types
        return model


def nodes(model: ir.Model) -> Iterator[ir.Node]:
    """Every node of the main graph (subgraphs of If/Loop are walked too: the parser imports them)."""
    yield from ir.traversal.RecursiveGraphIterator(model.graph)


def node_label(node: ir.Node) -> str:
    return node.name or f"<unnamed {node.op_type}>"


def default_opset(model: ir.Model) -> int | None:
    for domain in ("", "ai.onnx"):
        if domain in model.opset_imports:
            return int(model.opset_imports[domain])
    return None


def dtype_name(value: ir.Value | None) -> str | None:
    return value.dtype.name if value is not None and value.dtype is not None else None


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's contents when it is an initializer or a Constant node's output, else None."""
    if value is None:
        return None
    tensor = convenience.get_const_tensor(value)
    return None if tensor is None else np.asarray(tensor.numpy())


def value_origins(model: ir.Model) -> dict[ir.Value, Origin]:
    """Classify every value; nodes are visited in topological order, as ONNX requires."""
    graph = model.graph
    origins: dict[ir.Value, Origin] = {v: Origin.CONSTANT for v in graph.initializers.values()}
    origins.update({v: Origin.DATA for v in graph.inputs})
    for node in graph:
        origin = _node_origin(node, origins)
        for out in node.outputs:
            origins[out] = origin
    return origins


def _node_origin(node: ir.Node, origins: dict[ir.Value, Origin]) -> Origin:
    if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx"):
        return Origin.SHAPE
    if node.op_type == "Constant":
        return Origin.CONSTANT
    inputs = [origins.get(v, Origin.DATA) for v in node.inputs if v is not None]
    if any(o is Origin.DATA for o in inputs):
        return Origin.DATA
    return Origin.SHAPE if any(o is Origin.SHAPE for o in inputs) else Origin.CONSTANT


def input_dims(model: ir.Model) -> dict[str, list[int | str]]:
    """Graph input dimensions: an int where fixed, the symbol (or '?') where dynamic."""
    dims: dict[str, list[int | str]] = {}
    for value in model.graph.inputs:
        shape = value.shape or []
        dims[value.name] = [d if isinstance(d, int) else (str(d.value) if d.value else "?") for d in shape]
    return dims


def is_score_topk(node: ir.Node) -> bool:
    """A TopK that ranks float scores; the second TopK per layer only re-sorts the kept integer indices."""
    return node.op_type == "TopK" and dtype_name(node.inputs[0]) in FLOATING


def score_path(topk: ir.Node) -> list[ir.Node]:
    """The float nodes between the gate's LayerNorm and ``topk`` (both included): the computation whose
    precision decides which tokens are kept."""
    seen: dict[int, ir.Node] = {}
    stack = [topk]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if node.op_type in _SCORE_PATH_STOPS:
            continue
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is None or dtype_name(value) not in FLOATING or const_array(value) is not None:
                continue
            if producer.op_type not in _SCORE_PATH_BARRIERS:
                stack.append(producer)
    return list(seen.values())


def score_path_node_names(model: ir.Model) -> list[str]:
    """Names of every node on any score path, sorted: what the builder keeps in FP32."""
    names = {node.name for topk in nodes(model) if is_score_topk(topk) for node in score_path(topk) if node.name}
    return sorted(names)


def vocab_size(model: ir.Model, ids_input: str = "input_ids") -> int | None:
    """Rows of the embedding table that ``input_ids`` indexes, so that test feeds stay in range."""
    for node in model.graph:
        if node.op_type == "Gather" and len(node.inputs) > 1 and node.inputs[1] is not None \
                and node.inputs[1].name == ids_input:
            table = node.inputs[0]
            if table is not None and table.shape is not None and isinstance(table.shape[0], int):
                return int(table.shape[0])
    return None


def graph_vocabulary(model: ir.Model | onnx.ModelProto, directory: Path | None = None) -> Vocabulary:
    """Ids to feed a graph: its export's recorded vocabulary, else the tokenizer beside it, else the embedding
    table's rows. In the last case the special ids are arbitrary in-range ids: the graph treats position 0
    as CLS by position, not by id, so parity and timing do not depend on them. A ModelProto is converted to
    onnx-ir only in that last case: reading the metadata needs no copy of the weights."""
    props = model.metadata_props
    meta = ExportMetadata.from_props_if_any(props if isinstance(props, dict) else {p.key: p.value for p in props})
    if meta is not None and meta.vocabulary:
        return Vocabulary.from_dict(meta.vocabulary)
    found = Vocabulary.from_directory(directory) if directory is not None else None
    if found is not None:
        return found
    rows = vocab_size(load_model(model))
    if rows is None:
        raise AdaretError("the graph records no vocabulary, has no tokenizer.json beside it, and its input_ids "
                          "feed no embedding table")
    return Vocabulary(rows, cls_id=0, sep_id=min(1, rows - 1), pad_id=0)


def has_qdq(model: ir.Model) -> bool:
    return any(node.op_type in QDQ_OPS for node in nodes(model))


def has_low_precision_weights(model: ir.Model) -> bool:
    """True when the graph already computes in FP16/BF16 (cast or autocast before the build)."""
    return any(dtype_name(v) in ("FLOAT16", "BFLOAT16") for v in model.graph.initializers.values())


def consumers(value: ir.Value) -> Iterable[tuple[ir.Node, int]]:
    return ((use.node, use.idx) for use in value.uses())
