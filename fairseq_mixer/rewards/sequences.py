"""Turning reward inputs (id lists or padded tensors) into padded tensors with lengths."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: A batch of token sequences: a 2-D integer tensor [B, L], a sequence of 1-D tensors, or a
#: sequence of token-id sequences.
TokenBatch = Tensor | Sequence[Tensor] | Sequence[Sequence[int]]

#: First sampled position of each hypothesis: None (0), an int, ints, or a tensor [B] / [].
StartSpec = None | int | Sequence[int] | Tensor


class Sequences(NamedTuple):
    """A padded batch: ``tokens`` [B, L] (long, ``pad`` at and after each length) and
    ``lengths`` [B] (long), where L is one more than the longest length in the batch, so
    that every row ends with ``pad``."""

    tokens: Tensor
    lengths: Tensor

    def valid(self) -> Tensor:
        """Boolean mask [B, L] of the positions inside each sequence."""
        positions = torch.arange(self.tokens.size(1), device=self.tokens.device)
        return positions[None, :] < self.lengths[:, None]


def batch_device(*batches: TokenBatch) -> torch.device:
    """The device of the first tensor found among the inputs, else the CPU."""
    for batch in batches:
        if isinstance(batch, Tensor):
            return batch.device
        if len(batch) > 0 and isinstance(batch[0], Tensor):
            return batch[0].device
    return torch.device("cpu")


def _stack_lists(seqs: Sequence[Sequence[int]], pad: int, device: torch.device) -> Tensor:
    """Right-pads id lists into one [B, L + 1] tensor (L the longest list) with a single copy
    of the flattened ids."""
    lengths = torch.tensor([len(seq) for seq in seqs], dtype=torch.long)
    flat = torch.tensor([tok for seq in seqs for tok in seq], dtype=torch.long)
    width = int(lengths.max()) + 1 if len(seqs) > 0 else 0
    tokens = torch.full((len(seqs), width), pad, dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(len(seqs)), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    cols = torch.arange(flat.numel()) - torch.repeat_interleave(offsets, lengths)
    tokens[rows, cols] = flat
    return tokens.to(device)


def token_matrix(batch: TokenBatch, pad: int, device: torch.device) -> Tensor:
    """[B, L] long token ids on ``device``: a 2-D integer tensor as it is, sequences of ids
    right-padded with ``pad``. Nothing is cut yet: see :func:`to_padded`."""
    if isinstance(batch, Tensor):
        if batch.dim() != 2:
            raise ValueError(
                f"expected a 2-D [batch, length] tensor, got shape {tuple(batch.shape)}"
            )
        if batch.dtype.is_floating_point or batch.dtype == torch.bool or batch.is_complex():
            raise ValueError(f"expected an integer tensor of token ids, got {batch.dtype}")
        return batch.to(device=device, dtype=torch.long)
    if len(batch) > 0 and all(isinstance(seq, Tensor) for seq in batch):
        if any(seq.dim() != 1 for seq in batch):
            raise ValueError("a sequence of tensors must hold 1-D tensors of token ids")
        return torch.nn.utils.rnn.pad_sequence(
            [seq.to(device=device, dtype=torch.long) for seq in batch],
            batch_first=True,
            padding_value=pad,
        )
    return _stack_lists(batch, pad, device)


def to_padded(tokens: Tensor, pad: int, eos: int) -> Sequences:
    """Cuts every row of a :func:`token_matrix` before its first ``eos`` or ``pad``.

    Whatever follows the first ``eos``/``pad`` of a sequence (more tokens, padding) is ignored,
    so model samples that keep going after EOS can be passed as they are. The result has one
    column of padding after the longest sequence.
    """
    outside = ((tokens == eos) | (tokens == pad)).cumsum(dim=1) > 0
    lengths = tokens.size(1) - outside.sum(dim=1)
    tokens = tokens.masked_fill(outside, pad)
    width = int(lengths.max()) + 1 if lengths.numel() > 0 else 1
    if width > tokens.size(1):
        return Sequences(F.pad(tokens, (0, width - tokens.size(1)), value=pad), lengths)
    return Sequences(tokens[:, :width], lengths)


def token_matrices(hyps: TokenBatch, refs: TokenBatch, pad: int) -> tuple[Tensor, Tensor]:
    """The :func:`token_matrix` of hypotheses and references, on one device (that of the
    first tensor input), checked to hold the same number of sentences."""
    device = batch_device(hyps, refs)
    hyp = token_matrix(hyps, pad, device)
    ref = token_matrix(refs, pad, device)
    if hyp.size(0) != ref.size(0):
        raise ValueError(
            f"batch size mismatch: {hyp.size(0)} hypotheses but {ref.size(0)} references"
        )
    return hyp, ref


def to_padded_pair(
    hyps: TokenBatch, refs: TokenBatch, pad: int, eos: int
) -> tuple[Sequences, Sequences]:
    """Pads hypotheses and references onto one device (that of the first tensor input)."""
    hyp, ref = token_matrices(hyps, refs, pad)
    return to_padded(hyp, pad, eos), to_padded(ref, pad, eos)


def to_start(start: StartSpec, batch_size: int, device: torch.device) -> Tensor:
    """Turns a ``start`` argument into a long tensor [B] of non-negative positions."""
    if start is None:
        return torch.zeros(batch_size, dtype=torch.long, device=device)
    if isinstance(start, Tensor):
        if start.dtype.is_floating_point or start.dtype == torch.bool or start.is_complex():
            raise ValueError(f"start must hold integer positions, got {start.dtype}")
        result = start.to(device=device, dtype=torch.long)
    elif isinstance(start, numbers.Integral):
        result = torch.full((batch_size,), int(start), dtype=torch.long, device=device)
    else:
        result = torch.tensor(list(start), dtype=torch.long, device=device)
    if result.dim() == 0:
        result = result.expand(batch_size)
    if result.shape != (batch_size,):
        raise ValueError(
            f"start must be an int or have shape [{batch_size}], got {tuple(result.shape)}"
        )
    if batch_size > 0 and bool((result < 0).any()):
        raise ValueError("start positions must be non-negative")
    return result
