"""MIXER's learned baseline (spec section 4)."""

from __future__ import annotations

import torch
from torch import nn


class StepBaseline(nn.Module):
    """b_t = w_t . h_t + c_t on the detached decoder feature h_t.

    One linear regressor per time step (steps past the last head share it), or a single
    shared one. Weights start at 0 and biases at 0.01, as in the release. The feature is
    detached, so the baseline's loss never reaches the network.
    """

    def __init__(self, feature_dim: int, num_heads: int, init_bias: float = 0.01):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"the baseline needs at least one head (got {num_heads})")
        self.weight = nn.Parameter(torch.zeros(num_heads, feature_dim))
        self.bias = nn.Parameter(torch.full((num_heads,), init_bias))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(features.size(1), device=features.device)
        heads = steps.clamp(max=self.weight.size(0) - 1)
        weight = self.weight[heads].to(features.dtype)
        return (features.detach() * weight).sum(-1) + self.bias[heads].to(features.dtype)
