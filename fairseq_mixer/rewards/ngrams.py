"""Batched, exact n-gram statistics and LCS lengths.

Clipped n-gram counts come from :func:`clipped_counts`, which sorts integer keys of token
windows (a few dozen tensor operations whatever the batch size or the order), or, when those
keys cannot be exact, from :func:`clipped_matches`. The latter and :func:`lcs_length` work on
boolean "unigram equality" tensors that already fold in the validity of each position (and the
reference <unk> rule), so n-gram equalities built from them are automatically false for n-grams
that run past a sequence's end.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .sequences import Sequences

_INT64_MIN = torch.iinfo(torch.int64).min


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


# --- clipped counts from sorted window keys -------------------------------------------------


def pair_layout(
    hyp: Sequences,
    ref: Sequences,
    max_order: int,
    pad: int,
    eos: int,
    ref_blocked: Tensor | None = None,
) -> Tensor:
    """[B, (N - 1) + Lh + Lr] long: each row is ``pad * (N - 1) | hyp | ref`` with the last
    hypothesis column (always padding, see :func:`.to_padded`) set to ``eos`` and the
    reference's padding (and the positions in ``ref_blocked``) set to ``eos``.

    The n-grams of a row are read backwards from their last token. Neither pad nor eos occurs
    inside a sequence, so an n-gram that leaves its hypothesis holds pad and never eos, and one
    that leaves its reference holds eos (the column between the two sides included): none of
    them equals an n-gram of the other side.
    """
    outside = ref.tokens == pad
    if ref_blocked is not None:
        outside = outside | ref_blocked
    lead = hyp.tokens.new_full((hyp.tokens.size(0), max_order - 1), pad)
    layout = torch.cat([lead, hyp.tokens, ref.tokens.masked_fill(outside, eos)], dim=1)
    layout[:, max_order - 2 + hyp.tokens.size(1)] = eos
    return layout


def row_ranks(tokens: Tensor) -> Tensor:
    """[B, L] long: the rank of each token among the distinct values of its row."""
    values, order = tokens.sort(dim=1)
    ranks = F.pad(values[:, 1:] != values[:, :-1], (1, 0)).cumsum(dim=1)
    return ranks.scatter(1, order, ranks)


def window_digits(tokens: Tensor, max_order: int) -> tuple[Tensor, int] | None:
    """Non-negative ids with the token equalities of each row, and their bit width.

    ``max_order`` ids of that width (at least 2 bits, so that no prefix test of
    :func:`prefix_runs` needs a limit of ``2**63``) must fit in 64 bits. On the CPU the ids are
    the tokens themselves where they fit (reading their range costs no device sync there);
    otherwise they are :func:`row_ranks`. None when even ranks do not fit.
    """
    if tokens.device.type == "cpu":
        low, high = torch.aminmax(tokens)
        bits = max(int(high).bit_length(), 2)
        if int(low) >= 0 and bits * max_order <= 64:
            return tokens, bits
    bits = max((tokens.size(1) - 1).bit_length(), 2)
    if bits * max_order > 64:
        return None
    return row_ranks(tokens), bits


def window_keys(digits: Tensor, bits: int, max_order: int) -> Tensor:
    """[B, L - N + 1] int64: for each column i >= N - 1 of ``digits`` [B, L], the digits
    i, i - 1, .., i - N + 1 read in base ``2**bits``.

    The first digit is shifted down by ``2**(bits - 1)`` so that keys of
    ``bits * max_order <= 64`` bits fit in int64; sorting the keys still sorts them
    lexicographically, so keys with the same first n digits sort together.
    """
    width = digits.size(1) - (max_order - 1)
    keys = digits[:, max_order - 1 :] - (1 << (bits - 1))
    for back in range(1, max_order):
        start = max_order - 1 - back
        keys = torch.add(digits[:, start : start + width], keys, alpha=1 << bits)
    return keys


@functools.lru_cache(maxsize=64)
def _prefix_limits(bits: int, max_order: int, orders: range, device: torch.device) -> Tensor:
    """[N, 1, 1] int64: ``2**(bits * (max_order - n)) - 2**63`` for each n in ``orders``
    (cached: built once per device, with no host-to-device copy per call)."""
    limits = [[[(1 << (bits * (max_order - n))) + _INT64_MIN]] for n in orders]
    return torch.tensor(limits, dtype=torch.long, device=device)


def prefix_runs(
    sorted_keys: Tensor, bits: int, max_order: int, orders: range, dtype: torch.dtype
) -> Tensor:
    """[N, B, L] (``dtype``): for each n in ``orders``, ids of the runs of equal n-digit
    prefixes along each sorted row of ``max_order``-digit keys. Row (n, b) uses the ids
    ``1 + (n * B + b) * L + [0, L)``, so ids are unique over all rows and never 0.

    Neighbouring keys share their first n digits iff their XOR, read as an unsigned number, is
    below ``2**(bits * (max_order - n))``; flipping the sign bit of both sides turns that into
    a signed comparison.
    """
    batch, width = sorted_keys.shape
    differ = torch.empty_like(sorted_keys)
    torch.bitwise_xor(sorted_keys[:, 1:], sorted_keys[:, :-1], out=differ[:, 1:])
    differ[:, 0] = 0
    differ.bitwise_xor_(_INT64_MIN)
    limits = _prefix_limits(bits, max_order, orders, differ.device)
    starts = torch.empty(len(orders), batch, width, dtype=dtype, device=differ.device)
    torch.ge(differ, limits, out=starts)
    stop = 1 + len(orders) * batch * width
    first_ids = torch.arange(1, stop, width, dtype=dtype, device=differ.device)
    starts[:, :, 0] += first_ids.view(len(orders), batch)
    return starts.cumsum_(dim=2)


def _bincount(index: Tensor, size: int) -> Tensor:
    """``torch.bincount`` with ``size`` bins, without the host sync it makes off the CPU."""
    if index.device.type == "cpu":
        return torch.bincount(index, minlength=size)
    counts = torch.zeros(size, dtype=torch.long, device=index.device)
    return counts.index_add_(0, index, torch.ones_like(index, dtype=torch.long))


def clipped_counts(
    hyp: Sequences,
    ref: Sequences,
    max_order: int,
    pad: int,
    eos: int,
    ref_blocked: Tensor | None = None,
    cut: Tensor | None = None,
    min_order: int = 1,
) -> Tensor | None:
    """[B, N] long: the clipped matches of :func:`clipped_matches` for the N orders
    ``min_order..max_order``, or None if keys cannot fit.

    ``hyp`` and ``ref`` come from :func:`.to_padded` and ``pad != eos``. Each column of a
    :func:`pair_layout` row stands for the n-grams that end there, one per order. Sorting their
    keys brings equal n-grams of both sides together, for every n at once; one bincount over
    (side, n, row, run) then gives ``sum min(count in hyp, count in ref)``. N-grams that leave
    their sequence only ever meet n-grams of their own side, which adds nothing; those ending
    before ``cut`` go to bin 0, which is dropped. Bin indices are int32 where they fit:
    [N, B, L] int64 tensors outgrow a core's cache.
    """
    layout = pair_layout(hyp, ref, max_order, pad, eos, ref_blocked)
    found = window_digits(layout, max_order)
    if found is None:
        return None
    digits, bits = found
    keys, column = window_keys(digits, bits, max_order).sort(dim=1)
    orders = range(min_order, max_order + 1)
    batch, width = keys.shape
    bins = len(orders) * batch * width
    dtype = torch.int32 if 2 * bins < torch.iinfo(torch.int32).max else torch.long
    index = prefix_runs(keys, bits, max_order, orders, dtype)
    hyp_width = hyp.tokens.size(1)
    ref_side = column >= hyp_width - 1
    side_offset = ref_side.to(dtype).mul_(bins)
    if cut is None:
        index += side_offset
    else:
        kept = (torch.add(column, ref_side, alpha=-hyp_width) >= cut[:, None]).to(dtype)
        index = torch.addcmul(side_offset.mul_(kept), index, kept)
    counts = _bincount(index.view(-1), 2 * bins + 1)[1:].view(2, len(orders), batch, width)
    return torch.minimum(counts[0], counts[1], out=counts[0]).sum(dim=2).t()
