"""Per-sentence statistics of a scored test set: what the paired bootstrap resamples.

In a work dir they come from the hypotheses and the references an evaluate.py row names; in a
record (comparison.record), which holds neither, from the file the export wrote beside the row
(``"statistics"``): one gzipped JSON object per cell, test set and beam, with ``kind``
(``bleu``: sacreBLEU's sufficient statistics; ``rouge``: rouge-score's F x 100 of each ROUGE
type), ``columns``, ``signature`` and ``rows`` (one a sentence).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from comparison import significance

BLEU_COLUMNS = (
    "hyp_len", "ref_len", *(f"correct{n}" for n in range(1, 5)),
    *(f"total{n}" for n in range(1, 5)),
)  # fmt: skip
ROUGE_SIGNATURE = "rouge-score F-measure x 100, whitespace tokens, no stemming"


def file_name(subset: str, beam: int) -> str:
    return f"{subset}.beam{beam}.json.gz"


def read_lines(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def from_text(hypotheses: list[str], references: list[str], kind: str) -> dict:
    """The statistics of one scored test set; ``kind`` is evaluate.py's metric (bleu, rouge)."""
    if kind == "bleu":
        metric = significance.bleu_metric()
        rows = significance.bleu_statistics(hypotheses, references, metric)
        signature = str(metric.get_signature())
        columns = list(BLEU_COLUMNS)
    else:
        rows = significance.rouge_statistics(hypotheses, references)
        signature, columns = ROUGE_SIGNATURE, list(significance.ROUGE_TYPES)
    return {"kind": kind, "columns": columns, "signature": signature, "rows": rows}


def write(path: Path, statistics: dict) -> None:
    """Gzipped JSON, byte for byte the same for the same statistics (no time in the header)."""
    record = {**statistics, "rows": statistics["rows"].tolist()}
    text = json.dumps(record, separators=(",", ":")) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


def read(path: Path) -> dict:
    record = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    dtype = np.int64 if record["kind"] == "bleu" else np.float64
    rows = np.array(record["rows"], dtype=dtype).reshape(len(record["rows"]), -1)
    return {**record, "rows": rows}


def for_metric(statistics: dict, metric: str) -> np.ndarray:
    """What the table's metric resamples: all BLEU statistics, or one ROUGE type's column."""
    if metric == "bleu":
        return statistics["rows"]
    return statistics["rows"][:, statistics["columns"].index(metric)]


def available(row: dict) -> bool:
    return "statistics" in row or "hypotheses" in row


def of_row(row: dict, metric: str, cache: dict | None = None) -> np.ndarray:
    """A row's statistics for the table metric: from its exported file when it names one, else
    from its hypotheses and references (only the metric's ROUGE type)."""
    cache = {} if cache is None else cache
    key = (row.get("statistics") or (row["hypotheses"], row["references"]), metric)
    if key not in cache:
        if "statistics" in row:
            cache[key] = for_metric(read(Path(row["statistics"])), metric)
        else:
            hypotheses, references = read_lines(row["hypotheses"]), read_lines(row["references"])
            if metric == "bleu":
                cache[key] = significance.bleu_statistics(hypotheses, references)
            else:
                scores = significance.rouge_statistics(hypotheses, references, [metric])
                cache[key] = scores[:, 0]
    return cache[key]
