"""The paper's table from a grid's finished cells: mean +- std over seeds, the paper's numbers
beside, significance against the XENT control, decoding speed, and what was tuned.

Pairing over seeds: each fine-tuning's seed-s run is tested against the control's seed-s run
(same start, same seed, so the same batch order), and the XENT start against every control
run; a cell is marked when the difference is significant (p < 0.05) for every seed with the
same sign. Every p-value is listed below the table.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from comparison import sentences, significance
from comparison.grid import Cell, Grid, GridError, all_cells
from comparison.runner import cell_state, choice_path, read_marker, tune_score

if TYPE_CHECKING:
    from sacrebleu.metrics.base import Metric

LABELS = {
    "bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
}  # fmt: skip
START = "start"


@dataclass
class System:
    """A table row: the start, or a method over its seeds (seed -> subset -> beam -> row)."""

    key: str
    name: str
    runs: dict[int | None, dict[str, dict[int, dict]]] = field(default_factory=dict)


# ---------------------------------------------------------------------- collecting


def read_rows(cell: Cell, root: Path) -> dict[str, dict[int, dict]]:
    """subset -> beam -> evaluate.py row of a cell whose test phase finished; a record's
    relative ``statistics`` paths made absolute from ``root`` (the work dir or the record)."""
    if read_marker(cell.folder, "test") is None:
        return {}
    rows: dict[str, dict[int, dict]] = {}
    path = cell.folder / "results.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            for key in sentences.STATISTICS_KEYS:
                if key in row:
                    row[key] = str(root / row[key])
            rows.setdefault(row["gen_subset"], {})[int(row["beam"])] = row
    return rows


def collect(grid: Grid) -> tuple[list[System], list[str]]:
    """The systems in table order and the cells that are missing, with their state."""
    cells = [cell for cell in all_cells(grid) if cell.evaluated]
    systems = {START: System(START, grid.spec.get("start_name", "XENT (the start)"))}
    systems.update({m.key: System(m.key, m.name) for m in grid.methods})
    missing = []
    for cell in cells:
        rows = read_rows(cell, grid.workdir)
        if rows:
            systems[cell.method or START].runs[cell.seed] = rows
        else:
            missing.append(f"{cell.name} ({cell_state(grid, cell)})")
    control = grid.control.key
    order = [START, control] + [m.key for m in grid.methods if m.key != control]
    return [systems[key] for key in order], missing


# ---------------------------------------------------------------------- numbers


def values(system: System, subset: str, beam: int, metric: str) -> dict[int | None, float]:
    return {
        seed: rows[subset][beam][metric]
        for seed, rows in system.runs.items()
        if beam in rows.get(subset, {}) and metric in rows[subset][beam]
    }


def summary(scores: dict[int | None, float]) -> dict | None:
    if not scores:
        return None
    numbers = list(scores.values())
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return {"mean": statistics.fmean(numbers), "std": std, "n": len(numbers), "values": scores}


def chrf_word_order(rows: Iterable[dict]) -> int:
    """The word order the rows' chrF was scored with (0 for no row): one for all, chrF and
    chrF++ are different measures."""
    scored = {(row["name"], sentences.word_order_of(row)) for row in rows}
    orders = {order for _, order in scored}
    if len(orders) > 1:
        names = ", ".join(f"{name} nw:{order}" for name, order in sorted(scored))
        raise GridError(f"chrF of different word orders in one table ({names})")
    return orders.pop() if orders else 0


def scorer(metric: str, rows: Iterable[dict]) -> Metric:
    """The sacreBLEU metric the rows' statistics are scored with (chrF: of their word order)."""
    order = chrf_word_order(rows) if metric == "chrf" else 0
    return sentences.sacrebleu_metric(metric, order)


def label(metric: str, systems: Iterable[System]) -> str:
    """The metric's name; chrF with its word n-grams as sacreBLEU writes it (chrF++: 2)."""
    if metric != "chrf":
        return LABELS[metric]
    rows = [
        row
        for system in systems
        for runs in system.runs.values()
        for beams in runs.values()
        for row in beams.values()
        if metric in row
    ]
    return LABELS[metric] + "+" * chrf_word_order(rows)


def paired(
    row: dict, control_row: dict, metric: str, n_samples: int, cache: dict | None = None
) -> dict:
    """One paired bootstrap test of a run against a control run on the same test set, from
    their per-sentence statistics (comparison.sentences; ``cache`` keeps them between tests)."""
    system = sentences.of_row(row, metric, cache)
    baseline = sentences.of_row(control_row, metric, cache)
    if metric in sentences.SACREBLEU_KINDS:
        metric_scorer = scorer(metric, [control_row, row])
        result = significance.stats_paired_bootstrap(baseline, system, metric_scorer, n_samples)
    else:
        result = significance.mean_paired_bootstrap(baseline, system, n_samples)
    return {
        "difference": result.difference,
        "p_value": result.p_value,
        "significant": result.significant,
    }


