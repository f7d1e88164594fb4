"""Spreading a grid over sessions on fresh machines (``grid.py run --record RECORD``): the work
dir and its checkpoints are lost between sessions, the committed record (comparison.record)
is not.

Before running, the work dir is seeded from the record: each cell the record holds finished
(its markers, trimmed log, results with per-sentence statistics), the tuning choices, and the
data marker where the data are here; a cell the work dir has a phase of is kept as it is. The
start is the exception: while a cell after it is not finished, its checkpoint is needed, so it
is trained again here and its test scores (the table metric, every test set and beam) must
equal the record's to the last digit, or the run stops (the fine-tunings of two sessions would
not share one start) and the record is left as it was. After each cell that ran, the cell and
the choices are exported to the record, so a session that ends mid-grid loses at most the cell
in progress.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

from comparison import record
from comparison import table as tables
from comparison.grid import Cell, Grid, GridError, all_cells
from comparison.runner import marker_path, say, unfinished

ROW_PATHS = ("checkpoint", "data")  # written absolute by evaluate.py, relative in a record


def take_up(grid: Grid, to: Path) -> Callable[[Cell], None]:
    """Check the record, seed the work dir from it and check a start the work dir has; returns
    what the runner calls after each cell that ran."""
    root = to.resolve()
    check_record(grid, root)
    if record.is_record(root):
        taken = seed(grid, root)
        found = f"{len(taken)} finished cells: " + ", ".join(taken) if taken else "no cell to take"
        say(f"from the record {to}, {found}")
        check_start(grid, root)
    return partial(after_cell, grid, root)


def check_record(grid: Grid, root: Path) -> None:
    """A record of this grid file (or a folder to make one in)."""
    record.check_target(grid, root)
    if record.is_record(root):
        name = json.loads((root / record.RECORD_FILE).read_text(encoding="utf-8"))["grid"]
        if name != record.grid_name(grid):
            raise GridError(f"{root} is the record of {name}, not of {record.grid_name(grid)}")


# ---------------------------------------------------------------------- seeding


def seed(grid: Grid, root: Path) -> list[str]:
    """Copy the record's finished cells the work dir lacks into it; returns their names. The
    start last, and only when no cell needs its checkpoint any more."""
    start, *rest = all_cells(grid)
    taken = [cell.name for cell in rest if seed_cell(grid, cell, root)]
    if not unfinished(grid):
        taken[:0] = [start.name] if seed_cell(grid, start, root) else []
    elif record_finished(grid, start, root) and not record.phases(start.folder, start):
        say("start: to be trained again here (the cells left need its checkpoint), then "
            "checked against the record's test scores")  # fmt: skip
    seed_extras(grid, root)
    return taken


def in_record(grid: Grid, cell: Cell, root: Path) -> Path:
    return root / cell.folder.relative_to(grid.workdir)


def record_finished(grid: Grid, cell: Cell, root: Path) -> bool:
    return record.phases(in_record(grid, cell, root), cell) == list(cell.phases)


def seed_cell(grid: Grid, cell: Cell, root: Path) -> bool:
    """Copy a cell the record has finished and the work dir has no phase of (nor a lock)."""
    if not record_finished(grid, cell, root):
        return False
    if record.phases(cell.folder, cell) or (cell.folder / ".lock").exists():
        return False
    shutil.copytree(in_record(grid, cell, root), cell.folder, dirs_exist_ok=True)
    results = cell.folder / "results.jsonl"
    if results.exists():
        lines = results.read_text(encoding="utf-8").splitlines()
        rows = [localize(json.loads(line), grid.workdir) for line in lines if line.strip()]
        results.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return True


def localize(row: dict, workdir: Path) -> dict:
    """A record's row with the checkpoint and data paths in this work dir, as evaluate.py
    writes them (a rerun's row replaces it); ``statistics`` and ``chrf_statistics`` stay relative
    to the work dir."""
    paths = {
        key: str(workdir / row[key])
        for key in ROW_PATHS
        if isinstance(row.get(key), str) and not Path(row[key]).is_absolute()
    }
    return {**row, **paths}


def seed_extras(grid: Grid, root: Path) -> None:
    """The tuning choices the work dir lacks, and the data marker where the data are here."""
    extras = list(root.glob("tune/*/choice.json"))
    if grid.bin.is_dir():
        extras.append(marker_path(root, "data"))
    for path in extras:
        target = grid.workdir / path.relative_to(root)
        if path.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


# ---------------------------------------------------------------------- the start


def start_scores(grid: Grid, base: Path) -> dict[str, float | None]:
    """'subset beam N' -> the table metric of the start scored in ``base`` (work dir or
    record); empty when its test sets are not scored there."""
    start = Cell("start", "start", base / "start")
    rows = tables.read_rows(start, base)
    if not rows:
        return {}
    metric, settings = grid.table_metric, grid.evaluate
    return {
        f"{subset} beam {beam}": rows.get(subset, {}).get(int(beam), {}).get(metric)
        for subset in settings.get("gen_subsets", ["test"])
        for beam in settings.get("beams", [1, 5, 10])
    }


def check_start(grid: Grid, root: Path) -> bool:
    """The work dir's start must score what the record's did, exactly: the record's cells were
    fine-tuned from that one. False when one of them is not scored (nothing to compare)."""
    here, there = start_scores(grid, grid.workdir), start_scores(grid, root)
    if not here or not there:
        return False
    differ = [key for key in there if here.get(key) != there[key]]
    if differ:
        key, label = differ[0], tables.LABELS[grid.table_metric]
        raise GridError(
            f"start: the start trained here does not reproduce the record's: {key} {label} "
            f"{here.get(key)!r} here, {there[key]!r} in {root / 'start' / 'results.jsonl'}"
            f"{f' ({len(differ) - 1} more differ)' if len(differ) > 1 else ''}. The cells "
            f"fine-tuned here would not start from the record's start: stopped, the record is "
            f"left as it was (to try again, remove {grid.workdir / 'start'})"
        )
    return True


# ---------------------------------------------------------------------- after a cell


def after_cell(grid: Grid, root: Path, cell: Cell) -> None:
    """Export a cell that ran to the record at once; a start trained again is checked against
    the record's instead (which is kept: its cells were fine-tuned from it)."""
    if cell.kind == "start" and record_finished(grid, cell, root):
        if check_start(grid, root):
            say(f"start: reproduces the record's test scores exactly ({root})")
        return
    done = record.export(grid, root, [cell])
    if done.skipped:
        say(f"{cell.name}: not recorded: " + "; ".join(done.skipped))
    else:
        say(f"{cell.name}: recorded in {root}")
