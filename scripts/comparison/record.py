"""A grid's record: the small outputs of its cells, laid out as in the work dir, from which
``grid.py table`` and ``status`` rebuild everything they show, made to be committed
(development machines are not kept between sessions).

Per cell with a finished phase: the phase markers (``.done/*.json``, as they are: commands and
machine); the training log trimmed to what the table, the tuning scores and the plots read
(fairseq's JSON ``train_inner``, ``train`` and ``valid`` lines, and the runner's ``===
run_recipe`` line of each sitting); for an evaluated cell, its ``results.jsonl`` with the paths
under the work dir made relative to it and, instead of the hypotheses, each row's per-sentence
statistics (comparison.sentences: its metric's, and chrF's for a row with a chrF score) under
``CELL/stats/``. Beside them the tuning choices (``tune/METHOD/choice.json``), the data marker
and ``record.json``, which lists the cells the record holds (``holds``: their finished phases),
says what the last export took and left, and makes ``run`` refuse the folder.

Never the checkpoints, the data, the references or the hypotheses: the significance tests need
only the statistics, and the hypotheses are test-set text (close to Gigaword's licensed
headlines; about 20 KB a file there, 3 beams a cell) that nothing rebuilt from the record
reads.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plot import parse_log_line

from comparison import sentences
from comparison.grid import REPO, Cell, Grid, GridError, all_cells
from comparison.runner import marker_path, write_json

RECORD_FILE = "record.json"
LOG_TAGS = ("train_inner", "train", "valid")
SITTING = "=== run_recipe"
PATH_KEYS = ("checkpoint", "data", "references")
STATS = "stats"
LEFT_OUT = "checkpoints, data, references, hypotheses, full logs, locks"


@dataclass
class Export:
    """What one export took (one line a cell) and what it left, with why."""

    exported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def is_record(folder: Path) -> bool:
    return (folder / RECORD_FILE).exists()


# ---------------------------------------------------------------------- pieces


def log_tag(line: str) -> str | None:
    """The tag of a fairseq JSON progress line (``... | INFO | train_inner | {...}``)."""
    parts = line.split(" | ")
    if len(parts) >= 4 and parts[3].lstrip().startswith("{"):
        return parts[2].strip()
    return None


def trim_log(lines: Iterable[str]) -> list[str]:
    """The lines of a training log that anything built from a record reads."""
    return [
        line
        for line in lines
        if line.startswith(SITTING) or log_tag(line) in LOG_TAGS or parse_log_line(line) is not None
    ]


def relative(value: object, workdir: Path) -> object:
    """A path under the work dir as a path relative to it; anything else as it is."""
    if isinstance(value, str) and Path(value).is_absolute():
        path = Path(value)
        if path.is_relative_to(workdir):
            return path.relative_to(workdir).as_posix()
    return value


def record_row(row: dict, workdir: Path, statistics: dict[str, str]) -> dict:
    """An evaluate.py row for the record: no hypotheses, paths relative to the record's root,
    ``statistics`` (and ``chrf_statistics``) naming the per-sentence statistics files
    (relative to it as well)."""
    kept = {
        key: relative(value, workdir) if key in PATH_KEYS else value
        for key, value in row.items()
        if key != "hypotheses"
    }
    return {**kept, **statistics}


def row_statistics(row: dict, kind: str) -> dict:
    """The per-sentence statistics of a work dir's row, from its hypotheses and references."""
    for key in ("hypotheses", "references"):
        if not Path(row[key]).is_file():
            raise GridError(
                f"{row['name']} beam {row['beam']} on {row['gen_subset']}: no {key} file "
                f"{row[key]} (the export needs the text once, to compute the statistics)"
            )
    return sentences.of_text(row, kind)


def phases(folder: Path, cell: Cell) -> list[str]:
    return [phase for phase in cell.phases if marker_path(folder, phase).exists()]


# ---------------------------------------------------------------------- a cell


