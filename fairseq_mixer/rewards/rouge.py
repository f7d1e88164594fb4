"""ROUGE-2 and ROUGE-L rewards, matching ``rouge_score.rouge_scorer`` (0.1.2) on id strings."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Reward
from .ngrams import lcs_length
from .sequences import Sequences, StartSpec

MEASURES = ("fmeasure", "recall", "precision")


class _Rouge(Reward):
    """Shared option handling and the precision/recall/F combination."""

    def __init__(
        self,
        *,
        pad: int = 1,
        eos: int = 2,
        unk: int = 3,
        unk_matches: bool = False,
        measure: str = "fmeasure",
    ):
        super().__init__(pad=pad, eos=eos, unk=unk, unk_matches=unk_matches)
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")
        self.measure = measure

    def combine(self, precision: Tensor, recall: Tensor) -> Tensor:
        if self.measure == "precision":
            return precision
        if self.measure == "recall":
            return recall
        denominator = precision + recall
        fmeasure = 2 * precision * recall / denominator.clamp(min=1e-300)
        return torch.where(denominator > 0, fmeasure, 0.0)


class Rouge2(_Rouge):
    """Clipped bigram overlap; precision and recall divide by max(number of bigrams, 1)."""

    name = "rouge2"

    def compiled_score(self, hyp: Tensor, ref: Tensor, start: StartSpec) -> Tensor:
        from .compiled import MEASURE_CODES, rouge2_scores  # numba: CPU only

        return self.run_compiled(rouge2_scores, hyp, ref, MEASURE_CODES[self.measure])

    def score(self, hyp: Sequences, ref: Sequences, start: StartSpec) -> Tensor:
        overlap = self.clipped(hyp, ref, 2, min_order=2)[:, 0].double()
        hyp_grams = (hyp.lengths - 1).clamp_(min=1)
        ref_grams = (ref.lengths - 1).clamp_(min=1)
        return self.combine(overlap / hyp_grams, overlap / ref_grams)


class RougeL(_Rouge):
    """Longest-common-subsequence ROUGE; 0 when either sentence is empty."""

    name = "rougeL"

    def compiled_score(self, hyp: Tensor, ref: Tensor, start: StartSpec) -> Tensor:
        from .compiled import MEASURE_CODES, rouge_l_scores  # numba: CPU only

        return self.run_compiled(rouge_l_scores, hyp, ref, MEASURE_CODES[self.measure])

    def score(self, hyp: Sequences, ref: Sequences, start: StartSpec) -> Tensor:
        lcs = lcs_length(self.hyp_ref_equality(hyp, ref)).double()
        precision = lcs / hyp.lengths.clamp(min=1).double()
        recall = lcs / ref.lengths.clamp(min=1).double()
        return self.combine(precision, recall)
