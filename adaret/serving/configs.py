"""Triton model configurations (``config.pbtxt``) for an export, built from ``ExportFacts``.

Each builder returns a dict for ``adaret.serving.pbtxt.render``. Tensor names come from ``adaret.core.io_spec``,
dtypes and widths from the graph, labels from the metadata; only the batching policy comes from the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaret.core.io_spec import CLASSIFICATION, LOGITS, TOKEN_TYPE_IDS
from adaret.serving.export_facts import ExportFacts
from adaret.serving.pbtxt import Enum, parameters

TEXT, LABEL, PROBABILITIES = "text", "label", "probabilities"
# A question-answering text model's tensors: the names (and meanings) of the Hugging Face question-answering
# pipeline's fields, the answer text, its score (start + end logit) and its characters context[start:end]
QUESTION, CONTEXT, ANSWER, SCORE, START, END = "question", "context", "answer", "score", "start", "end"
TRITON_DTYPES = {np.dtype(np.int64): "TYPE_INT64", np.dtype(np.int32): "TYPE_INT32",
                 np.dtype(np.float32): "TYPE_FP32", np.dtype(np.float16): "TYPE_FP16"}
KIND_CPU, KIND_GPU = Enum("KIND_CPU"), Enum("KIND_GPU")


@dataclass(frozen=True)
class Batching:
    """How Triton batches and places a model: ``max_batch_size``, the dynamic batcher's delay (None: no dynamic
    batching, each request runs alone) and the instances per model. ``max_batch_tokens`` is ours, not Triton's:
    the most padded tokens one Session run of a served model takes (None: no cap); a batch Triton hands over is
    run in pieces that fit it. ``memory`` is ours too: the ONNX Runtime CPU allocator of each instance's Session
    (``adaret.runtime.options.MEMORY_MODES``; None: the runtime's default)."""

    max_batch: int = 16
    max_queue_delay_us: int | None = 1000
    instances: int = 1
    max_batch_tokens: int | None = None
    memory: str | None = None

    def served_settings(self) -> dict[str, Any]:
        """What a served model's backend reads from its ``parameters``."""
        return {"max_batch": self.max_batch, "max_batch_tokens": self.max_batch_tokens or "",
                "memory": self.memory or ""}

    def fields(self, kind: Enum = KIND_CPU) -> dict[str, Any]:
        batcher = None if self.max_queue_delay_us is None else {
            "max_queue_delay_microseconds": self.max_queue_delay_us}
        return {"max_batch_size": self.max_batch, "dynamic_batching": batcher,
                "instance_group": [{"kind": kind, "count": self.instances}]}


def triton_dtype(dtype: np.dtype) -> Enum:
    return Enum(TRITON_DTYPES[np.dtype(dtype)])


def token_inputs(facts: ExportFacts, width: int = -1, *, optional_types: bool = False) -> list[dict[str, Any]]:
    """The graph's token inputs, [batch, width] (-1: any length). ``optional_types``: a client may leave
    token_type_ids out (single-segment text: zeros), where the model fills them in."""
    return [{"name": name, "data_type": triton_dtype(facts.input_dtypes[name]), "dims": [width],
             "optional": True if optional_types and name == TOKEN_TYPE_IDS else None}
            for name in facts.input_names]


def logits_output(facts: ExportFacts) -> dict[str, Any]:
    return {"name": LOGITS, "data_type": Enum("TYPE_FP32"), "dims": [facts.num_labels]}


def graph_outputs(facts: ExportFacts, width: int = -1) -> list[dict[str, Any]]:
    """The graph's outputs: ``logits`` [batch, labels], or a question-answering graph's ``start_logits`` and
    ``end_logits`` [batch, width] (a logit per token)."""
    if facts.task == CLASSIFICATION.task:
        return [logits_output(facts)]
    return [{"name": name, "data_type": Enum("TYPE_FP32"), "dims": [width]} for name in facts.output_names]


def label_outputs(facts: ExportFacts) -> list[dict[str, Any]]:
    return [{"name": LABEL, "data_type": Enum("TYPE_STRING"), "dims": [1]},
            {"name": PROBABILITIES, "data_type": Enum("TYPE_FP32"), "dims": [facts.num_labels]}]


def text_input() -> dict[str, Any]:
    return {"name": TEXT, "data_type": Enum("TYPE_STRING"), "dims": [1]}


# --- adaret serve: Python-backend models over an adaret.runtime Session -------------------------------------


def served_logits_config(name: str, facts: ExportFacts, batching: Batching, export: str) -> dict[str, Any]:
    """``<name>``: token arrays in, logits out, run by ``adaret.serving.backend.LogitsModel``. A static export takes
    any length up to its largest bucket: the Session pads each batch to its bucket."""
    return {"name": name, "backend": "python", **batching.fields(),
            "input": token_inputs(facts, optional_types=True), "output": graph_outputs(facts),
            "parameters": parameters({"export": export, **batching.served_settings()})}


def served_text_config(name: str, facts: ExportFacts, batching: Batching, export: str) -> dict[str, Any]:
    """``<name>_text``: UTF-8 texts in, label and probabilities out (``Session.classify``, the export's tokenizer);
    for a question-answering export, a question and a context in, the best answer out (``Session.answer_batch``)."""
    if facts.task == CLASSIFICATION.task:
        inputs, outputs = [text_input()], label_outputs(facts)
    else:
        inputs = [{"name": n, "data_type": Enum("TYPE_STRING"), "dims": [1]} for n in (QUESTION, CONTEXT)]
        outputs = [{"name": n, "data_type": Enum(t), "dims": [1]}
                   for n, t in ((ANSWER, "TYPE_STRING"), (SCORE, "TYPE_FP32"), (START, "TYPE_INT64"),
                                (END, "TYPE_INT64"))]
    return {"name": name, "backend": "python", **batching.fields(), "input": inputs, "output": outputs,
            "parameters": parameters({"export": export, **batching.served_settings()})}


# --- adaret triton-repo: a repository for a datacenter Triton -------------------------------------------------


def onnx_config(name: str, facts: ExportFacts, batching: Batching, width: int, kind: Enum) -> dict[str, Any]:
    """An ONNX Runtime backend model over one graph (``width`` -1 for the dynamic graph, else its bucket)."""
    return {"name": name, "platform": "onnxruntime_onnx", **batching.fields(kind),
            "input": token_inputs(facts, width), "output": graph_outputs(facts, width)}


def plan_config(name: str, facts: ExportFacts, batching: Batching, width: int) -> dict[str, Any]:
    """A TensorRT backend model over one bucket's plan (always on a GPU)."""
    return {"name": name, "platform": "tensorrt_plan", **batching.fields(KIND_GPU),
            "input": token_inputs(facts, width), "output": graph_outputs(facts, width)}


def tokenizer_config(name: str, facts: ExportFacts, batching: Batching, width: int | None) -> dict[str, Any]:
    """The Python-backend tokenizer: texts in, the graph's token inputs out, padded as ``adaret.core.padding``
    pads (to ``width`` for a static graph; else to the next multiple of 32 up to ``max_length``)."""
    settings = {"max_length": facts.max_length, "pad_id": facts.pad_id, "width": width or "",
                "outputs": json.dumps(facts.input_names)}
    return {"name": name, "backend": "python", **batching.fields(), "input": [text_input()],
            "output": token_inputs(facts, width or -1),
            "parameters": parameters(settings)}


def labels_config(name: str, facts: ExportFacts, batching: Batching) -> dict[str, Any]:
    """The Python-backend post-processing: logits in, the top label and softmax probabilities out."""
    settings = {"label_names": json.dumps(facts.label_names)}
    return {"name": name, "backend": "python", **batching.fields(), "input": [logits_output(facts)],
            "output": label_outputs(facts),
            "parameters": parameters(settings)}


def ensemble_config(name: str, facts: ExportFacts, batching: Batching, tokenizer: str, model: str,
                    labels: str) -> dict[str, Any]:
    """``<name>_text``: tokenizer -> graph (or plan) -> labels, as one Triton ensemble."""
    tokens = {input_name: f"_{input_name}" for input_name in facts.input_names}
    steps = [
        {"model_name": tokenizer, "model_version": -1, "input_map": _map({TEXT: TEXT}),
         "output_map": _map(tokens)},
        {"model_name": model, "model_version": -1, "input_map": _map(tokens), "output_map": _map({LOGITS: "_logits"})},
        {"model_name": labels, "model_version": -1, "input_map": _map({LOGITS: "_logits"}),
         "output_map": _map({LABEL: LABEL, PROBABILITIES: PROBABILITIES})},
    ]
    return {"name": name, "platform": "ensemble", "max_batch_size": batching.max_batch, "input": [text_input()],
            "output": label_outputs(facts), "ensemble_scheduling": {"step": steps}}


def _map(pairs: dict[str, str]) -> list[dict[str, str]]:
    """A step's ``input_map`` / ``output_map``: the model's tensor name -> the ensemble's."""
    return [{"key": key, "value": value} for key, value in pairs.items()]
