"""The baselines of REINFORCE (spec section 4): MIXER's learned one and two later ones.

- learned (the paper): a linear regressor per time step on the decoder state;
- self-critical (Rennie et al. 2017): the reward of the greedy continuation of the same
  prefix, computed by the criterion and spread over the positions by `sentence_baseline`;
- leave-one-out (Kool et al. 2019): the mean reward of the other samples of the source.
"""

from __future__ import annotations

import torch
from torch import nn


class StepBaseline(nn.Module):
    """b_t = w_t . h_t + c_t on the detached decoder feature h_t.

    One linear regressor per time step (steps past the last head share it), or a single
    shared one. Weights start at 0 and biases at 0.01, as in the release. The feature is
    detached, so the baseline's loss never reaches the network.

    The bias is stored divided by `bias_scale`: an adaptive optimiser such as Adam moves a
    parameter by about lr per update whatever its gradient, so with a fine-tuning lr the
    bias would need thousands of updates to reach the mean reward; a scale of 100 lets it
    move 100 times faster. With 1 (the release) nothing changes.
    """

    def __init__(
        self, feature_dim: int, num_heads: int, init_bias: float = 0.01, bias_scale: float = 1.0
    ):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"the baseline needs at least one head (got {num_heads})")
        if bias_scale <= 0:
            raise ValueError(f"the baseline's bias scale must be > 0 (got {bias_scale})")
        self.bias_scale = bias_scale
        self.weight = nn.Parameter(torch.zeros(num_heads, feature_dim))
        self.bias = nn.Parameter(torch.full((num_heads,), init_bias / bias_scale))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(features.size(1), device=features.device)
        heads = steps.clamp(max=self.weight.size(0) - 1)
        weight = self.weight[heads].to(features.dtype)
        bias = self.bias_scale * self.bias[heads].to(features.dtype)
        return (features.detach() * weight).sum(-1) + bias


def leave_one_out_baseline(rewards: torch.Tensor, samples_per_source: int) -> torch.Tensor:
    """For each of K samples of a source, the mean reward of the other K - 1 (Kool et al.).

    `rewards` [B * K] holds the K samples of a source next to each other; returns [B * K].
    The baseline of a sample never depends on that sample, so the gradient stays unbiased.
    """
    k = samples_per_source
    if k < 2:
        raise ValueError(f"a leave-one-out baseline needs at least 2 samples per source (got {k})")
    if rewards.numel() % k:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {k}")
    grouped = rewards.view(-1, k)
    return ((grouped.sum(1, keepdim=True) - grouped) / (k - 1)).view(-1)


def sentence_baseline(values: torch.Tensor, width: int) -> torch.Tensor:
    """A per-sentence baseline [B] used at every one of `width` positions: [B, width]."""
    return values.unsqueeze(1).expand(-1, width)
