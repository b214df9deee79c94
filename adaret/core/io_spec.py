"""Input and output names per task: the contract between the exported graph and every later stage.

Like Optimum's ``OnnxConfig``, one spec per task names the graph inputs, the outputs, and which axes are
dynamic. The exporter, the runtime, the calibration reader and the benchmarks all read names from here.
"""

from __future__ import annotations

from dataclasses import dataclass

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
INPUT_NAMES = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)
LOGITS = "logits"
START_LOGITS, END_LOGITS = "start_logits", "end_logits"
ENCODER_HIDDEN_STATES, ENCODER_ATTENTION_MASK = "encoder_hidden_states", "encoder_attention_mask"
BATCH_AXIS, SEQUENCE_AXIS = "batch", "sequence"


@dataclass(frozen=True)
class TaskIOSpec:
    """Names of one task's graph; batch and sequence are its dynamic axes (``BATCH_AXIS``, ``SEQUENCE_AXIS``)."""

    task: str
    outputs: tuple[str, ...]

    def input_names(self, uses_token_type_ids: bool) -> list[str]:
        """The encoder's inputs: BERT-style models take token types, RoBERTa-style ones do not."""
        return list(INPUT_NAMES if uses_token_type_ids else INPUT_NAMES[:2])


CLASSIFICATION = TaskIOSpec("sequence-classification", (LOGITS,))
# Extractive QA: a start and an end logit for every original position [batch, sequence] (Optimum's names).
QUESTION_ANSWERING = TaskIOSpec("question-answering", (START_LOGITS, END_LOGITS))
# Summarization's encoder graph: the compact memory (the tokens that survive the last gated layer) and its mask,
# the names Optimum's encoder-decoder export gives the decoder's inputs.
SUMMARIZATION = TaskIOSpec("summarization", (ENCODER_HIDDEN_STATES, ENCODER_ATTENTION_MASK))
TASKS = {spec.task: spec for spec in (CLASSIFICATION, QUESTION_ANSWERING, SUMMARIZATION)}


def decoder_cache_names(num_layers: int, prefix: str, *, encoder: bool = True) -> list[str]:
    """Optimum's KV-cache names, ``{prefix}.{i}.decoder.key`` ... ``{prefix}.{i}.encoder.value``, layer by layer.

    ``prefix`` is ``past_key_values`` for a decoder step's inputs and ``present`` for its outputs; each tensor is
    [batch, heads, length, head_size]. ``encoder=False`` leaves out the cross-attention cache (what
    ``decoder_with_past_model.onnx`` returns: it reads that cache, it does not change it).
    """
    parts = ("decoder", "encoder") if encoder else ("decoder",)
    return [f"{prefix}.{layer}.{part}.{kind}" for layer in range(num_layers) for part in parts
            for kind in ("key", "value")]
