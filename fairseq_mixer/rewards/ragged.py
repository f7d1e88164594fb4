"""Compiled scores of ragged batches: sentence i is ``ids[starts[i]:starts[i + 1]]``.

The text rewards (:mod:`.text_rewards`) turn every sentence into integers (interned words,
or unicode code points for chrF's characters) laid end to end; these kernels score a whole
batch in one call with the n-gram counting of :mod:`.compiled`. No value is special here:
every id is a real token, and there is no <unk> rule (the text has none: an unknown piece is
a placeholder word, as in fairseq's validation BLEU).
"""

from __future__ import annotations

import numba
import numpy as np

from . import compiled
from .compiled import _lcs_of_pair, _rouge, _sentence_bleu, clipped_matches_of_pair
from .kernel_cache import flush_when_changed

_NO_UNK = -1  # never an id here: interned ids and code points are >= 0


@numba.njit(cache=True, nogil=True, inline="always")
def _longest(starts):  # pragma: no cover - compiled
    longest = 0
    for i in range(starts.shape[0] - 1):
        longest = max(longest, starts[i + 1] - starts[i])
    return longest


@numba.njit(cache=True, nogil=True, inline="always")
def _clipped(hyp, ref, min_order, out, hyp_runs, ref_runs):  # pragma: no cover - compiled
    """out[n - min_order] = clipped matches of the hypothesis n-grams (out zeroed first)."""
    out[:] = 0
    clipped_matches_of_pair(
        hyp, hyp.shape[0], ref, ref.shape[0], _NO_UNK, False, 0, min_order, out, hyp_runs, ref_runs
    )


@numba.njit(cache=True, nogil=True)
def ragged_sentence_bleu(
    hyp, hyp_starts, ref, ref_starts, max_order, smooth, value, out
):  # pragma: no cover - compiled
    """out[b] = sacrebleu's sentence BLEU / 100 of hypothesis b against reference b."""
    hyp_runs = np.zeros((2, _longest(hyp_starts) + 1), dtype=np.int64)
    ref_runs = np.zeros((2, _longest(ref_starts) + 1), dtype=np.int64)
    matches = np.zeros(max_order, dtype=np.int64)
    for b in range(out.shape[0]):
        h = hyp[hyp_starts[b] : hyp_starts[b + 1]]
        r = ref[ref_starts[b] : ref_starts[b + 1]]
        _clipped(h, r, 1, matches, hyp_runs, ref_runs)
        out[b] = _sentence_bleu(matches, h.shape[0], r.shape[0], smooth, value)


@numba.njit(cache=True, nogil=True)
def ragged_rouge2(hyp, hyp_starts, ref, ref_starts, measure, out):  # pragma: no cover - compiled
    """out[b] = ROUGE-2 (``measure``) of hypothesis b against reference b."""
    hyp_runs = np.zeros((2, _longest(hyp_starts) + 1), dtype=np.int64)
    ref_runs = np.zeros((2, _longest(ref_starts) + 1), dtype=np.int64)
    overlap = np.zeros(1, dtype=np.int64)
    for b in range(out.shape[0]):
        h = hyp[hyp_starts[b] : hyp_starts[b + 1]]
        r = ref[ref_starts[b] : ref_starts[b + 1]]
        _clipped(h, r, 2, overlap, hyp_runs, ref_runs)
        out[b] = _rouge(overlap[0], max(h.shape[0] - 1, 1), max(r.shape[0] - 1, 1), measure)


@numba.njit(cache=True, nogil=True)
def ragged_rouge_l(hyp, hyp_starts, ref, ref_starts, measure, out):  # pragma: no cover - compiled
    """out[b] = ROUGE-L (``measure``) of hypothesis b against reference b."""
    row = np.zeros(_longest(ref_starts) + 1, dtype=np.int64)
    for b in range(out.shape[0]):
        h = hyp[hyp_starts[b] : hyp_starts[b + 1]]
        r = ref[ref_starts[b] : ref_starts[b + 1]]
        lcs = _lcs_of_pair(h, h.shape[0], r, r.shape[0], _NO_UNK, False, row)
        out[b] = _rouge(lcs, max(h.shape[0], 1), max(r.shape[0], 1), measure)


@numba.njit(cache=True, nogil=True, inline="always")
def _order_stats(hyp, ref, max_order, matches, stats, first_row):  # pragma: no cover - compiled
    """stats[first_row + k] = (hypothesis n-grams, reference n-grams, clipped matches) for
    n = k + 1, as sacrebleu's chrF counts them (no hypothesis n-gram counts when the
    reference has none of that order)."""
    for k in range(max_order):
        n_ref = max(ref.shape[0] - k, 0)
        stats[first_row + k, 0] = max(hyp.shape[0] - k, 0) if n_ref > 0 else 0
        stats[first_row + k, 1] = n_ref
        stats[first_row + k, 2] = matches[k]


