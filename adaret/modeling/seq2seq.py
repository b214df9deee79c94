"""Summarization: a retention encoder whose compact memory a Transformer decoder cross-attends to.

Encoder. A ``RetentionModel`` with ``task="summarization"`` (same gates, budget and top-M rule as classification).
A document longer than the encoder's positions is cut into chunks of at most ``chunk_length`` tokens, each with
its own [CLS] ... [SEP] and its own top-M; every chunk is a row of the encoder's batch. The memory of a document
is the concatenation of its chunks' memories:

    memory[b]      = concat_c  H_L[b, c, kept_c]          [C * K_L, hidden]     (hard: K_L tokens per chunk)
    memory_mask[b] = concat_c  m_L[b, c, kept_c]

Decoder. BERT layers with causal self-attention and cross-attention, warm-started from the same encoder checkpoint
(Hugging Face's ``BertLMHeadModel`` with ``is_decoder`` and ``add_cross_attention``; the cross-attention weights
start fresh, the LM head is tied to the word embeddings). At step t, with y_<t the tokens so far:

    x      = Embed(y_t, position = t)
    a      = LN(x + SelfAttention(q = x, keys/values = cached K, V of y_<=t, causal))
    c      = LN(a + CrossAttention(q = a, K_mem = W_k memory, V_mem = W_v memory, bias))
    x'     = LN(c + FFN(c))                                            (per layer)
    logits = LMHead(x'_L)
    bias_j = log(memory_mask_j + tiny) where memory_mask_j > 0, else -1e4

K_mem and V_mem are computed once per document from the compact memory: the cross-attention cache is K_L / n of
the full model's, and every generated token attends over K_L * C keys instead of n.

Why the decoder's layer math is written here rather than called through ``BertLayer.forward``: the exported
decoder steps must take and return the KV cache as plain tensors in Optimum's layout ([batch, heads, length,
head_size], ``adaret.core.io_spec.decoder_cache_names``), and the relaxed memory mask must enter the
cross-attention as a log bias. The code reuses every weight and sub-module of the Hugging Face layers (their
projections, ``BertSelfOutput``, ``feed_forward_chunk``, the LM head); tests/test_seq2seq.py checks it against
``BertLMHeadModel.forward`` and ``generate``. One difference in training only: attention probabilities get no
dropout here (the hidden-state dropout of ``BertSelfOutput`` and the feed-forward is kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from adaret.modeling.retention import MASKED_KEY_BIAS, RetentionModel
from adaret.modeling.schedule import KeepSchedule
from adaret.modeling.scorers import TokenScorer

LayerCache = tuple[torch.Tensor, torch.Tensor]  # key, value: [batch, heads, length, head_size]


@dataclass
class Memory:
    """The decoder's memory for a batch of documents."""

    states: torch.Tensor  # [batch, memory, hidden]
    mask: torch.Tensor  # [batch, memory], float; soft (in [0, 1]) in relaxed mode
    expected_masks: list[torch.Tensor] = field(default_factory=list)  # relaxed: E[m[l]] per layer, [batch, C * S]
    kept_positions: dict[int, torch.Tensor] = field(default_factory=dict)  # hard: per chunk row


@dataclass
class Seq2SeqOutput:
    logits: torch.Tensor  # [batch, target, vocab]
    memory: Memory

    @property
    def expected_masks(self) -> list[torch.Tensor]:
        return self.memory.expected_masks


def memory_bias(mask: torch.Tensor, epsilon: float = 1e-9) -> torch.Tensor:
    """The cross-attention's additive key bias: log(m) for a kept token, a hard mask for m == 0 (see
    ``RetentionModel._key_bias`` for why log(tiny) alone is not a mask)."""
    return torch.where(mask > 0, torch.log(mask + epsilon), torch.full_like(mask, MASKED_KEY_BIAS))


