"""The retention wrapper: a Hugging Face encoder whose layers see only the tokens the gates keep.

A gate before layer l decides which token states layer l updates. Masks are cumulative (a dropped token
never comes back), dropped tokens are hidden from attention as keys, and their state is carried through
unchanged (drop-and-restore), so every position still has a final state:

    m[0, i] = attention_mask[i]
    m[l, i] = m[l-1, i] * z[l, i]                     (z = 1 for an ungated layer)
    key bias of layer l:  log(m[l, j] + tiny)         (a hard mask where m[l, j] == 0)
    h[l, i] = m[l, i] * Layer_l(h[l-1])[i] + (1 - m[l, i]) * h[l-1, i]

Three heads:
- classification reads [h_cls ; mean_i h[L, i]] over the real tokens, so it is invariant to token order;
- question answering reads every position's final state h[L, i] (a dropped token's is the state it had when it
  was dropped) and gives a start and an end logit per position. The question segment (token type 0: CLS, the
  question and its SEP) is forced like CLS, so the budget is spent on the context; the budget still counts
  every real token, question included, so a budget means the same compute in both tasks. With
  ``gate_question`` only CLS is forced and the question's tokens compete with the context's.
- summarization has no head: the encoder's output is the decoder's memory (``adaret.modeling.seq2seq``). The
  compact memory is what survives the last gated layer: in hard mode those tokens' states, gathered (K_L of
  them), and in relaxed mode every position's state with the soft mask m[L] as its mask. ``memory="restored"``
  is the alternative the decoder can read instead: every position, dropped ones with their restored state.

Two modes share the same parameters:
- relaxed: Hard-Concrete samples in training, deterministic gates in eval. A layer only computes the
  tokens with m > 0 (gather, run, scatter back); a token with m == 0 would be multiplied by zero anyway.
- hard: the deployable top-M rule. Each gated layer keeps K_l = max(2, ceil(f_l * n)) tokens by score (TopK),
  physically Gathers hidden states, mask and original positions, and runs the layer on K_l tokens only.
  The mean pool adds each dropped token's state once, when it is dropped. For question answering, each
  dropped token's state is scattered back to its original position when it is dropped (restore).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from adaret.core.io_spec import CLASSIFICATION, QUESTION_ANSWERING, SUMMARIZATION, TASKS
from adaret.modeling.budget import geometric_keep_ratio
from adaret.modeling.encoders import EncoderAdapter
from adaret.modeling.gates import HardConcreteGate, HardConcreteParams, force_logits
from adaret.modeling.schedule import DENOMINATOR, KeepSchedule
from adaret.modeling.scorers import TokenScorer

# Additive key bias for a masked key in hard mode; finite so the graph also runs in fp16.
MASKED_KEY_BIAS = -1e4
POOLINGS = ("cls_mean", "cls")
MEMORIES = ("compact", "restored")


@dataclass
class RetentionConfig:
    """Everything that defines the gates and the head (the backbone is described by its own config)."""

    label_names: list[str]
    gate_first_layer: bool = False
    scorer: str = "linear"
    gate_positions: bool = False  # the gates' learned prior on each token's relative position (gates.py)
    gate_question: bool = False  # question answering: the question segment is gated too, only CLS is forced
    hard_concrete: dict = field(default_factory=lambda: asdict(HardConcreteParams()))
    init_budget: float = 0.5
    mask_epsilon: float = 1e-9
    pooling: str = "cls_mean"  # "cls_mean": [h_cls ; mean of real tokens] (order-invariant); "cls": h_cls only
    task: str = CLASSIFICATION.task  # or QUESTION_ANSWERING.task: a span head over every position, or SUMMARIZATION
    memory: str = "compact"  # summarization: what the decoder reads ("compact" or "restored"; see the module doc)

    @property
    def is_question_answering(self) -> bool:
        return self.task == QUESTION_ANSWERING.task

    @property
    def is_summarization(self) -> bool:
        return self.task == SUMMARIZATION.task

    @property
    def restores_states(self) -> bool:
        """The hard rule writes each dropped token's state back at its position (QA, and a restored memory)."""
        return self.is_question_answering or (self.is_summarization and self.memory == "restored")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def gated_layers(self, num_layers: int) -> list[int]:
        first = 0 if self.gate_first_layer else 1
        return list(range(first, num_layers))


