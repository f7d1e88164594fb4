"""Clipped n-gram counts on the CPU, compiled with numba: one pass per sentence pair.

On a CPU a batch of rewards costs what its tensor operations cost to launch: the sort-based
:func:`.ngrams.clipped_counts` takes a few dozen of them whatever the batch, and sorting and
counting its keys cost more than the arithmetic of a few hundred short sentences. Compiled,
the same counts take one pass over each sentence pair (docs/performance.md has the figures).

For each pair of positions (i in the hypothesis, j in the reference or in the hypothesis
itself) the kernel tabulates the length of the common suffix ending at both (the "run"): an
n-gram ending at i occurs ending at j exactly when the run is at least n. A row of each table
then gives, for every order at once, the count of each n-gram ending at i in both sentences,
and whether i is its first occurrence.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import torch
from torch import Tensor

from .sequences import Sequences

# numba logs every compilation pass at DEBUG, which fairseq's root logger would print.
logging.getLogger("numba").setLevel(logging.WARNING)


@numba.njit(cache=True, nogil=True)
def _runs(left, left_len, right, right_len, right_blocked, runs):  # pragma: no cover - compiled
    """runs[i, j] = length of the common suffix of left[:i + 1] and right[:j + 1]; a blocked
    right token matches nothing."""
    for i in range(left_len):
        for j in range(right_len):
            if left[i] == right[j] and not right_blocked[j]:
                runs[i, j] = runs[i - 1, j - 1] + 1 if i > 0 and j > 0 else 1
            else:
                runs[i, j] = 0


@numba.njit(cache=True, nogil=True)
def _clipped_counts_kernel(
    hyp, hyp_lengths, ref, ref_lengths, ref_blocked, cut, min_order, max_order, out
):  # pragma: no cover - compiled
    no_block = np.zeros(hyp.shape[1], dtype=np.bool_)
    hyp_runs = np.zeros((hyp.shape[1], hyp.shape[1]), dtype=np.int64)
    ref_runs = np.zeros((hyp.shape[1], ref.shape[1]), dtype=np.int64)
    # how many positions share a suffix of exactly n (n = max_order: at least) with position i
    hyp_shared = np.zeros(max_order + 1, dtype=np.int64)
    ref_shared = np.zeros(max_order + 1, dtype=np.int64)
    for b in range(hyp.shape[0]):
        hyp_len, ref_len, first = hyp_lengths[b], ref_lengths[b], cut[b]
        _runs(hyp[b], hyp_len, hyp[b], hyp_len, no_block, hyp_runs)
        _runs(hyp[b], hyp_len, ref[b], ref_len, ref_blocked[b], ref_runs)
        for i in range(first, hyp_len):
            hyp_shared[:] = 0
            ref_shared[:] = 0
            for j in range(first, ref_len):
                if ref_runs[i, j] > 0:
                    ref_shared[min(ref_runs[i, j], max_order)] += 1
            seen = 0  # the n-grams ending at i of orders up to `seen` occurred before i
            for j in range(first, hyp_len):
                if hyp_runs[i, j] > 0:
                    shared = min(hyp_runs[i, j], max_order)
                    hyp_shared[shared] += 1
                    if j < i and shared > seen:
                        seen = shared
            in_hyp = 0
            in_ref = 0
            for n in range(max_order, 0, -1):
                in_hyp += hyp_shared[n]
                in_ref += ref_shared[n]
                if n >= min_order and n <= i + 1 and n > seen:
                    out[b, n - min_order] += min(in_hyp, in_ref)


def compiled_clipped_counts(
    hyp: Sequences,
    ref: Sequences,
    max_order: int,
    ref_blocked: Tensor | None = None,
    cut: Tensor | None = None,
    min_order: int = 1,
) -> Tensor:
    """[B, N] long: the clipped matches of :func:`.ngrams.clipped_matches` for the N orders
    ``min_order..max_order``; CPU tensors only.

    Only n-grams that end at or after position ``cut`` [B] (0-indexed) count, in both the
    hypothesis and the reference; reference positions in ``ref_blocked`` [B, Lr] match nothing.
    """
    batch = hyp.tokens.size(0)
    blocked = torch.zeros_like(ref.tokens, dtype=torch.bool) if ref_blocked is None else ref_blocked
    first = torch.zeros(batch, dtype=torch.long) if cut is None else cut
    out = np.zeros((batch, max_order - min_order + 1), dtype=np.int64)
    arrays = (hyp.tokens, hyp.lengths, ref.tokens, ref.lengths, blocked, first)
    _clipped_counts_kernel(*(t.contiguous().numpy() for t in arrays), min_order, max_order, out)
    return torch.from_numpy(out)
