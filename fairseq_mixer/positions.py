"""The tokens of a right-padded [B, L] batch as one flat index, to compute on them only."""

from __future__ import annotations

import torch


def token_positions(tokens: torch.Tensor, pad: int) -> torch.Tensor:
    """Flat indices [N] into [B, L] of the positions of `tokens` that are not `pad`."""
    return tokens.ne(pad).reshape(-1).nonzero().squeeze(1)


def at_positions(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The rows [N, ...] of `values` [B, L, ...] at the flat positions `where`."""
    return values.reshape((-1,) + values.shape[2:]).index_select(0, where)


def scattered(values: torch.Tensor, where: torch.Tensor, batch: int, width: int) -> torch.Tensor:
    """[B, L, ...] holding `values` [N, ...] at the flat positions `where`, zeros elsewhere."""
    zeros = values.new_zeros((batch * width,) + values.shape[1:])
    return zeros.index_copy(0, where, values).view((batch, width) + values.shape[1:])
