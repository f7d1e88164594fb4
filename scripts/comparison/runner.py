"""Running a grid's cells: markers (a finished phase is skipped), locks (two runners on two
cores never take the same cell), the tuning choice, and the rule that no test set is scored
for a method before its choice is recorded."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from plot import read_training_log
from run_recipe import RecipeError, run_streaming

from comparison.grid import (
    Cell,
    Grid,
    GridError,
    all_cells,
    evaluate_commands,
    portable,
    start_checkpoint,
    train_command,
)


class NotReady(GridError):
    """A cell whose inputs (the data, the start, the tuning choice) are not there yet."""


class Busy(GridError):
    """A cell another runner is working on."""


# ---------------------------------------------------------------------- markers


def marker_path(folder: Path, phase: str) -> Path:
    return folder / ".done" / f"{phase}.json"


def read_marker(folder: Path, phase: str) -> dict | None:
    path = marker_path(folder, phase)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_json(path: Path, record: dict) -> None:
    """Written whole or not at all (a runner killed mid-write leaves the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)


def write_marker(
    grid: Grid, folder: Path, phase: str, commands: list[list[str]], seconds: float
) -> None:
    record = {
        "commands": portable(commands, grid.workdir),
        "seconds": round(seconds, 1),
        "finished": time.ctime(),
        "machine": machine(),
    }
    write_json(marker_path(folder, phase), record)


def finished(cell: Cell) -> bool:
    """Every phase of the cell is marked done (a cell taken from a record has no checkpoint)."""
    return all(read_marker(cell.folder, phase) is not None for phase in cell.phases)


def needs_checkpoint(grid: Grid, cell: Cell) -> bool:
    """Whether the cell's trained model is still to be used: for its own test sets or, the
    start's, by a cell of the grid not finished yet. A marked training whose checkpoint is
    needed and gone is run again."""
    if cell.kind == "tune":
        return False
    if read_marker(cell.folder, "test") is None:
        return True
    return cell.kind == "start" and bool(unfinished(grid))


def left_to_do(grid: Grid, cell: Cell) -> bool:
    """A phase not done, or a checkpoint to train again."""
    needed = needs_checkpoint(grid, cell)
    return not finished(cell) or (needed and not trained_checkpoint(grid, cell).exists())


def trained_checkpoint(grid: Grid, cell: Cell) -> Path:
    return cell.checkpoints / grid.evaluate.get("checkpoint", "checkpoint_best.pt")


def unfinished(grid: Grid) -> list[Cell]:
    """The cells after the start that are not finished: what still needs the start."""
    return [cell for cell in all_cells(grid) if cell.kind != "start" and not finished(cell)]


def same_commands(marker: dict, commands: list[list[str]], grid: Grid) -> bool:
    return portable(marker["commands"], grid.workdir) == portable(commands, grid.workdir)


def machine() -> dict:
    """What ran a phase: named beside the decoding speeds."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        gpu = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": gpu or None,
        "torch": package_version("torch"),
        "python": platform.python_version(),
    }


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def cell_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` while working on a cell; a lock left by a dead process is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = json.loads(lock.read_text(encoding="utf-8") or "{}")
            if holder.get("host") == me["host"] and not alive(holder.get("pid", -1)):
                lock.unlink(missing_ok=True)
                continue
            raise Busy(f"{folder} is being worked on by process {holder}") from None
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(me))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------- the tuning choice


def choice_path(grid: Grid, method: str) -> Path:
    return grid.workdir / "tune" / method / "choice.json"


def tune_score(grid: Grid, cell: Cell) -> float | None:
    """The best validation value of the tuning metric in a finished tuning run's log."""
    if read_marker(cell.folder, "train") is None:
        return None
    metric = grid.spec["tune"].get("metric", "bleu")
    log = read_training_log(cell.folder / "train.log", cell.name)
    values = [record[metric] for record in log.valid if metric in record]
    if not values:
        raise GridError(f"{cell.name}: no validation '{metric}' in {cell.folder / 'train.log'}")
    return min(values) if metric == "loss" else max(values)


