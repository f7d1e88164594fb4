"""The pieces of MIXER's loss as pure tensor functions (spec sections 3 and 4).

Shapes: B sentences, L positions. Masks are float or bool tensors [B, L] selecting the
positions a loss applies to. Every function returns a summed (scalar) loss.
"""

from __future__ import annotations

import torch


def token_nll(lprobs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0):
    """Per-token negative log-likelihood and its label-smoothed version, both [B, L]."""
    nll = -lprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if label_smoothing == 0.0:
        return nll, nll
    eps_i = label_smoothing / (lprobs.size(-1) - 1)
    smooth = -lprobs.sum(-1)
    return (1.0 - label_smoothing - eps_i) * nll + eps_i * smooth, nll


def xent_loss(token_losses: torch.Tensor, mask: torch.Tensor, per_step_mean: bool) -> torch.Tensor:
    """Cross-entropy over the masked positions.

    per_step_mean=False sums over tokens (fairseq's convention, normalised later by the token
    count); True is the release's: at every time step the mean over the batch's tokens,
    summed over the steps.
    """
    masked = token_losses * mask
    if not per_step_mean:
        return masked.sum()
    per_step_count = mask.sum(0)
    return (masked.sum(0) / per_step_count.clamp(min=1)).sum()


def reinforce_loss(
    token_logprobs: torch.Tensor, rewards: torch.Tensor, baselines: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """REINFORCE with a baseline: sum of -(R - b_t) * log p(w_t) over the sampled positions.

    R [B] and b_t [B, L] are constants here: no gradient reaches the reward or the baseline.
    """
    advantage = (rewards.unsqueeze(1) - baselines).detach()
    return -(advantage * token_logprobs * mask).sum()


def baseline_loss(
    baselines: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """1/2 * sum (b_t - R)^2 over the sampled positions; trains the baseline alone."""
    error = baselines - rewards.unsqueeze(1).detach()
    return 0.5 * (error.pow(2) * mask).sum()


def mixer_loss(
    xent: torch.Tensor,
    reinforce: torch.Tensor,
    baseline: torch.Tensor,
    xent_weight: float,
    baseline_weight: float,
) -> torch.Tensor:
    """w * XENT + (1 - w) * (REINFORCE + baseline_weight * baseline), as in the release."""
    rl_weight = 1.0 - xent_weight
    return xent_weight * xent + rl_weight * (reinforce + baseline_weight * baseline)