def export_results(grid: Grid, cell: Cell, target: Path, root: Path) -> int:
    """The cell's rows and their statistics; returns how many rows."""
    lines = (cell.folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    out = []
    for row in rows:
        statistics = {}
        if "hypotheses" in row:
            for kind in sentences.kinds(row):
                name = sentences.file_name(row["gen_subset"], int(row["beam"]), kind)
                path = target / STATS / name
                sentences.write(path, row_statistics(row, kind))
                statistics[sentences.statistics_key(kind)] = path.relative_to(root).as_posix()
        else:
            for key in sentences.STATISTICS_KEYS:
                if key in row:
                    statistics[key] = copy_statistics(grid.workdir / row[key], grid.workdir, root)
        out.append(record_row(row, grid.workdir, statistics))
    text = "".join(json.dumps(row) + "\n" for row in out)
    (target / "results.jsonl").write_text(text, encoding="utf-8")
    return len(out)


def copy_statistics(source: Path, workdir: Path, root: Path) -> str:
    """A row's statistics file (either kind) taken from a record earlier (comparison.resume),
    copied to the same place under ``root``; returns that place, relative to it."""
    name = source.relative_to(workdir).as_posix()
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, root / name)
    return name


def export_cell(grid: Grid, cell: Cell, root: Path) -> tuple[bool, str]:
    """(exported, the line saying what was taken or why not)."""
    target = root / cell.folder.relative_to(grid.workdir)
    if (cell.folder / ".lock").exists():
        return False, f"{cell.name}: being run (or a stale lock): left as the record has it"
    done = phases(cell.folder, cell)
    if not done:
        return False, f"{cell.name}: not trained"
    held = phases(target, cell)
    if set(held) - set(done):
        return False, (
            f"{cell.name}: the record holds {'+'.join(held)}, the work dir only "
            f"{'+'.join(done)}: the record's kept"
        )
    shutil.rmtree(target, ignore_errors=True)
    for phase in done:
        destination = marker_path(target, phase)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(marker_path(cell.folder, phase), destination)
    taken = [f".done/{phase}.json" for phase in done]
    log = cell.folder / "train.log"
    if log.exists():
        with log.open(encoding="utf-8", errors="replace") as handle:
            kept = trim_log(handle)
        (target / "train.log").write_text("".join(kept), encoding="utf-8")
        taken.append(f"train.log ({len(kept)} lines)")
    if "test" in done:
        taken.append(f"results.jsonl ({export_results(grid, cell, target, root)} rows, stats)")
    elif cell.evaluated:
        taken.append("test sets not scored yet")
    return True, f"{cell.name}: " + ", ".join(taken)


# ---------------------------------------------------------------------- the grid


def check_target(grid: Grid, root: Path) -> None:
    if is_record(grid.workdir):
        raise GridError(f"{grid.workdir} is a record already ({RECORD_FILE}): export a work dir")
    if root == grid.workdir or grid.workdir in root.parents:
        raise GridError(f"export to a folder outside the work dir, not {root}")
    if root.exists() and any(root.iterdir()) and not is_record(root):
        raise GridError(f"{root} holds other files and no {RECORD_FILE}: not a record")


def grid_name(grid: Grid) -> str:
    """The grid file as a record names it: from the repository root when it is in it."""
    grid_file = grid.path.resolve()
    if grid_file.is_relative_to(REPO):
        return grid_file.relative_to(REPO).as_posix()
    return str(grid_file)


def export(grid: Grid, to: Path, cells: Sequence[Cell] | None = None) -> Export:
    """Copy the grid's small outputs to the record ``to`` (made or updated: the cells the work
    dir has finished replace the record's, the others are left as they are): those of
    ``cells`` (default: every cell), the tuning choices and the data marker."""
    root = to.resolve()
    check_target(grid, root)
    report = Export()
    for cell in all_cells(grid) if cells is None else cells:
        taken, line = export_cell(grid, cell, root)
        (report.exported if taken else report.skipped).append(line)
    extras = [*grid.workdir.glob("tune/*/choice.json"), *grid.workdir.glob(".done/*.json")]
    for path in sorted(extras):
        destination = root / path.relative_to(grid.workdir)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        report.exported.append(path.relative_to(grid.workdir).as_posix())
    record = {
        "grid": grid_name(grid),
        "holds": held_phases(grid, root),
        "last_export": {"from": str(grid.workdir), "finished": time.ctime()},
        "exported": report.exported,
        "skipped": report.skipped,
        "never": LEFT_OUT,
    }
    write_json(root / RECORD_FILE, record)
    return report


def held_phases(grid: Grid, root: Path) -> dict[str, str]:
    """Cell name -> the finished phases the record holds (train, train+test), every export's."""
    held = {}
    for cell in all_cells(grid):
        done = phases(root / cell.folder.relative_to(grid.workdir), cell)
        if done:
            held[cell.name] = "+".join(done)
    return held


def size(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
