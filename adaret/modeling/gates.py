"""Hard-Concrete retention gates (Louizos, Welling and Kingma, ICLR 2018).

One gate sits before each gated encoder layer l and scores every token i:

    log_alpha[l, i] = w_l . LayerNorm(h[l-1, i]) + b_l            (linear scorer; an MLP is optional)

optionally plus a learned prior on where the token sits in its text (``--gate-positions``):

    + p_l1 (r_i - 1/2) + p_l2 (r_i - 1/2)^2,    r_i = i / (n - 1),  n the text's real length

initialised at (p_l1, p_l2) = (POSITION_INIT, 0), so that the gates start out ranking mostly like truncation
(the head first) and learn from there.

Training draws a stretched, clamped Concrete sample per token:

    u ~ U(eps, 1 - eps)
    s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
    z = clamp(s * (zeta - gamma) + gamma, 0, 1)

with beta = 2/3, gamma = -0.1, zeta = 1.1. The stretch puts real probability mass on exactly 0 and 1, and
the probability that a gate is open has a closed form:

    P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))

At inference there is no sampling. The deterministic gate is ``clamp(sigmoid(log_alpha) * (zeta - gamma) +
gamma, 0, 1)``, and the top-M rule ranks tokens by ``log_alpha`` itself (the score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# A logit this large saturates every gate formula above in float32 (sigmoid(1e4) == 1.0 exactly).
FORCED_LOGIT = 1e4
# The position prior's initial slope: 4 logits from the first token to the last, ten times the spread of the
# content scores at initialisation (0.02 * sqrt(384) for MiniLM), so the first ranking is mostly truncation's
# (neighbouring tokens still swap: one untuned choice).
POSITION_INIT = -4.0


@dataclass(frozen=True)
class HardConcreteParams:
    beta: float = 2.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1
    eps: float = 1e-6

    @property
    def open_shift(self) -> float:
        """``beta * log(-gamma / zeta)``: P(z != 0) = sigmoid(log_alpha - open_shift)."""
        return self.beta * math.log(-self.gamma / self.zeta)

    def log_alpha_for_open_prob(self, p: float) -> float:
        """The logit whose gate is open with probability ``p`` (used to initialise the bias)."""
        return math.log(p / (1.0 - p)) + self.open_shift


class HardConcreteGate(nn.Module):
    """Scores tokens and turns scores into Hard-Concrete gates. See the module docstring for the math."""

    def __init__(self, hidden_size: int, params: HardConcreteParams, scorer: str = "linear",
                 init_open_prob: float = 0.9, positions: bool = False):
        super().__init__()
        self.params = params
        self.position_weights = nn.Parameter(torch.tensor([POSITION_INIT, 0.0])) if positions else None
        self.norm = nn.LayerNorm(hidden_size)
        if scorer == "linear":
            self.scorer = nn.Linear(hidden_size, 1)
        elif scorer == "mlp":
            self.scorer = nn.Sequential(nn.Linear(hidden_size, hidden_size // 4), nn.GELU(),
                                        nn.Linear(hidden_size // 4, 1))
        else:
            raise ValueError(f"unknown gate scorer {scorer!r} (expected 'linear' or 'mlp')")
        last = self.scorer if scorer == "linear" else self.scorer[-1]
        nn.init.normal_(last.weight, std=0.02)
        nn.init.constant_(last.bias, params.log_alpha_for_open_prob(init_open_prob))

    def log_alpha(self, hidden: torch.Tensor, relative: torch.Tensor | None = None) -> torch.Tensor:
        """``w . LayerNorm(h) + b`` for every token: [batch, seq, hidden] -> [batch, seq]; with the position
        prior, plus ``p_1 (r - 1/2) + p_2 (r - 1/2)^2`` for ``relative`` positions r ([batch, seq])."""
        score = self.scorer(self.norm(hidden)).squeeze(-1)
        if self.position_weights is None:
            return score
        if relative is None:
            raise ValueError("this gate has a position prior: pass each token's relative position")
        centred = relative - 0.5
        return score + self.position_weights[0] * centred + self.position_weights[1] * centred * centred

    def sample(self, log_alpha: torch.Tensor) -> torch.Tensor:
        p = self.params
        u = torch.rand_like(log_alpha).clamp(p.eps, 1.0 - p.eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / p.beta)
        return (s * (p.zeta - p.gamma) + p.gamma).clamp(0.0, 1.0)

    def prob_open(self, log_alpha: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(log_alpha - self.params.open_shift)

    def deterministic(self, log_alpha: torch.Tensor) -> torch.Tensor:
        p = self.params
        return (torch.sigmoid(log_alpha) * (p.zeta - p.gamma) + p.gamma).clamp(0.0, 1.0)


def force_logits(log_alpha: torch.Tensor, alive: torch.Tensor, positions: torch.Tensor,
                 forced: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the forced tokens always (default: CLS, original position 0); rank padding below every real token.

    Padding gets ``-FORCED_LOGIT - position`` and a forced token ``FORCED_LOGIT - position`` rather than +-inf, so
    that ties among them break the same way in PyTorch and ONNX Runtime (TopK tie order is not specified across
    backends); both stay exact in float32 for any position below 2**13.
    """
    offset = positions.to(log_alpha.dtype)
    scores = torch.where(alive > 0, log_alpha, -FORCED_LOGIT - offset)
    if forced is None:
        return torch.where(positions == 0, torch.full_like(scores, FORCED_LOGIT), scores)
    return torch.where(forced, FORCED_LOGIT - offset, scores)
