"""The tokens of a right-padded [B, L] batch as one flat index, to compute on them only."""

from __future__ import annotations

import torch


def token_positions(tokens: torch.Tensor, pad: int) -> torch.Tensor:
    """Flat indices [N] into [B, L] of the positions of `tokens` that are not `pad`."""
    return tokens.ne(pad).reshape(-1).nonzero().squeeze(1)


def at_positions(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The rows [N, ...] of `values` [B, L, ...] at the flat positions `where`."""
    return values.reshape((-1,) + values.shape[2:]).index_select(0, where)


def rows_of_positions(where: torch.Tensor, batch: int, width: int) -> torch.Tensor:
    """[B * L]: the row among the N tokens at `where` of each position of [B, L], or N where
    no token is (the zero row of `padded_from_rows`)."""
    count = where.numel()
    rows = torch.full((batch * width,), count, dtype=torch.long, device=where.device)
    return rows.index_copy_(0, where, torch.arange(count, device=where.device))


def padded_from_rows(
    values: torch.Tensor, rows: torch.Tensor, batch: int, width: int
) -> torch.Tensor:
    """[B, L, ...] holding `values` [N, ...] where `rows` (`rows_of_positions`) names a token,
    zeros elsewhere.

    Every position reads its row of `values`, or a zero row appended to them: the backward of
    a read keeps only the index, where `index_copy` into zeros would keep `values` as well.
    """
    zero_row = values.new_zeros((1,) + values.shape[1:])
    read = torch.cat([values, zero_row]).index_select(0, rows)
    return read.view((batch, width) + values.shape[1:])
