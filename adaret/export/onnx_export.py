"""torch.onnx.export (dynamo) of the top-M module, in a dynamic or a static form, saved atomically."""

from __future__ import annotations

import logging
import warnings

import onnx
import onnx_ir as ir
import torch
from onnx_ir.passes.common import RemoveUnusedNodesPass

from adaret.core.constants import MIN_OPSET
from adaret.core.io_spec import BATCH_AXIS, SEQUENCE_AXIS
from adaret.export.inference import TopMInference


def export_module(module: TopMInference, *, seq_len: int | None, batch: int | None, max_positions: int,
                  opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Export ``module``. ``seq_len=None`` gives the dynamic form (K from the input's shape);
    an integer gives the static form for that bucket (constant K). ``batch=None`` keeps batch dynamic."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is not supported; use {MIN_OPSET} or newer")
    module = module.eval()  # the exporter must see eval mode: no dropout, no Hard-Concrete sampling
    example_seq = seq_len if seq_len is not None else min(64, max_positions)
    example_batch = batch if batch is not None else 2
    ids = torch.ones((example_batch, example_seq), dtype=torch.long)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))[: len(module.input_names)]
    batch_dim = torch.export.Dim(BATCH_AXIS, min=1, max=4096) if batch is None else None
    seq_dim = torch.export.Dim(SEQUENCE_AXIS, min=2, max=max_positions) if seq_len is None else None
    axes = {axis: dim for axis, dim in ((0, batch_dim), (1, seq_dim)) if dim is not None}
    dynamic_shapes = {name: axes for name in module.input_names}
    # The exporter logs optional-op registration notices (e.g. torchvision absent) that are not about us.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, optimize=True,
                                    input_names=module.input_names, output_names=module.output_names,
                                    dynamic_shapes=dynamic_shapes, verbose=False, report=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    _check_dynamic_axes(program.model_proto, batch_dynamic=batch is None, seq_dynamic=seq_len is None)
    return program.model_proto


def _check_dynamic_axes(model: onnx.ModelProto, *, batch_dynamic: bool, seq_dynamic: bool) -> None:
    """torch.onnx may "refine" a dynamic axis it could not trace into the example's size; refuse such a graph.

    Otherwise a dynamic export would silently accept only the example length, and only the parity gate
    would notice, with a shape error.
    """
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis, wanted in ((0, batch_dynamic), (1, seq_dynamic)):
            if wanted and len(dims) > axis and not dims[axis].dim_param:
                name = "batch" if axis == 0 else "sequence"
                raise RuntimeError(f"the exporter fixed the {name} axis of {value.name} to {dims[axis].dim_value}; "
                                   "the graph would not be dynamic")


def keep_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Drop every graph output not in ``names`` and the nodes that only fed them."""
    graph_model = ir.serde.deserialize_model(model)
    outputs = graph_model.graph.outputs
    for value in [v for v in outputs if v.name not in names]:
        outputs.remove(value)
    RemoveUnusedNodesPass()(graph_model)
    return ir.serde.serialize_model(graph_model)
