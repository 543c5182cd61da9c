"""The Bradley–Terry preference model, shared by labelers and reward-model training.

A comparison of items a and b with scores (returns, rewards) r_a and r_b is modelled as
P(a ≻ b) = σ(β · (r_a − r_b)). A synthetic labeler samples from it with its own β (its
rationality); a reward model r_φ is fitted by minimising −log σ(r_φ(winner) − r_φ(loser)),
with a tie (label 0.5) counted half each way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def preference_probability(score_a: torch.Tensor, score_b: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """P(a ≻ b) under a Boltzmann-rational chooser with inverse temperature ``beta``."""
    return torch.sigmoid(beta * (score_a - score_b))


def bradley_terry_loss(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean Bradley–Terry loss; ``label`` is P(a ≻ b): 1 when a won, 0 when b won, 0.5 for a tie.

    Equals −log σ(r(winner) − r(loser)) for hard labels, and the cross-entropy against the
    soft target for ties.
    """
    return F.binary_cross_entropy_with_logits(score_a - score_b, label.to(score_a.dtype))