@dataclass
class RetentionOutput:
    logits: torch.Tensor | None  # classification [batch, labels]; QA [batch, seq, 2] (start, end); None: summarization
    pooled: torch.Tensor | None = None  # [CLS ; mean] features the head reads
    expected_masks: list[torch.Tensor] = field(default_factory=list)  # relaxed: E[m[l]] per layer
    masks: list[torch.Tensor] = field(default_factory=list)  # relaxed: the (sampled) m[l] per layer
    kept_positions: dict[int, torch.Tensor] = field(default_factory=dict)  # hard: original positions
    # hard: what TopK ranked at each pruned layer (forced tokens and padding included), over that layer's
    # candidates in their current order; the parity check needs them to tell a near-tie from a bug
    ranking_scores: dict[int, torch.Tensor] = field(default_factory=dict)
    # summarization: the decoder's memory [batch, memory, hidden] and its mask [batch, memory] (float; soft in relaxed)
    hidden_states: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None


class RetentionModel(nn.Module):
    """An encoder with Hard-Concrete retention gates and a [CLS; mean] classification head or a span head."""

    def __init__(self, encoder: EncoderAdapter, config: RetentionConfig):
        super().__init__()
        self.encoder = encoder
        self.config = config
        hidden = encoder.hidden_size
        params = HardConcreteParams(**config.hard_concrete)
        gated = config.gated_layers(encoder.num_layers)
        ratio = geometric_keep_ratio(config.init_budget, encoder.num_layers, encoder.num_layers - len(gated))
        self.gates = nn.ModuleDict({
            str(layer): HardConcreteGate(hidden, params, config.scorer, ratio, config.gate_positions) for layer in gated
        })
        if config.task not in TASKS:
            raise ValueError(f"unknown task {config.task!r} (expected one of {', '.join(TASKS)})")
        if config.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {config.pooling!r} (expected one of {', '.join(POOLINGS)})")
        if config.memory not in MEMORIES:
            raise ValueError(f"unknown memory {config.memory!r} (expected one of {', '.join(MEMORIES)})")
        if config.is_summarization:
            self.head = nn.Identity()  # the decoder reads the states; it lives in the seq2seq model
        elif config.is_question_answering:
            self.head = nn.Linear(hidden, 2)
        else:
            self.head = nn.Linear(hidden * (2 if config.pooling == "cls_mean" else 1), config.num_labels)

    @property
    def num_layers(self) -> int:
        return self.encoder.num_layers

    def freeze_backbone(self) -> None:
        """Retention-adapter training: the backbone stays as it is; gates (and optionally the head) learn."""
        self.encoder.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, *, mode: str = "relaxed",
                schedule: KeepSchedule | None = None, keep_order: bool = True,
                scorer: TokenScorer | None = None) -> RetentionOutput:
        if mode == "relaxed":
            return self.forward_relaxed(input_ids, attention_mask, token_type_ids, use_gates=True)
        if mode == "full":
            return self.forward_relaxed(input_ids, attention_mask, token_type_ids, use_gates=False)
        if mode == "hard":
            if schedule is None:
                raise ValueError("hard mode needs a keep schedule")
            return self.forward_hard(input_ids, attention_mask, token_type_ids, schedule, keep_order, scorer)
        raise ValueError(f"unknown mode {mode!r}")

    # --- relaxed (training) -------------------------------------------------------------------------

    def forward_relaxed(self, input_ids, attention_mask, token_type_ids=None, use_gates: bool = True):
        real = attention_mask.to(torch.float32)
        positions = _positions(input_ids)
        forced = self._forced(attention_mask, token_type_ids)
        hidden = self.encoder.embed(input_ids, token_type_ids)
        mask, expected, expected_masks, masks = real, real, [], []
        for layer in range(self.num_layers):
            gate = self.gates[str(layer)] if use_gates and str(layer) in self.gates else None
            if gate is not None:
                log_alpha = force_logits(_gate_score(gate, hidden, positions, real), real, positions, forced)
                z = gate.sample(log_alpha) if self.training else gate.deterministic(log_alpha)
                mask = mask * z
                expected = expected * gate.prob_open(log_alpha)
            expected_masks.append(expected)
            masks.append(mask)
            hidden = self._update_alive(layer, hidden, mask)
        if self.config.is_question_answering:  # h[L, i] is already the restored state of every position
            return RetentionOutput(self.head(hidden), expected_masks=expected_masks, masks=masks)
        if self.config.is_summarization:
            memory_mask = mask if self.config.memory == "compact" else real
            return RetentionOutput(None, expected_masks=expected_masks, masks=masks, hidden_states=hidden,
                                   memory_mask=memory_mask)
        pooled = self._pool(hidden[:, 0], lambda: _masked_sum(hidden, real), real)
        return RetentionOutput(self.head(pooled), pooled, expected_masks=expected_masks, masks=masks)

    def _forced(self, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor | None:
        """The tokens every gate keeps: None means CLS only; question answering keeps the question segment unless
        its gates rank the question too (``gate_question``)."""
        if not self.config.is_question_answering or self.config.gate_question:
            return None
        if token_type_ids is None:
            raise ValueError("question answering needs token_type_ids to find the question segment")
        return (token_type_ids == 0) & (attention_mask > 0)

    def _pool(self, cls: torch.Tensor, real_sum, real: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "cls":
            return cls
        return torch.cat([cls, real_sum() / real.sum(1, keepdim=True)], dim=-1)

    def _update_alive(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Drop-and-restore for the tokens with m > 0 only: gather them, run the layer, scatter back."""
        alive = mask > 0
        count = int(alive.sum(dim=1).max())
        order = torch.argsort(alive.to(torch.int8), dim=1, descending=True, stable=True)[:, :count]
        index = order.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        h_alive, m_alive = hidden.gather(1, index), mask.gather(1, order)
        # hidden is full length here, so the gather order is the alive tokens' original positions
        out = self.encoder.run_layer(layer, h_alive, self._key_bias(m_alive), self.encoder.layer_context(order))
        m = m_alive.unsqueeze(-1)
        return hidden.scatter(1, index, m * out + (1.0 - m) * h_alive)

    def _key_bias(self, mask: torch.Tensor) -> torch.Tensor:
        """``log(m + tiny)`` for live keys; a hard mask for m == 0.

        Only padding slots of a ragged batch reach a layer with m == 0 (dead tokens are not gathered), and
        log(tiny) = -20.7 is not a mask: attention logits spread wider than that in some heads, so a
        padding key would leak into real tokens' attention.
        """
        return torch.where(mask > 0, torch.log(mask + self.config.mask_epsilon),
                           torch.full_like(mask, MASKED_KEY_BIAS))

    # --- hard top-M (inference and export reference) -----------------------------------------------

    @property
    def first_gated_layer(self) -> int:
        """The layers before it have no gate: every schedule runs them on every token."""
        return min((int(layer) for layer in self.gates), default=self.num_layers)

    def unpruned_prefix(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """h[p] for p = ``first_gated_layer``: the same under every schedule, so a caller that runs one batch at
        many schedules (the budget search) computes it once and passes it to ``forward_hard(prefix=...)``."""
        key_bias = (1.0 - attention_mask.to(torch.float32)) * MASKED_KEY_BIAS
        hidden = self.encoder.embed(input_ids, token_type_ids)
        context = self.encoder.layer_context(_positions(input_ids)) if self.first_gated_layer else None
        for layer in range(self.first_gated_layer):
            hidden = self.encoder.run_layer(layer, hidden, key_bias, context)
        return hidden

    def forward_hard(self, input_ids, attention_mask, token_type_ids, schedule: KeepSchedule,
                     keep_order: bool = True, scorer: TokenScorer | None = None,
                     prefix: torch.Tensor | None = None) -> RetentionOutput:
        """``scorer``: what ranks the tokens (default: the gates); see ``adaret.modeling.scorers``.
        ``prefix``: ``unpruned_prefix`` of these inputs, to start at the first gated layer (not with a scorer that
        reads the previous layer's attention, which the prefix does not keep)."""
        if len(schedule.numerators) != self.num_layers:
            raise ValueError(f"schedule has {len(schedule.numerators)} layers, model has {self.num_layers}")
        if prefix is not None and scorer is not None and scorer.needs_attention:
            raise ValueError("a scorer that reads attention needs the whole forward, not a prefix")
        counts = schedule.keep_counts(input_ids.shape[1])
        real = attention_mask.to(torch.float32)
        mask, positions = real, _positions(input_ids)
        forced = self._forced(attention_mask, token_type_ids)
        start = 0 if prefix is None else self.first_gated_layer
        hidden = self.encoder.embed(input_ids, token_type_ids) if prefix is None else prefix
        context = self.encoder.layer_context(positions)  # rebuilt below whenever tokens are dropped
        # QA and a restored memory: each position's state when it was dropped
        restored = hidden if self.config.restores_states else None
        pooled_sum = torch.zeros_like(hidden[:, 0])
        track_pool = restored is None and not self.config.is_summarization and self.config.pooling == "cls_mean"
        kept: dict[int, torch.Tensor] = {}
        ranked: dict[int, torch.Tensor] = {}
        attention = None
        for layer in range(start, self.num_layers):
            if str(layer) in self.gates and schedule.numerators[layer] < DENOMINATOR:
                raw = (_gate_score(self.gates[str(layer)], hidden, positions, real) if scorer is None
                       else scorer(layer, hidden, positions, mask, attention))
                scores = ranked[layer] = force_logits(raw, mask, positions, forced)
                order = torch.topk(scores, counts[layer], dim=1).indices
                if keep_order:  # ascending original order; a TopK with the same K keeps K a constant
                    order = torch.topk(order, counts[layer], dim=1, largest=False).values
                if track_pool:
                    pooled_sum = pooled_sum + _masked_sum(hidden, mask)
                if restored is not None:
                    restored = _put(restored, positions, hidden)
                if forced is not None:
                    forced = forced.gather(1, order)
                hidden, mask, positions = _take(hidden, order), mask.gather(1, order), positions.gather(1, order)
                context = self.encoder.layer_context(positions)
                if track_pool:
                    pooled_sum = pooled_sum - _masked_sum(hidden, mask)
                kept[layer] = positions
            key_bias = (1.0 - mask) * MASKED_KEY_BIAS
            if scorer is not None and scorer.needs_attention:
                hidden, attention = self.encoder.run_layer_with_attention(layer, hidden, key_bias, context)
            else:
                hidden = self.encoder.run_layer(layer, hidden, key_bias, context)
        if self.config.is_summarization:
            memory, memory_mask = (hidden, mask) if restored is None else (_put(restored, positions, hidden), real)
            return RetentionOutput(None, kept_positions=kept, ranking_scores=ranked, hidden_states=memory,
                                   memory_mask=memory_mask)
        if restored is not None:
            return RetentionOutput(self.head(_put(restored, positions, hidden)), kept_positions=kept,
                                   ranking_scores=ranked)
        pooled = self._pool(hidden[:, 0], lambda: pooled_sum + _masked_sum(hidden, mask), real)
        return RetentionOutput(self.head(pooled), pooled, kept_positions=kept, ranking_scores=ranked)


def _positions(input_ids: torch.Tensor) -> torch.Tensor:
    batch, seq = input_ids.shape
    return torch.arange(seq, device=input_ids.device).unsqueeze(0).expand(batch, seq)


def _gate_score(gate: HardConcreteGate, hidden: torch.Tensor, positions: torch.Tensor,
                real: torch.Tensor) -> torch.Tensor:
    """The gate's log_alpha; with a position prior, each token's original position over its text's last real
    position (0 for the first, 1 for the last) is its relative position."""
    if gate.position_weights is None:
        return gate.log_alpha(hidden)
    last = (real.sum(-1, keepdim=True) - 1.0).clamp(min=1.0)
    return gate.log_alpha(hidden, positions.to(real.dtype) / last)


def _masked_sum(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # One (B, 1, n) @ (B, n, d) product exports as a single MatMul; Mul + ReduceSum made two passes over
    # the hidden states at every gated layer. bmm rather than matmul: matmul's decomposition branches on
    # size-1 dimensions, and torch.export turns each such branch into a guard on the symbolic K.
    return torch.bmm(mask.unsqueeze(1), hidden).squeeze(1)


def _take(hidden: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return hidden.gather(1, order.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def _put(restored: torch.Tensor, positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Write each kept token's state back at its original position (the inverse of ``_take``)."""
    return restored.scatter(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]), hidden)
