"""Paired bootstrap resampling over test sentences (Koehn 2004), as sacreBLEU 2.6 does it.

BLEU goes through sacreBLEU's own ``PairedTest(test_type="bs")``. ROUGE, a mean of
per-sentence scores, goes through `paired_bootstrap`, which repeats sacreBLEU's procedure on
any per-sentence statistics: the same resampled index sets (``numpy.random.default_rng(seed)
.choice(n, (n_samples, n))``, seed 12345 unless ``SACREBLEU_SEED`` says otherwise), the same
statistic (the absolute difference of the two systems' scores, centred over the resamples) and
the same p-value ``(count(centred > observed) + 1) / (n_samples + 1)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SAMPLES = 1000
SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class PairedResult:
    """A system against a baseline on the same sentences."""

    baseline: float
    system: float
    p_value: float

    @property
    def difference(self) -> float:
        return self.system - self.baseline

    @property
    def significant(self) -> bool:
        """p < 0.05 for a non-zero difference: the procedure gives identical systems (every
        resampled difference 0, never above the observed 0) p = 1 / (n_samples + 1)."""
        return self.p_value < SIGNIFICANCE_LEVEL and self.difference != 0


def default_seed() -> int | None:
    """sacreBLEU's seed: ``SACREBLEU_SEED`` (``none`` for fresh entropy), else 12345."""
    seed = os.environ.get("SACREBLEU_SEED", "12345")
    return None if seed.lower() == "none" else int(seed)


def bootstrap_indices(sentences: int, n_samples: int, seed: int | None) -> np.ndarray:
    """[n_samples, sentences] sentence indices drawn with replacement, as sacreBLEU draws them."""
    rng = np.random.default_rng(seed)
    return rng.choice(sentences, size=(n_samples, sentences), replace=True)


def paired_bootstrap(
    baseline: np.ndarray,
    system: np.ndarray,
    score: Callable[[np.ndarray], float],
    indices: np.ndarray,
) -> PairedResult:
    """The paired bootstrap test of ``system`` against ``baseline``.

    ``baseline`` and ``system`` hold one row of statistics per sentence (the same sentences in
    the same order); ``score`` maps such rows (all of them, or one resample) to a corpus score;
    ``indices`` are the resamples (`bootstrap_indices`)."""
    if len(baseline) != len(system):
        raise ValueError(f"{len(baseline)} baseline sentences but {len(system)} system ones")
    observed_base, observed_system = score(baseline), score(system)
    resampled_base = np.array([score(baseline[rows]) for rows in indices])
    resampled_system = np.array([score(system[rows]) for rows in indices])
    differences = np.abs(resampled_system - resampled_base)
    centred = differences - differences.mean()
    observed = abs(observed_system - observed_base)
    p_value = (np.sum(centred > observed).item() + 1) / (len(indices) + 1)
    return PairedResult(observed_base, observed_system, p_value)


def mean_score(rows: np.ndarray) -> float:
    """The mean of per-sentence scores: ROUGE's corpus score."""
    return float(np.mean(rows))


def mean_paired_bootstrap(
    baseline: Sequence[float],
    system: Sequence[float],
    n_samples: int = DEFAULT_SAMPLES,
    seed: int | None = None,
) -> PairedResult:
    """Paired bootstrap of two systems scored by the mean of per-sentence scores (ROUGE)."""
    base = np.asarray(baseline, dtype=np.float64)
    sys_scores = np.asarray(system, dtype=np.float64)
    seed = default_seed() if seed is None else seed
    indices = bootstrap_indices(len(base), n_samples, seed)
    return paired_bootstrap(base, sys_scores, mean_score, indices)


def rouge_sentence_scores(
    hypotheses: Sequence[str], references: Sequence[str], rouge_type: str
) -> list[float]:
    """rouge-score's F-measure x 100 of every sentence, on whitespace tokens as evaluate.py
    scores them (the mean of these is evaluate.py's corpus ROUGE)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer([rouge_type], tokenizer=WhitespaceTokenizer())
    return [
        100.0 * scorer.score(target=ref, prediction=hyp)[rouge_type].fmeasure
        for hyp, ref in zip(hypotheses, references, strict=True)
    ]


class WhitespaceTokenizer:
    """Already tokenised text kept as it is (as in scripts/evaluate.py)."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


def rouge_paired_bootstrap(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[str],
    rouge_type: str = "rouge2",
    n_samples: int = DEFAULT_SAMPLES,
) -> PairedResult:
    """Paired bootstrap of two systems' hypotheses under mean per-sentence ROUGE."""
    return mean_paired_bootstrap(
        rouge_sentence_scores(baseline, references, rouge_type),
        rouge_sentence_scores(system, references, rouge_type),
        n_samples,
    )


def bleu_paired_bootstrap(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[str],
    n_samples: int = DEFAULT_SAMPLES,
    tokenize: str = "13a",
) -> PairedResult:
    """sacreBLEU's paired bootstrap of corpus BLEU (its ``PairedTest``, test type ``bs``)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    test = PairedTest(
        [("baseline", list(baseline)), ("system", list(system))],
        {"BLEU": BLEU(tokenize=tokenize)},
        [list(references)],
        test_type="bs",
        n_samples=n_samples,
    )
    _, scores = test()
    base, result = scores["BLEU"]
    return PairedResult(base.score, result.score, result.p_value)
