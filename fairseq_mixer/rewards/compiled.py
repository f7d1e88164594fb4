"""The rewards on the CPU, compiled with numba: one pass over each sentence pair.

On a CPU a batch of rewards costs what its tensor operations cost to launch, not their
arithmetic: the tensor path (padding, n-gram counts, the score) takes dozens of them whatever
the batch. Here each reward is one compiled call over the batch
that reads a sentence's length, counts its n-grams and combines them into the score, one
sentence at a time. The formulas are those of the tensor rewards in :mod:`.bleu` and
:mod:`.rouge` (their docstrings give the rules), written per sentence; the tests hold both
paths to the same references (sacrebleu, rouge-score, the release's BLEU) and
docs/performance.md has the figures.

Clipped n-gram counts come from common-suffix lengths (the "runs"): for a hypothesis position
i and a position j of the reference (or of the hypothesis itself), the n-gram ending at i
occurs ending at j exactly when the run of (i, j) is at least n. One row of runs per i,
computed from the row of i - 1, gives every order at once.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np

# numba logs every compilation pass at DEBUG, which fairseq's root logger would print.
logging.getLogger("numba").setLevel(logging.WARNING)

#: Codes of sacrebleu's smoothing methods and of the ROUGE measures in the compiled code.
SMOOTH_CODES = {"none": 0, "floor": 1, "add-k": 2, "exp": 3}
MEASURE_CODES = {"fmeasure": 0, "recall": 1, "precision": 2}
_FLOOR, _ADD_K, _EXP = SMOOTH_CODES["floor"], SMOOTH_CODES["add-k"], SMOOTH_CODES["exp"]
_RECALL, _PRECISION = MEASURE_CODES["recall"], MEASURE_CODES["precision"]


@numba.njit(cache=True, nogil=True, inline="always")
def sentence_length(row, pad, eos):  # pragma: no cover - compiled
    """The position of the first ``pad`` or ``eos`` in ``row`` (its length without one)."""
    for i in range(row.shape[0]):
        if row[i] == pad or row[i] == eos:
            return i
    return row.shape[0]


@numba.njit(cache=True, nogil=True, inline="always")
def _next_runs(token, other, other_len, previous, runs):  # pragma: no cover - compiled
    """runs[j + 1] = the run of the current position and ``other[j]``, from ``previous``, the
    runs of the position before (index 0 of both stays 0)."""
    for j in range(other_len):
        runs[j + 1] = (previous[j] + 1) * (other[j] == token)


@numba.njit(cache=True, nogil=True, inline="always")
def _at_least(runs, first, length, order):  # pragma: no cover - compiled
    """How many positions j in [first, length) have a run of at least ``order``."""
    count = 0
    for j in range(first, length):
        count += runs[j + 1] >= order
    return count


@numba.njit(cache=True, nogil=True, inline="always")
def clipped_matches_of_pair(
    hyp, hyp_len, ref, ref_len, unk, block_unk, first, min_order, out, hyp_runs, ref_runs
):  # pragma: no cover - compiled
    """Adds to ``out[n - min_order]`` the clipped matches of the hypothesis n-grams, for the
    orders n = min_order .. min_order + len(out) - 1.

    Only n-grams that end at or after position ``first`` count, in both sentences; with
    ``block_unk`` a reference ``unk`` matches nothing. ``hyp_runs`` [2, >= hyp_len + 1] and
    ``ref_runs`` [2, >= ref_len + 1] are scratch rows.
    """
    max_order = min_order + out.shape[0] - 1
    hyp_runs[1, : hyp_len + 1] = 0
    ref_runs[1, : ref_len + 1] = 0
    for i in range(hyp_len):
        now, before = i % 2, 1 - i % 2
        token = hyp[i]
        _next_runs(token, hyp, hyp_len, hyp_runs[before], hyp_runs[now])
        if block_unk and token == unk:
            ref_runs[now, : ref_len + 1] = 0
        else:
            _next_runs(token, ref, ref_len, ref_runs[before], ref_runs[now])
        if i < first:
            continue
        # The n-grams ending at i of orders up to `seen` occurred before i: their counts were
        # added at their first occurrence.
        seen = 0
        for j in range(first, i):
            seen = max(seen, hyp_runs[now, j + 1])
        for order in range(max(min_order, seen + 1), min(max_order, i + 1) + 1):
            in_ref = _at_least(ref_runs[now], first, ref_len, order)
            if in_ref == 0:  # nor any longer n-gram ending at i
                break
            in_hyp = _at_least(hyp_runs[now], first, hyp_len, order)
            out[order - min_order] += min(in_hyp, in_ref)


@numba.njit(cache=True, nogil=True, inline="always")
def _lcs_of_pair(hyp, hyp_len, ref, ref_len, unk, block_unk, row):  # pragma: no cover - compiled
    """Longest common subsequence length; ``row`` [>= ref_len + 1] is scratch."""
    row[: ref_len + 1] = 0
    for i in range(hyp_len):
        diagonal = 0
        for j in range(ref_len):
            above = row[j + 1]
            if hyp[i] == ref[j] and not (block_unk and ref[j] == unk):
                row[j + 1] = diagonal + 1
            else:
                row[j + 1] = max(above, row[j])
            diagonal = above
    return row[ref_len]


@numba.njit(cache=True, nogil=True, inline="always")
def _mixer_bleu(matches, hyp_len, ref_len, first):  # pragma: no cover - compiled
    order = min(min(hyp_len, ref_len) - first, matches.shape[0])
    if order <= 0:
        return 0.0
    log_sum = 0.0
    for step in range(order):  # step = n - 1
        hyp_grams = max(hyp_len - max(step, first), 0)
        log_sum += math.log((matches[step] + 1) / (hyp_grams + 1))
    brevity = math.exp(1 - (ref_len + 1) / hyp_len) if hyp_len < ref_len else 1.0
    return brevity * math.exp(log_sum / order)


@numba.njit(cache=True, nogil=True, inline="always")
def _sentence_bleu(matches, hyp_len, ref_len, smooth, value):  # pragma: no cover - compiled
    if matches.sum() == 0:
        return 0.0
    smooth_mteval = 1.0  # sacrebleu's name: doubles at each order without a match
    log_sum = 0.0
    used = matches.shape[0]
    for step in range(matches.shape[0]):
        extra = value if smooth == _ADD_K and step > 0 else 0.0
        total = max(hyp_len - step, 0) + extra
        if total == 0:
            break
        used = step + 1
        correct = matches[step] + extra
        if correct > 0:
            precision = correct / total
        elif smooth == _EXP:
            smooth_mteval *= 2
            precision = 1 / (smooth_mteval * total)
        elif smooth == _FLOOR:
            precision = value / total
        else:
            precision = 0.0
        if precision <= 0:
            return 0.0
        log_sum += math.log(precision)
    brevity = math.exp(1 - ref_len / hyp_len) if hyp_len < ref_len else 1.0
    return brevity * math.exp(log_sum / used)


@numba.njit(cache=True, nogil=True, inline="always")
def _rouge(overlap, hyp_units, ref_units, measure):  # pragma: no cover - compiled
    precision = overlap / hyp_units
    recall = overlap / ref_units
    if measure == _PRECISION:
        return precision
    if measure == _RECALL:
        return recall
    if precision + recall <= 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@numba.njit(cache=True, nogil=True)
def mixer_bleu_scores(
    hyp, ref, pad, eos, unk, block_unk, first, out
):  # pragma: no cover - compiled
    """out[b] = the release's BLEU of row b of ``hyp`` [B, Lh] against ``ref`` [B, Lr], from
    position ``first[b]`` on."""
    hyp_runs = np.zeros((2, hyp.shape[1] + 1), dtype=np.int64)
    ref_runs = np.zeros((2, ref.shape[1] + 1), dtype=np.int64)
    matches = np.zeros(4, dtype=np.int64)
    for b in range(hyp.shape[0]):
        hyp_len, ref_len = sentence_length(hyp[b], pad, eos), sentence_length(ref[b], pad, eos)
        matches[:] = 0
        clipped_matches_of_pair(
            hyp[b],
            hyp_len,
            ref[b],
            ref_len,
            unk,
            block_unk,
            first[b],
            1,
            matches,
            hyp_runs,
            ref_runs,
        )
        out[b] = _mixer_bleu(matches, hyp_len, ref_len, first[b])


@numba.njit(cache=True, nogil=True)
def sentence_bleu_scores(
    hyp, ref, pad, eos, unk, block_unk, max_order, smooth, value, out
):  # pragma: no cover - compiled
    """out[b] = sacrebleu's sentence BLEU / 100 of row b of ``hyp`` against ``ref``."""
    hyp_runs = np.zeros((2, hyp.shape[1] + 1), dtype=np.int64)
    ref_runs = np.zeros((2, ref.shape[1] + 1), dtype=np.int64)
    matches = np.zeros(max_order, dtype=np.int64)
    for b in range(hyp.shape[0]):
        hyp_len, ref_len = sentence_length(hyp[b], pad, eos), sentence_length(ref[b], pad, eos)
        matches[:] = 0
        clipped_matches_of_pair(
            hyp[b], hyp_len, ref[b], ref_len, unk, block_unk, 0, 1, matches, hyp_runs, ref_runs
        )
        out[b] = _sentence_bleu(matches, hyp_len, ref_len, smooth, value)


