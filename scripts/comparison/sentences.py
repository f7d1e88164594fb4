"""Per-sentence statistics of a scored test set: what the paired bootstrap resamples.

In a work dir they come from the hypotheses and the references an evaluate.py row names; in a
record (comparison.record), which holds neither, from the files the export wrote beside the
row (``"statistics"``: the row's metric's; ``"chrf_statistics"``: chrF's, which a BLEU row has
as well): one gzipped JSON object per cell, test set, beam and kind, with ``kind`` (``bleu``
and ``chrf``: sacreBLEU's sufficient statistics; ``rouge``: rouge-score's F x 100 of each
ROUGE type), ``columns``, ``signature`` and ``rows`` (one a sentence).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from comparison import significance

if TYPE_CHECKING:
    from sacrebleu.metrics import CHRF
    from sacrebleu.metrics.base import Metric

BLEU_COLUMNS = (
    "hyp_len", "ref_len", *(f"correct{n}" for n in range(1, 5)),
    *(f"total{n}" for n in range(1, 5)),
)  # fmt: skip
CHRF_COUNTS = ("hyp", "ref", "match")
ROUGE_SIGNATURE = "rouge-score F-measure x 100, whitespace tokens, no stemming"
SACREBLEU_KINDS = ("bleu", "chrf")
STATISTICS_KEYS = ("statistics", "chrf_statistics")


def kind_of(metric: str) -> str:
    """The statistics a table metric resamples: bleu, chrf, or rouge for a ROUGE type."""
    return metric if metric in SACREBLEU_KINDS else "rouge"


def statistics_key(metric: str) -> str:
    """The row's key naming the exported statistics of a metric (or kind)."""
    return "chrf_statistics" if metric == "chrf" else "statistics"


def kinds(row: dict) -> list[str]:
    """The statistics an evaluate.py row's text gives: its metric's, and chrF's beside BLEU."""
    return [row["metric"], *(["chrf"] if "chrf" in row else [])]


def file_name(subset: str, beam: int, kind: str = "bleu") -> str:
    """chrF's file beside the row's metric's (whose name predates it)."""
    return f"{subset}.beam{beam}{'.chrf' if kind == 'chrf' else ''}.json.gz"


def read_lines(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def sacrebleu_metric(kind: str, word_order: int = 0) -> Metric:
    """evaluate.py's BLEU, or its chrF with this word order."""
    return significance.bleu_metric() if kind == "bleu" else significance.chrf_metric(word_order)


def chrf_columns(metric: CHRF) -> list[str]:
    """chrF's statistics: hypothesis, reference and matched n-grams of each character order,
    then of each word order."""
    orders = [
        *(f"char{n}" for n in range(1, metric.char_order + 1)),
        *(f"word{n}" for n in range(1, metric.word_order + 1)),
    ]
    return [f"{order}_{count}" for order in orders for count in CHRF_COUNTS]


def word_order_of(row: dict) -> int:
    """The chrF word order an evaluate.py row was scored with (2: chrF++)."""
    return significance.chrf_word_order(row["chrf_signature"])


def from_text(
    hypotheses: list[str],
    references: list[str],
    kind: str,
    word_order: int = 0,
    rouge_types: Sequence[str] = significance.ROUGE_TYPES,
) -> dict:
    """The statistics of one scored test set; ``kind``: bleu, chrf (of ``word_order``) or
    rouge (of ``rouge_types``)."""
    if kind in SACREBLEU_KINDS:
        metric = sacrebleu_metric(kind, word_order)
        rows = significance.sacrebleu_statistics(hypotheses, references, metric)
        signature = str(metric.get_signature())
        columns = list(BLEU_COLUMNS) if kind == "bleu" else chrf_columns(metric)
    else:
        rows = significance.rouge_statistics(hypotheses, references, rouge_types)
        signature, columns = ROUGE_SIGNATURE, list(rouge_types)
    return {"kind": kind, "columns": columns, "signature": signature, "rows": rows}


def of_text(row: dict, kind: str, rouge_types: Sequence[str] = significance.ROUGE_TYPES) -> dict:
    """`from_text` of an evaluate.py row's hypotheses and references (chrF: the row's word
    order)."""
    hypotheses, references = read_lines(row["hypotheses"]), read_lines(row["references"])
    order = word_order_of(row) if kind == "chrf" else 0
    return from_text(hypotheses, references, kind, order, rouge_types)


def write(path: Path, statistics: dict) -> None:
    """Gzipped JSON, byte for byte the same for the same statistics (no time in the header)."""
    record = {**statistics, "rows": statistics["rows"].tolist()}
    text = json.dumps(record, separators=(",", ":")) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


def read(path: Path) -> dict:
    record = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    dtype = np.int64 if record["kind"] in SACREBLEU_KINDS else np.float64
    rows = np.array(record["rows"], dtype=dtype).reshape(len(record["rows"]), -1)
    return {**record, "rows": rows}


def for_metric(statistics: dict, metric: str) -> np.ndarray:
    """What the table's metric resamples: all BLEU or chrF statistics, or one ROUGE type's
    column."""
    if metric in SACREBLEU_KINDS:
        return statistics["rows"]
    return statistics["rows"][:, statistics["columns"].index(metric)]


def available(row: dict, metric: str) -> bool:
    """A row scored in ``metric`` with its statistics exported or its text at hand."""
    return metric in row and (statistics_key(metric) in row or "hypotheses" in row)


def of_row(row: dict, metric: str, cache: dict | None = None) -> np.ndarray:
    """A row's statistics for the table metric: from its exported file when it names one, else
    from its hypotheses and references (only the metric's ROUGE type)."""
    cache = {} if cache is None else cache
    name = statistics_key(metric)
    key = (row.get(name) or (row["hypotheses"], row["references"]), metric)
    if key not in cache:
        if name in row:
            statistics = read(Path(row[name]))
        else:
            statistics = of_text(row, kind_of(metric), [metric])
        cache[key] = for_metric(statistics, metric)
    return cache[key]
