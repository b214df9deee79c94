"""The deployable module: deterministic top-M retention with ONNX-friendly inputs and outputs.

The Hard-Concrete gates are gone: each gated layer scores tokens with the gate's logit, keeps
K_l = max(2, ceil(f_l * n)) of them with TopK and Gathers hidden states, mask and original positions (see
``adaret.modeling.schedule`` for the floor of 2). When the sequence length n is symbolic (dynamic export) K_l
is integer arithmetic on the input's shape; when it is fixed (static export) K_l is a constant.
"""

from __future__ import annotations

import torch
from torch import nn

from adaret.core.io_spec import TASKS, TaskIOSpec
from adaret.modeling import DENOMINATOR, KeepSchedule, RetentionModel
from adaret.modeling.scorers import TokenScorer


def kept_positions_name(layer: int) -> str:
    """Output name for the original positions kept before (1-based) layer ``layer + 1``."""
    return f"kept_positions_l{layer + 1}"


def ranking_scores_name(layer: int) -> str:
    """Reference-only output name for what the TopK before (1-based) layer ``layer + 1`` ranks."""
    return f"ranking_scores_l{layer + 1}"


class TopMInference(nn.Module):
    """``RetentionModel`` in hard top-M mode at a fixed schedule; returns the task's outputs (logits, start and end
    logits, or summarization's memory and its int64 mask) and, with ``with_positions``, the kept positions."""

    def __init__(self, model: RetentionModel, schedule: KeepSchedule, *, with_positions: bool = False,
                 keep_order: bool = True, scorer: TokenScorer | None = None, with_scores: bool = False):
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.with_positions = with_positions
        # with_positions and with_scores: also each pruned layer's ranking scores ([batch, candidates], in the
        # order TopK saw them), after the kept positions; for the tie-aware parity check, never exported
        self.with_scores = with_scores and with_positions
        self.keep_order = keep_order
        self.scorer = scorer  # None: the learned gates; a baseline heuristic otherwise (same graph around it)
        # a summarization chunk is one segment: training feeds no token types, so neither does the graph
        self.uses_token_type_ids = model.encoder.uses_token_type_ids and not model.config.is_summarization
        self.io_spec: TaskIOSpec = TASKS[model.config.task]

    @property
    def pruned_layers(self) -> list[int]:
        """Layers preceded by a TopK/Gather in the graph (gated, and keeping less than everything)."""
        return [layer for layer in range(self.model.num_layers)
                if str(layer) in self.model.gates and self.schedule.numerators[layer] < DENOMINATOR]

    @property
    def input_names(self) -> list[str]:
        return self.io_spec.input_names(self.uses_token_type_ids)

    @property
    def output_names(self) -> list[str]:
        extra = [kept_positions_name(layer) for layer in self.pruned_layers] if self.with_positions else []
        scores = [ranking_scores_name(layer) for layer in self.pruned_layers] if self.with_scores else []
        return [*self.io_spec.outputs, *extra, *scores]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None):
        out = self.model.forward_hard(input_ids, attention_mask, token_type_ids, self.schedule, self.keep_order,
                                      self.scorer)
        logits = self._task_outputs(out)
        if not self.with_positions:
            return logits[0] if len(logits) == 1 else logits
        scores = tuple(out.ranking_scores.values()) if self.with_scores else ()
        return (*logits, *out.kept_positions.values(), *scores)  # a tuple even when no layer is pruned (budget 1.0)

    def _task_outputs(self, out) -> tuple[torch.Tensor, ...]:
        if self.model.config.is_summarization:  # the decoder's memory, and its mask as Optimum's int64
            return out.hidden_states, out.memory_mask.to(torch.int64)
        if self.model.config.is_question_answering:  # [batch, seq, 2] -> start_logits, end_logits, [batch, seq]
            return out.logits.unbind(-1)
        return (out.logits,)