def choose(grid: Grid, method_key: str) -> dict | None:
    """Record (and return) the method's choice once every candidate's tuning run finished; a
    single candidate is chosen without tuning. None while tuning runs are missing."""
    method = grid.method(method_key)
    metric = grid.spec["tune"].get("metric", "bleu")
    if len(method.candidates) == 1:
        (candidate,) = method.candidates
        scores: dict[str, float | None] = {candidate: None}
    else:
        cells = [c for c in all_cells(grid) if c.kind == "tune" and c.method == method_key]
        scores = {cell.candidate: tune_score(grid, cell) for cell in cells}
        if any(score is None for score in scores.values()):
            return None
        pick = min if metric == "loss" else max
        candidate = pick(scores, key=lambda name: scores[name])
    choice = {
        "method": method_key,
        "candidate": candidate,
        "flags": method.candidates[candidate],
        "metric": f"validation {metric}, best of the run",
        "scores": scores,
        "candidates": method.candidates,
        "tune_budget": grid.spec["tune"]["budget"],
    }
    path = choice_path(grid, method_key)
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if old is None or {k: old.get(k) for k in choice} != choice:
        write_json(path, {**choice, "chosen": time.ctime()})
    return choice


def recorded_choice(grid: Grid, method_key: str) -> dict | None:
    """The recorded choice, if it is one made among the grid's present candidates."""
    path = choice_path(grid, method_key)
    if not path.exists():
        return None
    choice = json.loads(path.read_text(encoding="utf-8"))
    if choice.get("candidates") != grid.method(method_key).candidates:
        return None
    return choice


# ---------------------------------------------------------------------- phases of a cell


def cell_flags(grid: Grid, cell: Cell) -> list[str]:
    if cell.kind == "start":
        return grid.spec["start"]
    method = grid.method(cell.method)
    if cell.kind == "tune":
        return method.candidates[cell.candidate]
    choice = choose(grid, cell.method)
    if choice is None:
        raise NotReady(f"{cell.name}: {cell.method}'s tuning has not finished (run --only tune)")
    return choice["flags"]


def check_ready(grid: Grid, cell: Cell) -> None:
    if not grid.bin.is_dir():
        raise NotReady(f"{cell.name}: no data in {grid.bin}: run the data step first")
    if cell.kind != "start":
        start = grid.workdir / "start"
        if read_marker(start, "train") is None:
            raise NotReady(f"{cell.name}: starts from the XENT start: run --only start first")
        if not start_checkpoint(grid).exists():
            raise NotReady(
                f"{cell.name}: the XENT start's checkpoint {start_checkpoint(grid)} is gone (a "
                "work dir taken up from a record): run --only start to train it again"
            )


def check_test_allowed(grid: Grid, cell: Cell) -> None:
    """No test set is scored for a method before its tuning choice is recorded, and only on a
    run trained with that choice."""
    if cell.kind == "start":
        return
    if cell.kind == "tune":
        raise GridError(f"{cell.name}: tuning runs are scored on validation only")
    choice = recorded_choice(grid, cell.method)
    if choice is None:
        raise GridError(
            f"{cell.name}: refusing to score the test sets: {cell.method}'s tuning choice is "
            f"not recorded ({choice_path(grid, cell.method)})"
        )
    trained = read_marker(cell.folder, "train")
    expected = [train_command(grid, cell, choice["flags"], cpu=False)]
    if trained is None or not same_commands(trained, expected, grid):
        raise GridError(
            f"{cell.name}: refusing to score the test sets: the run was not trained with "
            f"{cell.method}'s recorded choice ({choice['candidate']})"
        )


def train_phase(grid: Grid, cell: Cell, cpu: bool, dry_run: bool) -> bool:
    """Train the cell unless done; True when it is trained."""
    commands = [train_command(grid, cell, cell_flags(grid, cell), cpu)]
    done = read_marker(cell.folder, "train")
    checkpoint = trained_checkpoint(grid, cell)
    if done is not None and (checkpoint.exists() or not needs_checkpoint(grid, cell)):
        if not same_commands(done, commands, grid):
            raise GridError(
                f"{cell.name}: trained with other settings than the grid (or the tuning choice) "
                f"now gives; remove {cell.folder} to redo it"
            )
        say(f"{cell.name}: trained already, skipped")
        return True
    return run_phase(grid, cell, "train", commands, dry_run)


