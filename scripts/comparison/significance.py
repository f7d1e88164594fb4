"""Paired bootstrap resampling over test sentences (Koehn 2004), as sacreBLEU 2.6 does it.

Every metric goes through `paired_bootstrap`, which repeats the procedure of sacreBLEU's
``PairedTest(test_type="bs")`` on any per-sentence statistics: the same resampled index sets
(``numpy.random.default_rng(seed).choice(n, (n_samples, n))``, seed 12345 unless
``SACREBLEU_SEED`` says otherwise), the same statistic (the absolute difference of the two
systems' scores, centred over the resamples) and the same p-value
``(count(centred > observed) + 1) / (n_samples + 1)``. BLEU's and chrF's statistics are
sacreBLEU's per-sentence sufficient statistics (n-gram counts and lengths; character and word
n-gram counts), so their p-values and scores are PairedTest's own; ROUGE's are rouge-score's
per-sentence F values, their mean the corpus score. Statistics, unlike the text, can be kept
where the references may not be (comparison.sentences).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.metrics.base import Metric

DEFAULT_SAMPLES = 1000
SIGNIFICANCE_LEVEL = 0.05
BLEU_TOKENIZE = "13a"  # scripts/evaluate.py's --tokenize default, which the grid keeps
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
CHRF_WORD_ORDER = re.compile(r"(?:^|\|)nw:(\d+)(?:\||$)")


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
    observed: tuple[float, float] | None = None,
) -> PairedResult:
    """The paired bootstrap test of ``system`` against ``baseline``.

    ``baseline`` and ``system`` hold one row of statistics per sentence (the same sentences in
    the same order); ``score`` maps such rows (all of them, or one resample) to a corpus score;
    ``indices`` are the resamples (`bootstrap_indices`); ``observed``, the two scores on all
    sentences when they are not ``score`` of all rows (sacreBLEU's BLEU: integer counts there,
    float32 ones in the resamples)."""
    if len(baseline) != len(system):
        raise ValueError(f"{len(baseline)} baseline sentences but {len(system)} system ones")
    observed_base, observed_system = observed or (score(baseline), score(system))
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


def rouge_statistics(
    hypotheses: Sequence[str], references: Sequence[str], rouge_types: Sequence[str] = ROUGE_TYPES
) -> np.ndarray:
    """[sentences, len(rouge_types)]: rouge-score's F-measure x 100 of every sentence, on
    whitespace tokens as evaluate.py scores them (their mean is evaluate.py's corpus ROUGE)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(rouge_types), tokenizer=WhitespaceTokenizer())
    rows = []
    for hyp, ref in zip(hypotheses, references, strict=True):
        scores = scorer.score(target=ref, prediction=hyp)
        rows.append([100.0 * scores[rouge_type].fmeasure for rouge_type in rouge_types])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(rouge_types))


def rouge_sentence_scores(
    hypotheses: Sequence[str], references: Sequence[str], rouge_type: str
) -> list[float]:
    """One ROUGE type's column of `rouge_statistics`."""
    return rouge_statistics(hypotheses, references, [rouge_type])[:, 0].tolist()


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


def sacrebleu_statistics(
    hypotheses: Sequence[str], references: Sequence[str], metric: Metric
) -> np.ndarray:
    """sacreBLEU's sufficient statistics of every sentence under ``metric`` (BLEU, chrF),
    [sentences, statistics] integers: what its PairedTest resamples."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    stats = metric._extract_corpus_statistics(list(hypotheses), [list(references)])
    return np.array(stats, dtype=np.int64).reshape(len(hypotheses), -1)


def stats_paired_bootstrap(
    baseline: np.ndarray,
    system: np.ndarray,
    metric: Metric,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int | None = None,
) -> PairedResult:
    """sacreBLEU's ``PairedTest(test_type="bs")`` of ``metric``'s corpus score from
    `sacrebleu_statistics`: its scores from the summed integer counts, its resamples from
    float32 ones, as it does."""
    if np.shape(baseline)[1:] != np.shape(system)[1:]:
        raise ValueError(f"statistics of shape {np.shape(baseline)} and {np.shape(system)}")

    def score(rows: np.ndarray) -> float:
        return metric._compute_score_from_stats(rows.sum(0)).score

    def exact(rows: np.ndarray) -> float:
        return metric._compute_score_from_stats([int(v) for v in rows.sum(0)]).score

    seed = default_seed() if seed is None else seed
    indices = bootstrap_indices(len(baseline), n_samples, seed)
    base, sys_stats = np.asarray(baseline, np.float32), np.asarray(system, np.float32)
    observed = (exact(np.asarray(baseline)), exact(np.asarray(system)))
    return paired_bootstrap(base, sys_stats, score, indices, observed)


def text_paired_bootstrap(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[str],
    metric: Metric,
    n_samples: int = DEFAULT_SAMPLES,
) -> PairedResult:
    """sacreBLEU's paired bootstrap of two systems' hypotheses under ``metric``."""
    return stats_paired_bootstrap(
        sacrebleu_statistics(baseline, references, metric),
        sacrebleu_statistics(system, references, metric),
        metric,
        n_samples,
    )


def bleu_metric(tokenize: str = BLEU_TOKENIZE) -> BLEU:
    """sacreBLEU's BLEU as evaluate.py scores it (its defaults otherwise)."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize)


def bleu_statistics(
    hypotheses: Sequence[str], references: Sequence[str], metric: BLEU | None = None
) -> np.ndarray:
    """`sacrebleu_statistics` of BLEU, [sentences, 10]: the hypothesis and reference lengths,
    the matched n-grams and the hypothesis n-grams, n = 1..4; ``metric``: `bleu_metric()`
    unless given."""
    return sacrebleu_statistics(hypotheses, references, metric or bleu_metric())


def bleu_stats_paired_bootstrap(
    baseline: np.ndarray,
    system: np.ndarray,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int | None = None,
    tokenize: str = BLEU_TOKENIZE,
) -> PairedResult:
    """`stats_paired_bootstrap` of corpus BLEU from `bleu_statistics`."""
    return stats_paired_bootstrap(baseline, system, bleu_metric(tokenize), n_samples, seed)


def bleu_paired_bootstrap(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[str],
    n_samples: int = DEFAULT_SAMPLES,
    tokenize: str = BLEU_TOKENIZE,
) -> PairedResult:
    """sacreBLEU's paired bootstrap of corpus BLEU (its ``PairedTest``, test type ``bs``)."""
    return text_paired_bootstrap(baseline, system, references, bleu_metric(tokenize), n_samples)


def chrf_metric(word_order: int = 0) -> CHRF:
    """sacreBLEU's chrF as evaluate.py scores it (``--chrf-word-order``; 2: chrF++)."""
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=word_order)


def chrf_word_order(signature: str) -> int:
    """The word n-gram order of a sacreBLEU chrF signature (``...|nw:2|...``: chrF++)."""
    match = CHRF_WORD_ORDER.search(signature)
    if match is None:
        raise ValueError(f"no word order (nw:N) in the chrF signature {signature!r}")
    return int(match.group(1))
