"""ROUGE of decoded validation text, with the rouge-score package (the metric, not a reward)."""

from __future__ import annotations

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class _WhitespaceTokenizer:
    """Text here is already tokenised; rouge-score's default would drop non-alphanumerics."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.split()


_SCORER = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_WhitespaceTokenizer())


def rouge_sums(hyps: list[str], refs: list[str]) -> dict:
    """Summed F-measures and the sentence count, ready to be summed across workers."""
    sums = {f"_{rouge_type}_sum": 0.0 for rouge_type in ROUGE_TYPES}
    for hyp, ref in zip(hyps, refs, strict=True):
        scores = _SCORER.score(target=ref, prediction=hyp)
        for rouge_type in ROUGE_TYPES:
            sums[f"_{rouge_type}_sum"] += scores[rouge_type].fmeasure
    sums["_rouge_count"] = len(hyps)
    return sums
