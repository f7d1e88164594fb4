"""The tokens of a padded batch as flat positions, and back (fairseq_mixer/rollout/positions.py)."""

import torch

from fairseq_mixer.rollout.positions import (
    at_positions,
    padded_from_rows,
    rows_of_positions,
    token_positions,
)

PAD = 1
TOKENS = torch.tensor([[5, 6, 7], [8, PAD, PAD], [9, 4, PAD]])


def padded(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    return padded_from_rows(values, rows_of_positions(where, *TOKENS.shape), *TOKENS.shape)


def test_padded_from_rows_puts_the_tokens_back_with_zeros_at_the_padding():
    where = token_positions(TOKENS, PAD)
    values = torch.randn(where.numel(), 4, requires_grad=True)
    full = padded(values, where)
    assert full.shape == (3, 3, 4)
    assert torch.equal(at_positions(full, where), values)
    assert torch.equal(full[TOKENS.eq(PAD)], torch.zeros(3, 4))
    weights = torch.randn(3, 3, 4)
    (full * weights).sum().backward()
    assert torch.equal(values.grad, at_positions(weights, where))


def test_padded_from_rows_keeps_only_its_index_for_the_backward():
    """Not the values (index_copy into zeros would keep them): the packed transformer pass
    scatters every layer's queries, keys and values."""
    where = token_positions(TOKENS, PAD)
    values = torch.randn(where.numel(), 4, requires_grad=True) * 2.0
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        padded(values, where)
    assert kept
    assert not any(tensor.is_floating_point() for tensor in kept)
