"""Sentence-level BLEU rewards: sacrebleu's smoothed BLEU and the MIXER release's BLEU."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Reward
from .sequences import Sequences, StartSpec, to_start

SMOOTH_METHODS = ("none", "floor", "add-k", "exp")
_SMOOTH_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1.0, "exp": None}


def _steps(max_order: int, device: torch.device) -> Tensor:
    """[max_order] long: n - 1 for the orders n = 1..max_order."""
    return torch.arange(max_order, device=device)


class SentenceBleu(Reward):
    """sacrebleu's sentence BLEU (``tokenize="none"``, ``effective_order=True``) divided by 100.

    Follows ``sacrebleu.metrics.BLEU.compute_bleu`` (2.6.0) step by step: 0 when no n-gram of
    any order matches; add-k smoothing for orders above 1; stop at the first order with no
    hypothesis n-grams (effective order); the 'exp' method halves the fallback precision at
    each successive zero-match order; a zero precision makes the score 0.
    """

    name = "sentence_bleu"

    def __init__(
        self,
        *,
        pad: int = 1,
        eos: int = 2,
        unk: int = 3,
        unk_matches: bool = False,
        smooth_method: str = "exp",
        smooth_value: float | None = None,
        max_order: int = 4,
    ):
        super().__init__(pad=pad, eos=eos, unk=unk, unk_matches=unk_matches)
        if smooth_method not in SMOOTH_METHODS:
            raise ValueError(
                f"unknown smooth_method {smooth_method!r}; expected one of {SMOOTH_METHODS}"
            )
        if smooth_value is not None and not (
            isinstance(smooth_value, int | float) and math.isfinite(smooth_value)
        ):
            raise ValueError(f"smooth_value must be a finite number or None, got {smooth_value!r}")
        if smooth_value is not None and smooth_value < 0:
            raise ValueError(f"smooth_value must be non-negative, got {smooth_value!r}")
        if not isinstance(max_order, int) or isinstance(max_order, bool) or max_order < 1:
            raise ValueError(f"max_order must be a positive int, got {max_order!r}")
        self.smooth_method = smooth_method
        self.smooth_value = smooth_value
        self.max_order = max_order

    def effective_smooth_value(self) -> float | None:
        """The smoothing value: the one given, else sacrebleu's default for the method."""
        if self.smooth_value is None:
            return _SMOOTH_DEFAULTS[self.smooth_method]
        return self.smooth_value

    def compiled_score(self, hyp: Tensor, ref: Tensor, start: StartSpec) -> Tensor:
        from .compiled import SMOOTH_CODES, sentence_bleu_scores  # numba: CPU only

        value = self.effective_smooth_value()
        value = 0.0 if value is None else float(value)
        smooth = SMOOTH_CODES[self.smooth_method]
        return self.run_compiled(sentence_bleu_scores, hyp, ref, self.max_order, smooth, value)

    def score(self, hyp: Sequences, ref: Sequences, start: StartSpec) -> Tensor:
        counts = self.clipped(hyp, ref, self.max_order)
        steps = _steps(self.max_order, counts.device).double()
        correct = counts.double()
        total = (hyp.lengths[:, None] - steps).clamp_(min=0)
        any_match = counts.any(dim=1)

        value = self.effective_smooth_value()
        if self.smooth_method == "add-k":
            extra = (steps > 0).double() * value
            correct = correct + extra
            total = total + extra

        # Orders up to (excluding) the first one without hypothesis n-grams take part. Totals
        # shrink with the order, except that add-k lifts those above 1: they count only after
        # a non-empty first order.
        active = total > 0
        if self.smooth_method == "add-k":
            active = active & active[:, :1]
        eff_order = active.sum(dim=1)
        safe_total = torch.where(active, total, 1.0)
        zero = correct == 0
        if self.smooth_method == "exp":
            halvings = torch.cumsum(zero & active, dim=1)
            fallback = 1.0 / torch.ldexp(safe_total, halvings)
        elif self.smooth_method == "floor":
            fallback = value / safe_total
        else:
            fallback = torch.zeros_like(total)
        precision = torch.where(zero, fallback, correct / safe_total)

        scored = any_match & ~(active & (precision <= 0)).any(dim=1)
        log_precision = torch.where(active, precision.clamp(min=1e-300).log(), 0.0)
        mean_log = log_precision.sum(dim=1) / eff_order.clamp(min=1)
        # exp(1 - ref_len / hyp_len) when the hypothesis is shorter, else 1: the ratio is at
        # most 1 exactly when it is not shorter. An empty hypothesis has no match, so its
        # brevity penalty (0) never matters.
        ratio = ref.lengths.double() / hyp.lengths.clamp(min=1)
        brevity = torch.exp((1 - ratio).clamp_(max=0))
        return torch.where(scored, brevity * torch.exp(mean_log), 0.0)


class MixerBleu(Reward):
    """The sentence BLEU of the MIXER release, scoring only the sampled part of a hypothesis.

    With ``s = start + 1`` the first sampled (1-indexed) position: order
    ``n = min(4, hyp_len - s + 1, ref_len - s + 1)`` (``n <= 0`` gives 0); only n-grams ending at
    or after ``s`` count, in the hypothesis and in the reference; precisions are add-one
    smoothed for every order; the brevity penalty ``exp(1 - (ref_len + 1) / hyp_len)`` applies
    when ``hyp_len < ref_len`` (full lengths). Reference n-grams with <unk> never match.
    """

    name = "mixer_bleu"
    max_order = 4

    def compiled_score(self, hyp: Tensor, ref: Tensor, start: StartSpec) -> Tensor:
        from .compiled import mixer_bleu_scores  # numba: CPU only

        first = to_start(start, hyp.size(0), hyp.device)
        return self.run_compiled(mixer_bleu_scores, hyp, ref, first.contiguous().numpy())

    def score(self, hyp: Sequences, ref: Sequences, start: StartSpec) -> Tensor:
        first = to_start(start, hyp.lengths.size(0), hyp.tokens.device)
        matches = self.clipped(hyp, ref, self.max_order, cut=first)
        steps = _steps(self.max_order, first.device)

        order = (torch.minimum(hyp.lengths, ref.lengths) - first).clamp_(max=self.max_order)
        # Hypothesis k-grams ending at or after `first`: start positions max(0, first-k+1) ..
        # hyp_len-k, i.e. hyp_len - max(k - 1, first) of them.
        hyp_grams = (hyp.lengths[:, None] - torch.maximum(steps, first[:, None])).clamp_(min=0)
        log_precision = torch.log((matches + 1).double() / (hyp_grams + 1))
        used = steps < order[:, None]
        mean_log = torch.where(used, log_precision, 0.0).sum(dim=1) / order.clamp(min=1)

        ratio = (ref.lengths + 1).double() / hyp.lengths.clamp(min=1)
        brevity = torch.where(hyp.lengths < ref.lengths, torch.exp(1 - ratio), 1.0)
        return torch.where(order > 0, brevity * torch.exp(mean_log), 0.0)