@numba.njit(cache=True, nogil=True, inline="always")
def _chrf_f_score(stats, beta):  # pragma: no cover - compiled
    """sacrebleu's ``CHRF._compute_f_score`` (2.6.0, effective order, no eps smoothing) / 100."""
    factor = beta * beta
    avg_prec, avg_rec = 0.0, 0.0
    effective_order = 0
    for i in range(stats.shape[0]):
        n_hyp, n_ref, n_match = stats[i, 0], stats[i, 1], stats[i, 2]
        if n_hyp > 0 and n_ref > 0:
            avg_prec += n_match / n_hyp
            avg_rec += n_match / n_ref
            effective_order += 1
    if effective_order == 0:
        return 0.0
    avg_prec /= effective_order
    avg_rec /= effective_order
    if avg_prec + avg_rec == 0:
        return 0.0
    return (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec)


@numba.njit(cache=True, nogil=True)
def ragged_chrf(
    hyp_chars,
    hyp_char_starts,
    ref_chars,
    ref_char_starts,
    hyp_words,
    hyp_word_starts,
    ref_words,
    ref_word_starts,
    char_order,
    word_order,
    beta,
    out,
):  # pragma: no cover - compiled
    """out[b] = sacrebleu's sentence chrF (chrF++ with ``word_order`` 2) / 100: character
    n-grams of orders 1..char_order, then word n-grams of orders 1..word_order."""
    longest_hyp = max(_longest(hyp_char_starts), _longest(hyp_word_starts))
    longest_ref = max(_longest(ref_char_starts), _longest(ref_word_starts))
    hyp_runs = np.zeros((2, longest_hyp + 1), dtype=np.int64)
    ref_runs = np.zeros((2, longest_ref + 1), dtype=np.int64)
    char_matches = np.zeros(char_order, dtype=np.int64)
    word_matches = np.zeros(max(word_order, 1), dtype=np.int64)
    stats = np.zeros((char_order + word_order, 3), dtype=np.int64)
    for b in range(out.shape[0]):
        h = hyp_chars[hyp_char_starts[b] : hyp_char_starts[b + 1]]
        r = ref_chars[ref_char_starts[b] : ref_char_starts[b + 1]]
        _clipped(h, r, 1, char_matches, hyp_runs, ref_runs)
        _order_stats(h, r, char_order, char_matches, stats, 0)
        if word_order > 0:
            h = hyp_words[hyp_word_starts[b] : hyp_word_starts[b + 1]]
            r = ref_words[ref_word_starts[b] : ref_word_starts[b + 1]]
            _clipped(h, r, 1, word_matches, hyp_runs, ref_runs)
            _order_stats(h, r, word_order, word_matches, stats, char_order)
        out[b] = _chrf_f_score(stats, beta)


@numba.njit(cache=True, nogil=True)
def piece_word_spans(
    tokens, pad, eos, bos, before, after, irregular, spans, word_counts, fallback
):  # pragma: no cover - compiled
    """The words of each row of ``tokens`` [B, L] (up to its first eos or pad, bos skipped):
    ``spans[k]`` = (row, first column, last column + 1) of word k, in order;
    ``word_counts[b]`` = the words of row b. Returns the number of words.

    A word ends after a piece with ``after`` set or before one with ``before`` set. Rows with
    an ``irregular`` piece or an id outside the tables are flagged in ``fallback`` (their spans
    mean nothing): they are decoded as text.
    """
    n = 0
    vocabulary = before.shape[0]
    for b in range(tokens.shape[0]):
        count = 0
        pieces = 0
        previous = 0
        for i in range(tokens.shape[1]):
            piece = tokens[b, i]
            if piece == eos or piece == pad:
                break
            if piece == bos:
                continue
            if piece < 0 or piece >= vocabulary:
                fallback[b] = True
                break
            if irregular[piece]:
                fallback[b] = True
            if pieces > 0 and (after[previous] or before[piece]):
                n += 1
                count += 1
                pieces = 0
            if pieces == 0:
                spans[n, 0] = b
                spans[n, 1] = i
            pieces += 1
            spans[n, 2] = i + 1
            previous = piece
        if pieces > 0:
            n += 1
            count += 1
        word_counts[b] = count
    return n


@numba.njit(cache=True, nogil=True)
def gather_entries(entries, counts, starts, lengths, units, out, out_starts):  # pragma: no cover
    """Sentence b is the units of its ``counts[b]`` entries, in order: ``out`` and
    ``out_starts`` [B + 1] form the ragged batch; entry i is ``units[starts[i]:][:lengths[i]]``."""
    position = 0
    e = 0
    for b in range(counts.shape[0]):
        out_starts[b] = position
        for _ in range(counts[b]):
            entry = entries[e]
            e += 1
            start, length = starts[entry], lengths[entry]
            out[position : position + length] = units[start : start + length]
            position += length
    out_starts[counts.shape[0]] = position


flush_when_changed(
    [ragged_sentence_bleu, ragged_rouge2, ragged_rouge_l, ragged_chrf], [compiled.__file__]
)
