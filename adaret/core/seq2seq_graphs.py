"""A summarization export's three ONNX graphs and the greedy loop over them (numpy and ONNX Runtime only).

The export's parity gate (``adaret.export.seq2seq``) and the runtime (``adaret.runtime.summarize``) both run
generation through ``Seq2SeqGraphs``, so what the gate checks is the loop a deployment runs.

The graphs (Optimum's encoder-decoder layout; every cache tensor is [batch, heads, length, head_size] float32):

    encoder_model.onnx            input_ids, attention_mask [rows, sequence] int64
                                  -> encoder_hidden_states [rows, K_L, hidden] float32,
                                     encoder_attention_mask [rows, K_L] int64 (1: a real token was kept there)
    decoder_model.onnx            input_ids [batch, steps] int64, encoder_attention_mask [batch, memory] int64,
                                  encoder_hidden_states [batch, memory, hidden] float32
                                  -> logits [batch, steps, vocab] float32,
                                     present.{i}.decoder.key/value, present.{i}.encoder.key/value (every layer i)
    decoder_with_past_model.onnx  input_ids [batch, steps] int64, encoder_attention_mask,
                                  past_key_values.{i}.decoder.key/value, past_key_values.{i}.encoder.key/value
                                  -> logits, present.{i}.decoder.key/value (positions continue after the past)

A document is one or more encoder rows (chunks, ``adaret.core.chunks``); its memory is its rows' compact memories
concatenated, and documents are padded to the longest memory with mask 0 (``assemble_memory``). The settings the
runtime needs beside the graphs are ``summarization.json`` (``SummarizationSettings``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from adaret.core.errors import AdaretError
from adaret.core.io_spec import (
    ATTENTION_MASK,
    ENCODER_ATTENTION_MASK,
    ENCODER_HIDDEN_STATES,
    INPUT_IDS,
    LOGITS,
    decoder_cache_names,
)
from adaret.core.text_files import parse_json, read_utf8

ENCODER_GRAPH = "encoder_model.onnx"
DECODER_GRAPH = "decoder_model.onnx"
DECODER_WITH_PAST_GRAPH = "decoder_with_past_model.onnx"
GRAPH_NAMES = (ENCODER_GRAPH, DECODER_GRAPH, DECODER_WITH_PAST_GRAPH)
SETTINGS_NAME = "summarization.json"
SETTINGS_FORMAT = "adaret-summarization-export"

LayerCache = tuple[np.ndarray, np.ndarray]  # key, value: [batch, heads, length, head_size]


@dataclass(frozen=True)
class SummarizationSettings:
    """What the runtime needs beside the graphs, written by the export as ``summarization.json``.

    The chunk settings and special tokens are the checkpoint's (training cut documents with exactly these); the
    decoder's shape says how many cache tensors the graphs take and how long a summary its positions allow.
    """

    chunk_length: int  # tokens per encoder row, [CLS] and [SEP] included
    max_source_tokens: int  # document tokens read; the rest is cut
    max_target_tokens: int  # summary tokens trained on, start and end included
    start_id: int  # the decoder's first input; also each chunk's [CLS]
    end_id: int  # ends a summary; also each chunk's [SEP]
    pad_id: int
    num_layers: int  # decoder layers: one self- and one cross-attention cache pair each
    num_heads: int
    head_size: int
    decoder_max_positions: int  # the decoder's position table: start token + generated tokens fit in it
    budget: float
    format: str = SETTINGS_FORMAT

    def __post_init__(self) -> None:
        if self.format != SETTINGS_FORMAT:
            raise AdaretError(f"{SETTINGS_NAME}: format {self.format!r}, expected {SETTINGS_FORMAT!r}")
        counts = {name: value for name, value in asdict(self).items() if name not in ("budget", "format")}
        bad = next((name for name, value in counts.items() if not _is_int(value) or value < 0), None)
        if bad is not None:
            raise AdaretError(f"{SETTINGS_NAME}: {bad} must be a non-negative integer, got {counts[bad]!r}")
        if self.chunk_length < 3 or self.num_layers < 1 or self.decoder_max_positions < 2:
            raise AdaretError(f"{SETTINGS_NAME}: chunk_length, num_layers or decoder_max_positions out of range")

    @property
    def default_max_new_tokens(self) -> int:
        """What training generated: a summary of at most ``max_target_tokens`` with the start token."""
        return min(self.max_target_tokens - 1, self.max_new_tokens_limit)

    @property
    def max_new_tokens_limit(self) -> int:
        return self.decoder_max_positions - 1

    def write(self, directory: Path) -> Path:
        path = Path(directory) / SETTINGS_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> SummarizationSettings:
        path = Path(directory) / SETTINGS_NAME
        hint = "re-export the summarization model"
        raw = parse_json(read_utf8(path, f"{directory}: {SETTINGS_NAME}", hint), f"{directory}: {SETTINGS_NAME}",
                         hint)
        if not isinstance(raw, dict):
            raise AdaretError(f"{directory}: {SETTINGS_NAME} is not a JSON object; {hint}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise AdaretError(f"{directory}: {SETTINGS_NAME} has unexpected or missing fields "
                              f"({' '.join(str(exc).split())}); {hint}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_summarization_export(directory: str | Path) -> bool:
    return (Path(directory) / SETTINGS_NAME).is_file()


def assemble_memory(states: np.ndarray, masks: np.ndarray,
                    rows_per_document: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each document's chunk rows (consecutive in ``states`` [rows, K, hidden], ``masks`` [rows, K]) concatenated
    into one memory, documents padded to the longest (``pad_memories``)."""
    starts = np.cumsum([0, *rows_per_document])
    hidden = states.shape[2]
    return pad_memories([(states[start:stop].reshape(-1, hidden), masks[start:stop].reshape(-1))
                         for start, stop in itertools.pairwise(starts)])


