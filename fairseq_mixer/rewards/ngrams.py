"""Batched, exact n-gram statistics and LCS lengths from token-equality tensors.

Everything here works on boolean "unigram equality" tensors that already fold in the validity
of each position (and the reference <unk> rule), so n-gram equalities built from them are
automatically false for n-grams that run past a sequence's end.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sequences import Sequences


def token_equality(hyp: Sequences, ref: Sequences, ref_blocked: Tensor | None = None) -> Tensor:
    """[B, Lh, Lr] bool: hyp token i equals ref token j, both inside their sequences.

    ``ref_blocked`` [B, Lr] marks reference positions that match nothing (<unk>).
    """
    ref_ok = ref.valid()
    if ref_blocked is not None:
        ref_ok = ref_ok & ~ref_blocked
    same = hyp.tokens[:, :, None] == ref.tokens[:, None, :]
    return same & hyp.valid()[:, :, None] & ref_ok[:, None, :]


def _ends_at_or_after(cut: Tensor, order: int, width: int, device: torch.device) -> Tensor:
    """[B, width] bool: the ``order``-gram starting at i ends at or after position ``cut``."""
    positions = torch.arange(width, device=device)
    return positions[None, :] + (order - 1) >= cut[:, None]


def clipped_matches(
    hyp_ref: Tensor, hyp_hyp: Tensor, max_order: int, cut: Tensor | None = None
) -> Tensor:
    """[B, max_order] long: clipped n-gram matches for n = 1..max_order.

    ``hyp_ref`` is :func:`token_equality` (hyp, ref) and ``hyp_hyp`` is (hyp, hyp) without
    blocking. For each distinct hypothesis n-gram (taken at its first occurrence), adds
    ``min(count in hyp, count in ref)``. With ``cut`` [B], only n-grams that end at or after
    position ``cut`` (0-indexed) are counted, in both the hypothesis and the reference.
    """
    batch, hyp_width, ref_width = hyp_ref.shape
    device = hyp_ref.device
    out = torch.zeros(batch, max_order, dtype=torch.long, device=device)
    eq_hr, eq_hh = hyp_ref, hyp_hyp
    for order in range(1, max_order + 1):
        if order > 1:
            shift = order - 1
            eq_hr = eq_hr[:, :-1, :-1] & hyp_ref[:, shift:, shift:]
            eq_hh = eq_hh[:, :-1, :-1] & hyp_hyp[:, shift:, shift:]
        width_h = max(hyp_width - order + 1, 0)
        width_r = max(ref_width - order + 1, 0)
        if width_h == 0 or width_r == 0:
            break
        hr, hh = eq_hr, eq_hh
        if cut is not None:
            keep_h = _ends_at_or_after(cut, order, width_h, device)
            keep_r = _ends_at_or_after(cut, order, width_r, device)
            # Masking the counted axis is enough: positions i outside the cut are dropped
            # below because the diagonal of `hh` (presence) becomes false there.
            hr = hr & keep_r[:, None, :]
            hh = hh & keep_h[:, None, :]
        in_ref = hr.sum(dim=2)
        in_hyp = hh.sum(dim=2)
        # An n-gram is present at i iff it equals itself; it is a first occurrence when no
        # earlier present position holds the same n-gram.
        present = torch.diagonal(hh, dim1=1, dim2=2)
        earlier = torch.ones(width_h, width_h, dtype=torch.bool, device=device).tril(-1)
        first = present & ~(hh & earlier).any(dim=2)
        out[:, order - 1] = (torch.minimum(in_hyp, in_ref) * first).sum(dim=1)
    return out


def lcs_length(hyp_ref: Tensor) -> Tensor:
    """[B] long: longest common subsequence length, looping over hypothesis positions only.

    Row recurrence: ``c[j] = max(match[i, j] ? prev[j - 1] + 1 : 0, prev[j])`` followed by a
    running maximum along j, which gives the usual ``max(left, up, diagonal + 1)`` table.
    Positions outside a sequence never match, so they leave the table unchanged.
    """
    batch, hyp_width, ref_width = hyp_ref.shape
    prev = torch.zeros(batch, ref_width + 1, dtype=torch.long, device=hyp_ref.device)
    for i in range(hyp_width):
        diagonal = torch.where(hyp_ref[:, i, :], prev[:, :-1] + 1, 0)
        row = torch.maximum(diagonal, prev[:, 1:])
        prev = torch.cat([prev[:, :1], torch.cummax(row, dim=1).values], dim=1)
    return prev[:, -1]