def test_phase(grid: Grid, cell: Cell, cpu: bool, dry_run: bool) -> bool:
    check_test_allowed(grid, cell)
    commands = evaluate_commands(grid, cell, cpu)
    done = read_marker(cell.folder, "test")
    checkpoint = Path(commands[0][commands[0].index("--checkpoint") + 1])
    if done is not None and same_commands(done, commands, grid):
        scored = marker_path(cell.folder, "test").stat().st_mtime
        if not checkpoint.exists() or checkpoint.stat().st_mtime <= scored:
            say(f"{cell.name}: test sets scored already, skipped")
            return True
    return run_phase(grid, cell, "test", commands, dry_run)


def run_phase(grid: Grid, cell: Cell, phase: str, commands: list[list[str]], dry_run: bool) -> bool:
    log = cell.folder / f"{phase}.log"
    if dry_run:
        for command in commands:
            say(f"{cell.name}: would run: {' '.join(command)}")
        return False
    say(f"{cell.name}: {phase} (output also in {log})")
    started = time.time()
    try:
        for command in commands:
            run_streaming(command, log)
    except RecipeError as error:
        raise GridError(f"{cell.name}: {error}") from None
    write_marker(grid, cell.folder, phase, commands, time.time() - started)
    say(f"{cell.name}: {phase} finished in {(time.time() - started) / 60:.1f} min")
    return True


def run_cell(grid: Grid, cell: Cell, cpu: bool, dry_run: bool = False) -> list[str]:
    """Run what the cell has left; returns the phases run in this call."""
    if left_to_do(grid, cell):
        check_ready(grid, cell)
    if cell.kind == "final":
        cell_flags(grid, cell)
    before = {phase: read_marker(cell.folder, phase) for phase in cell.phases}
    with cell_lock(cell.folder):
        trained = train_phase(grid, cell, cpu, dry_run)
        if cell.kind == "tune" and trained:
            choose(grid, cell.method)
        if cell.evaluated and trained:
            test_phase(grid, cell, cpu, dry_run)
    return [phase for phase in cell.phases if read_marker(cell.folder, phase) != before[phase]]


def run_data(grid: Grid, dry_run: bool) -> None:
    data = grid.spec["data"]
    if not data.get("command"):
        if not grid.bin.is_dir():
            raise GridError(f"no data in {grid.bin} and no data command in {grid.path}")
        return
    commands = [[sys.executable, *data["command"]]]
    done = read_marker(grid.workdir, "data")
    if done is not None and grid.bin.is_dir():
        say("data: done already, skipped")
        return
    with cell_lock(grid.workdir / ".data"):
        cell = Cell("data", "data", grid.workdir)
        run_phase(grid, cell, "data", commands, dry_run)


# ---------------------------------------------------------------------- the grid


def run_grid(
    grid: Grid,
    cells: Sequence[Cell],
    cpu: bool,
    only: bool,
    dry_run: bool,
    after_cell: Callable[[Cell], None] | None = None,
) -> list[str]:
    """Run the cells in order; with ``only`` a cell that is not ready is an error, otherwise it
    is left for later; ``after_cell`` is called on each cell that ran a phase, once it is
    unlocked. Returns what was left, one line a cell."""
    if not only or any(cell.kind == "start" for cell in cells):
        run_data(grid, dry_run)
    left = []
    for cell in cells:
        try:
            ran = run_cell(grid, cell, cpu, dry_run)
        except (NotReady, Busy) as reason:
            if only and isinstance(reason, NotReady) and not dry_run:
                raise
            say(f"{cell.name}: left for later: {reason}")
            left.append(str(reason))
            continue
        if ran and after_cell is not None:
            after_cell(cell)
    if not dry_run and read_marker(grid.workdir / "start", "train") is not None:
        for method in grid.methods:
            choose(grid, method.key)
    return left


def cell_state(grid: Grid, cell: Cell) -> str:
    if (cell.folder / ".lock").exists():
        return "running (or killed: a stale lock is taken over)"
    if read_marker(cell.folder, "train") is None:
        return "not trained"
    if not cell.evaluated:
        return f"tuned: validation {tune_score(grid, cell):.2f}"
    if read_marker(cell.folder, "test") is None:
        return "trained, test sets not scored"
    return "done"


def say(message: str) -> None:
    print(f"grid: {message}", flush=True)