def pad_memories(memories: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Documents' memories ([tokens, hidden], [tokens]) as one batch [documents, longest, hidden], the padding with
    mask 0: a masked key's softmax weight is exactly 0, so the padding changes no document's result."""
    width = max(len(mask) for _, mask in memories)
    batch = np.zeros((len(memories), width, memories[0][0].shape[1]), dtype=memories[0][0].dtype)
    batch_mask = np.zeros((len(memories), width), dtype=np.int64)
    for doc, (states, mask) in enumerate(memories):
        batch[doc, :len(mask)] = states
        batch_mask[doc, :len(mask)] = mask
    return batch, batch_mask


@dataclass
class Generated:
    """Greedy tokens [batch, steps] (a finished row repeats the end token) and, if kept, each step's logits."""

    tokens: np.ndarray
    logits: list[np.ndarray]  # one [batch, vocab] array per step


class Seq2SeqGraphs:
    """The three sessions of a summarization export, one call per graph, and greedy decoding over them."""

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession,
                 decoder_with_past: ort.InferenceSession, num_layers: int):
        self.encoder, self.decoder, self.decoder_with_past = encoder, decoder, decoder_with_past
        self.num_layers = num_layers
        self.first_outputs = [LOGITS, *decoder_cache_names(num_layers, "present")]
        self.next_outputs = [LOGITS, *decoder_cache_names(num_layers, "present", encoder=False)]
        self.past_names = decoder_cache_names(num_layers, "past_key_values")
        self._check_names()

    def _check_names(self) -> None:
        """The graphs must have the layout this loop feeds; a mismatch is one line, not an ORT error mid-loop."""
        wanted = {DECODER_GRAPH: (self.decoder, self.first_outputs),
                  DECODER_WITH_PAST_GRAPH: (self.decoder_with_past, self.next_outputs)}
        for name, (session, outputs) in wanted.items():
            found = [o.name for o in session.get_outputs()]
            if found != outputs:
                raise AdaretError(f"{name} has outputs {found[:3]}... ({len(found)}), not the {len(outputs)} of a "
                                  f"{self.num_layers}-layer decoder; re-export the summarization model")

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoder rows [rows, sequence] -> compact memories [rows, K_L, hidden] and their masks [rows, K_L]."""
        states, mask = self.encoder.run([ENCODER_HIDDEN_STATES, ENCODER_ATTENTION_MASK],
                                        {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
        return states, mask

    def first_step(self, input_ids: np.ndarray, memory_mask: np.ndarray,
                   memory: np.ndarray) -> tuple[np.ndarray, list[LayerCache], list[LayerCache]]:
        """Logits [batch, steps, vocab], the self-attention cache and the cross-attention cache (computed here once
        from the memory)."""
        out = self.decoder.run(self.first_outputs, {INPUT_IDS: input_ids, ENCODER_ATTENTION_MASK: memory_mask,
                                                    ENCODER_HIDDEN_STATES: memory})
        caches = out[1:]
        self_cache = [(caches[4 * i], caches[4 * i + 1]) for i in range(self.num_layers)]
        cross_cache = [(caches[4 * i + 2], caches[4 * i + 3]) for i in range(self.num_layers)]
        return out[0], self_cache, cross_cache

    def next_step(self, input_ids: np.ndarray, memory_mask: np.ndarray, self_cache: Sequence[LayerCache],
                  cross_cache: Sequence[LayerCache]) -> tuple[np.ndarray, list[LayerCache]]:
        """Logits for ``input_ids`` after the cached steps, and the self-attention cache including them."""
        feeds = {INPUT_IDS: input_ids, ENCODER_ATTENTION_MASK: memory_mask}
        pasts = [tensor for own, cross in zip(self_cache, cross_cache, strict=True) for tensor in (*own, *cross)]
        feeds.update(zip(self.past_names, pasts, strict=True))
        out = self.decoder_with_past.run(self.next_outputs, feeds)
        return out[0], [(out[1 + 2 * i], out[2 + 2 * i]) for i in range(self.num_layers)]

    def greedy(self, memory: np.ndarray, memory_mask: np.ndarray, *, start_id: int, end_id: int,
               max_new_tokens: int, keep_logits: bool = False) -> Generated:
        """Greedy decoding, step for step what ``RetentionSeq2Seq.generate`` does: stop when every row has produced
        ``end_id`` or after ``max_new_tokens``; a finished row is fed ``end_id`` again (and repeats it)."""
        batch = memory.shape[0]
        tokens = np.full((batch, 1), start_id, dtype=np.int64)
        finished = np.zeros(batch, dtype=bool)
        generated, kept_logits = [], []
        self_cache: list[LayerCache] = []
        cross_cache: list[LayerCache] = []
        for step in range(max_new_tokens):
            if step == 0:
                logits, self_cache, cross_cache = self.first_step(tokens, memory_mask, memory)
            else:
                logits, self_cache = self.next_step(tokens, memory_mask, self_cache, cross_cache)
            last = logits[:, -1]
            if keep_logits:
                kept_logits.append(last)
            tokens = np.where(finished, end_id, last.argmax(-1)).astype(np.int64)[:, None]
            generated.append(tokens)
            finished |= tokens[:, 0] == end_id
            if finished.all():
                break
        steps = np.concatenate(generated, axis=1) if generated else np.zeros((batch, 0), dtype=np.int64)
        return Generated(steps, kept_logits)