def tests(
    system: System,
    control: System,
    subset: str,
    beam: int,
    metric: str,
    n_samples: int,
    cache: dict | None = None,
) -> dict | None:
    """Per-seed tests against the control; ``significant`` when every seed agrees."""
    pairs = {}
    for seed, control_rows in sorted(control.runs.items()):
        own = system.runs.get(None if system.key == START else seed)
        control_row = control_rows.get(subset, {}).get(beam)
        row = (own or {}).get(subset, {}).get(beam)
        if row and control_row and all(sentences.available(r, metric) for r in (row, control_row)):
            pairs[seed] = paired(row, control_row, metric, n_samples, cache)
    if not pairs:
        return None
    signs = {np.sign(result["difference"]) for result in pairs.values()}
    every = all(result["significant"] for result in pairs.values())
    return {"pairs": pairs, "significant": every and len(signs) == 1}


def speed(system: System, beam: int) -> float | None:
    """Milliseconds of decoding per sentence at this beam, the mean over seeds and subsets."""
    times = [
        1000.0 / rows[subset][beam]["sentences_per_s"]
        for rows in system.runs.values()
        for subset in rows
        if beam in rows[subset] and rows[subset][beam].get("sentences_per_s")
    ]
    return statistics.fmean(times) if times else None


def build(
    grid: Grid,
    n_samples: int = significance.DEFAULT_SAMPLES,
    metric: str | None = None,
    against: str | None = None,
) -> dict:
    """Everything the table of ``metric`` (default: the grid's table metric) shows, as JSON;
    every other system is tested against method ``against`` (default: the XENT control)."""
    metric = metric or grid.table_metric
    if metric not in grid.scored:
        scored = ", ".join(grid.scored)
        raise GridError(f"no table of {metric!r}: this grid's runs are scored in {scored}")
    against = against or grid.control.key
    if against not in {method.key for method in grid.methods}:
        keys = ", ".join(method.key for method in grid.methods)
        raise GridError(f"no method {against!r} to test against: the methods are {keys}")
    systems, missing = collect(grid)
    settings = grid.evaluate
    beams = [int(b) for b in settings.get("beams", [1, 5, 10])]
    subsets = settings.get("gen_subsets", ["test"])
    control = next(system for system in systems if system.key == against)
    # the paper's scores are in the grid's table metric: none beside another metric's table
    paper_spec = grid.spec.get("paper", {}) if metric == grid.table_metric else {}
    cache: dict = {}
    rows = []
    for system in systems:
        cells = {}
        for subset in subsets:
            for beam in beams:
                entry = summary(values(system, subset, beam, metric))
                if entry is not None and system is not control:
                    entry["test"] = tests(system, control, subset, beam, metric, n_samples, cache)
                cells[f"{subset}/{beam}"] = entry
        speeds = {str(beam): speed(system, beam) for beam in (min(beams), max(beams))}
        paper = paper_spec.get("scores", {}).get(system.key, {})
        rows.append(
            {"key": system.key, "name": system.name, "cells": cells, "ms_per_sentence": speeds,
             "paper": paper, "seeds": sorted(s for s in system.runs if s is not None)}
        )  # fmt: skip
    return {
        "grid": str(grid.path), "workdir": str(grid.workdir), "metric": metric,
        "label": label(metric, systems), "beams": beams,
        "subsets": subsets, "subset_names": settings.get("subset_names", {}),
        "control": control.key, "rows": rows, "missing": missing, "tuning": tuning(grid),
        "machines": machines(grid), "paper_source": paper_spec.get("source"),
        "bootstrap_samples": n_samples, "seed_pairing": __doc__.split("\n\n")[1].strip(),
    }  # fmt: skip


def tuning(grid: Grid) -> list[dict]:
    """Every candidate, its validation score (None: not tuned or not run) and the choice."""
    scores = {
        (cell.method, cell.candidate): tune_score(grid, cell)
        for cell in all_cells(grid)
        if cell.kind == "tune"
    }
    lines = []
    for method in grid.methods:
        path = choice_path(grid, method.key)
        chosen = None
        if path.exists():
            chosen = json.loads(path.read_text(encoding="utf-8"))["candidate"]
        for candidate, flags in method.candidates.items():
            lines.append(
                {"method": method.key, "candidate": candidate, "flags": flags,
                 "score": scores.get((method.key, candidate)), "chosen": candidate == chosen,
                 "tuned": len(method.candidates) > 1}
            )  # fmt: skip
    return lines


def machines(grid: Grid) -> list[dict]:
    """The machines that scored the test sets (decoding speed depends on them)."""
    seen = []
    for cell in all_cells(grid):
        marker = read_marker(cell.folder, "test") if cell.evaluated else None
        if marker and marker.get("machine") and marker["machine"] not in seen:
            seen.append(marker["machine"])
    return seen