class MemoryDecoder(nn.Module):
    """The decoder stack of a ``BertLMHeadModel``, run one call per step with an explicit KV cache."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        config = lm.config
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads

    @property
    def layers(self) -> nn.ModuleList:
        return self.lm.bert.encoder.layer

    @property
    def vocab_size(self) -> int:
        return int(self.lm.config.vocab_size)

    def cross_cache(self, memory: torch.Tensor) -> list[LayerCache]:
        """Each layer's cross-attention keys and values from the memory: computed once per document."""
        cross = [layer.crossattention.self for layer in self.layers]
        return [(self._heads(attention.key(memory)), self._heads(attention.value(memory))) for attention in cross]

    def forward(self, input_ids: torch.Tensor, bias: torch.Tensor, cross: list[LayerCache],
                past: list[LayerCache] | None = None) -> tuple[torch.Tensor, list[LayerCache]]:
        """Logits [batch, steps, vocab] for ``input_ids`` [batch, steps] after ``past`` (None: from the start),
        and every layer's self-attention cache including these steps. ``bias``: [batch, memory], additive."""
        past_length = 0 if past is None else past[0][0].shape[2]
        steps = input_ids.shape[1]
        positions = torch.arange(past_length, past_length + steps, device=input_ids.device).unsqueeze(0)
        hidden = self.lm.bert.embeddings(input_ids=input_ids, position_ids=positions,
                                         token_type_ids=torch.zeros_like(input_ids))
        causal = _causal_bias(steps, past_length, hidden.dtype, hidden.device)
        cross_bias = bias[:, None, None, :].to(hidden.dtype)
        present = []
        for index, layer in enumerate(self.layers):
            attention = layer.attention.self
            key = self._heads(attention.key(hidden))
            value = self._heads(attention.value(hidden))
            if past is not None:
                key, value = torch.cat([past[index][0], key], dim=2), torch.cat([past[index][1], value], dim=2)
            present.append((key, value))
            attended = self._attend(attention.query(hidden), key, value, causal)
            hidden = layer.attention.output(attended, hidden)
            crossed = self._attend(layer.crossattention.self.query(hidden), *cross[index], cross_bias)
            hidden = layer.feed_forward_chunk(layer.crossattention.output(crossed, hidden))
        return self.lm.cls(hidden), present

    def _heads(self, projected: torch.Tensor) -> torch.Tensor:
        batch, length, _ = projected.shape
        return projected.view(batch, length, self.num_heads, self.head_size).transpose(1, 2)

    def _attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
        scores = self._heads(query) @ key.transpose(2, 3) / math.sqrt(self.head_size) + bias
        out = torch.softmax(scores, dim=-1) @ value
        batch, _, length, _ = out.shape
        return out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size)


