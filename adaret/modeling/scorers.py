"""What ranks the tokens at a top-M layer: the learned gate, or a baseline heuristic in the same graph.

The hard top-M rule keeps the K_l highest-scoring tokens before layer l. Only the score changes between
methods; the schedule, the TopK/Gather path, the head and the export are the same, so the baselines are
compared with learned retention at equal cost and through the same deployment graph:

- learned (the method; no scorer object, ``forward_hard`` asks the gates):
  ``log_alpha[l, i] = w_l . LayerNorm(h[l-1, i]) + b_l``.
- ``AttentionSignificanceScorer`` (PoWER-BERT, Goyal et al., ICML 2020): the attention a token received in
  the previous layer, summed over heads and over the real queries,

      sig[l, i] = sum_h sum_q m[q] * A[l-1, h, q, i]

  where A is the softmax attention of layer l-1 (on the tokens that layer processed) and m the real-token
  mask. It needs the first layer ungated (there is no layer before it).
- ``RandomScorer``: a fixed random table over original positions, one per layer (seeded). The graph stays
  deterministic, so it is parity-checked like the others; for a given length it keeps a random subset.

Every score then goes through ``force_logits`` (CLS always kept, padding ranked last), so all keep CLS.
"""

from __future__ import annotations

import torch
from torch import nn

SCORERS = ("learned", "significance", "random")


class TokenScorer(nn.Module):
    """Scores the tokens in front of a top-M layer; higher is kept first."""

    needs_attention = False

    def forward(self, layer: int, hidden: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                attention: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class AttentionSignificanceScorer(TokenScorer):
    """PoWER-BERT significance: attention received in the previous layer, over heads and real queries."""

    needs_attention = True

    def forward(self, layer, hidden, positions, mask, attention):
        if attention is None:
            raise ValueError(f"attention significance needs the attention of the layer before layer {layer + 1}")
        # A is [batch, heads, queries, keys]; sum over heads, then weight queries by m: one batched product.
        received = attention.sum(dim=1)
        return torch.bmm(mask.unsqueeze(1), received).squeeze(1)


class RandomScorer(TokenScorer):
    """A fixed random score per (layer, original position)."""

    def __init__(self, num_layers: int, max_positions: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(num_layers, max_positions, generator=generator))

    def forward(self, layer, hidden, positions, mask, attention):
        return self.table[layer][positions]


def make_scorer(name: str, model: nn.Module, *, seed: int = 0) -> TokenScorer | None:
    """``learned`` (None: the model's own gates), ``significance`` or ``random`` for a ``RetentionModel``."""
    if name == "learned":
        return None
    if name == "significance":
        if "0" in model.gates:
            raise ValueError("attention significance cannot score the first layer's input (no layer before it)")
        return AttentionSignificanceScorer()
    if name == "random":
        return RandomScorer(model.num_layers, int(model.encoder.config.max_position_embeddings), seed)
    raise ValueError(f"unknown scorer {name!r} (expected one of {', '.join(SCORERS)})")