@numba.njit(cache=True, nogil=True)
def rouge2_scores(hyp, ref, pad, eos, unk, block_unk, measure, out):  # pragma: no cover - compiled
    """out[b] = ROUGE-2 (``measure``) of row b of ``hyp`` against ``ref``."""
    hyp_runs = np.zeros((2, hyp.shape[1] + 1), dtype=np.int64)
    ref_runs = np.zeros((2, ref.shape[1] + 1), dtype=np.int64)
    overlap = np.zeros(1, dtype=np.int64)
    for b in range(hyp.shape[0]):
        hyp_len, ref_len = sentence_length(hyp[b], pad, eos), sentence_length(ref[b], pad, eos)
        overlap[0] = 0
        clipped_matches_of_pair(
            hyp[b], hyp_len, ref[b], ref_len, unk, block_unk, 0, 2, overlap, hyp_runs, ref_runs
        )
        out[b] = _rouge(overlap[0], max(hyp_len - 1, 1), max(ref_len - 1, 1), measure)


@numba.njit(cache=True, nogil=True)
def rouge_l_scores(hyp, ref, pad, eos, unk, block_unk, measure, out):  # pragma: no cover - compiled
    """out[b] = ROUGE-L (``measure``) of row b of ``hyp`` against ``ref``."""
    row = np.zeros(ref.shape[1] + 1, dtype=np.int64)
    for b in range(hyp.shape[0]):
        hyp_len, ref_len = sentence_length(hyp[b], pad, eos), sentence_length(ref[b], pad, eos)
        lcs = _lcs_of_pair(hyp[b], hyp_len, ref[b], ref_len, unk, block_unk, row)
        out[b] = _rouge(lcs, max(hyp_len, 1), max(ref_len, 1), measure)