def _causal_bias(steps: int, past_length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1, 1, steps, past + steps]: step i sees the past and the steps up to i."""
    query = torch.arange(steps, device=device).unsqueeze(1) + past_length
    key = torch.arange(past_length + steps, device=device).unsqueeze(0)
    return torch.where(key <= query, 0.0, MASKED_KEY_BIAS).to(dtype)[None, None]


class RetentionSeq2Seq(nn.Module):
    """Retention encoder (chunked) + memory decoder; ``gates``, ``encoder`` and ``head`` match ``RetentionModel``'s
    so that gate training (``adaret.training.sgda``) drives both: the decoder plays the head's part."""

    def __init__(self, retention: RetentionModel, decoder: MemoryDecoder):
        super().__init__()
        if not retention.config.is_summarization:
            raise ValueError("the encoder of a summarization model needs task='summarization'")
        self.retention = retention
        self.decoder = decoder

    @property
    def config(self):
        return self.retention.config

    @property
    def gates(self) -> nn.ModuleDict:
        return self.retention.gates

    @property
    def encoder(self) -> nn.Module:
        return self.retention.encoder

    @property
    def head(self) -> nn.Module:
        return self.decoder

    @property
    def num_layers(self) -> int:
        return self.retention.num_layers

    def freeze_backbone(self) -> None:
        self.retention.freeze_backbone()

    def train(self, mode: bool = True) -> RetentionSeq2Seq:
        """A frozen decoder stays in eval mode (no dropout) while the gates train, as a frozen backbone does."""
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.decoder.parameters()):
            self.decoder.eval()
        return self

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, mode: str = "relaxed",
               schedule: KeepSchedule | None = None, scorer: TokenScorer | None = None) -> Memory:
        """``input_ids`` and ``attention_mask`` [batch, chunks, chunk_length] (or [batch, length]: one chunk).
        ``scorer``: what ranks the tokens in hard mode (default: the gates; baselines in ``adaret.modeling.scorers``).
        """
        if input_ids.dim() == 2:
            input_ids, attention_mask = input_ids.unsqueeze(1), attention_mask.unsqueeze(1)
        batch, chunks, length = input_ids.shape
        out = self.retention(input_ids.reshape(-1, length), attention_mask.reshape(-1, length), mode=mode,
                             schedule=schedule, scorer=scorer)
        states = out.hidden_states.reshape(batch, -1, out.hidden_states.shape[-1])
        return Memory(states, out.memory_mask.reshape(batch, -1),
                      [e.reshape(batch, chunks * length) for e in out.expected_masks], out.kept_positions)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor, *,
                mode: str = "relaxed", schedule: KeepSchedule | None = None) -> Seq2SeqOutput:
        """Teacher forcing: logits for every position of ``decoder_input_ids`` [batch, target]."""
        memory = self.encode(input_ids, attention_mask, mode=mode, schedule=schedule)
        return Seq2SeqOutput(self.decode_memory(decoder_input_ids, memory), memory)

    def decode_memory(self, decoder_input_ids: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Teacher-forced logits [batch, target, vocab] over an encoded memory."""
        logits, _ = self.decoder(decoder_input_ids, memory_bias(memory.mask), self.decoder.cross_cache(memory.states))
        return logits

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, start_id: int, end_id: int,
                 max_new_tokens: int, mode: str = "hard", schedule: KeepSchedule | None = None,
                 scorer: TokenScorer | None = None) -> torch.Tensor:
        """Greedy decoding with the KV cache: [batch, steps] token ids after ``start_id`` (``end_id`` included;
        a finished row repeats ``end_id``). The reference the exported graphs are checked against."""
        memory = self.encode(input_ids, attention_mask, mode=mode, schedule=schedule, scorer=scorer)
        bias, cross = memory_bias(memory.mask), self.decoder.cross_cache(memory.states)
        tokens = torch.full((memory.states.shape[0], 1), start_id, dtype=torch.long, device=memory.states.device)
        finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        past, generated = None, []
        for _ in range(max_new_tokens):
            logits, past = self.decoder(tokens, bias, cross, past)
            tokens = torch.where(finished, end_id, logits[:, -1].argmax(-1)).unsqueeze(1)
            generated.append(tokens)
            finished |= tokens.squeeze(1) == end_id
            if bool(finished.all()):
                break
        return torch.cat(generated, dim=1)


def warm_start_decoder(model_dir: str, attn_implementation: str = "eager") -> MemoryDecoder:
    """A decoder warm-started from a local BERT-family checkpoint (no hub access): its embeddings, self-attention
    and feed-forward weights; fresh cross-attention and LM-head bias; the LM head tied to the word embeddings."""
    from transformers import BertLMHeadModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh cross-attention weights are expected, not a problem to report
    try:
        lm = BertLMHeadModel.from_pretrained(model_dir, is_decoder=True, add_cross_attention=True,
                                             local_files_only=True, attn_implementation=attn_implementation)
    finally:
        hf_logging.set_verbosity(verbosity)
    return MemoryDecoder(lm)


def decoder_from_config(config) -> MemoryDecoder:
    """A decoder of a given (decoder) config, randomly initialised: tests, and checkpoints that carry its weights."""
    from transformers import BertLMHeadModel

    config.is_decoder, config.add_cross_attention = True, True
    return MemoryDecoder(BertLMHeadModel(config))
