"""A grid file (scripts/grids/*.json) and the cells it expands to.

A grid is a JSON object; ``{workdir}`` in any string is replaced by the absolute workdir and
relative paths are relative to the repository root:

- ``data``: ``{"command": [...], "bin": "..."}``: the Python arguments that prepare the data
  (optional: without it the binarised folder must exist) and the folder they produce;
- ``train``: fairseq-train flags of every training (optimizer, batch, ``--seed`` of the start);
- ``model``: the architecture flags;
- ``start``: the flags of the XENT start (criterion, lr, epochs, validation metric);
- ``finetune``: flags shared by every fine-tuning (validation metric, best checkpoint);
- ``budget``: the fine-tunings' budget (``["--max-epoch", "8"]``), the same for every method;
- ``tune``: ``{"budget": [...], "seed": 1, "metric": "bleu"}``: the short budget and seed of
  the tuning runs and the validation metric that picks a candidate (its best value in the
  run's log; ``loss`` is minimised, anything else maximised);
- ``seeds``: the seeds of the fine-tunings (``--seed``: samples, dropout, batch order);
- ``methods``: ``{key: {"name": ..., "control": true|false, "candidates": {name: [flags]}}}``
  in table order; exactly one is the control (more XENT), whose runs every other method's
  runs are tested against;
- ``evaluate``: ``checkpoint``, ``beams``, ``metric`` (bleu or rouge), ``table_metric`` (bleu,
  chrf, rouge1, rouge2, rougeL: the table's by default; evaluate.py scores chrF with BLEU and
  ``grid.py table --metric`` builds the table of another), ``gen_subsets``, ``subset_names``,
  ``references`` (subset -> text), ``batch_size``, and the text evaluate.py scores
  (``sentencepiece_model``, or ``post_process``, ``detok``, ``chrf_word_order``: a subword
  model's detokenised text);
- ``paper`` (optional): ``{"source": ..., "scores": {"start" or method: {beam: score}}}``.

Cells: ``start`` (the XENT start), ``tune:METHOD:CANDIDATE`` (a tuning run) and
``METHOD:seedS`` (a fine-tuning with the chosen candidate).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from run_recipe import substitute, text_flags

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "fairseq_mixer"
BIN = Path(sys.executable).parent
REQUIRED_KEYS = (
    "data", "train", "model", "start", "finetune", "budget", "tune", "seeds", "methods",
    "evaluate",
)  # fmt: skip
BUDGET_FLAGS = ("--max-epoch", "--max-update")
RUNNER_FLAGS = ("--seed", "--save-dir", "--finetune-from-model", "--cpu")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
SCORED = {"bleu": ("bleu", "chrf"), "rouge": ("rouge1", "rouge2", "rougeL")}
TABLE_METRICS = tuple(metric for metrics in SCORED.values() for metric in metrics)


class GridError(Exception):
    """A problem with the grid file, its cells or a run; reported as one message."""


@dataclass(frozen=True)
class Method:
    key: str
    name: str
    control: bool
    candidates: dict[str, list[str]]


@dataclass(frozen=True)
class Cell:
    """One unit of work: a training run, with its test evaluation where it has one."""

    name: str
    kind: str  # "start", "tune" or "final"
    folder: Path
    method: str | None = None
    candidate: str | None = None
    seed: int | None = None

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def evaluated(self) -> bool:
        """Tuning runs are scored on validation by their log; the others on the test sets."""
        return self.kind != "tune"

    @property
    def phases(self) -> tuple[str, ...]:
        return ("train", "test") if self.evaluated else ("train",)


@dataclass(frozen=True)
class Grid:
    path: Path
    workdir: Path
    spec: dict
    methods: list[Method]

    @property
    def bin(self) -> Path:
        return REPO / self.spec["data"]["bin"]

    @property
    def seeds(self) -> list[int]:
        return [int(seed) for seed in self.spec["seeds"]]

    @property
    def control(self) -> Method:
        return next(method for method in self.methods if method.control)

    @property
    def evaluate(self) -> dict:
        return self.spec["evaluate"]

    @property
    def table_metric(self) -> str:
        default = "bleu" if self.evaluate.get("metric", "bleu") == "bleu" else "rouge2"
        return self.evaluate.get("table_metric", default)

    @property
    def scored(self) -> tuple[str, ...]:
        """The metrics evaluate.py writes for this grid's rows: BLEU and chrF, or the ROUGEs."""
        return SCORED[self.evaluate.get("metric", "bleu")]

    def method(self, key: str) -> Method:
        for method in self.methods:
            if method.key == key:
                return method
        raise GridError(f"no method {key!r} in {self.path}")


# ---------------------------------------------------------------------- reading


def load_grid(path: Path, workdir: Path) -> Grid:
    """The grid file, checked, with ``{workdir}`` substituted."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise GridError(f"cannot read the grid {path}: {error}") from None
    missing = [key for key in REQUIRED_KEYS if key not in spec]
    if missing:
        raise GridError(f"{path}: missing {', '.join(missing)}")
    spec = substitute(spec, workdir.resolve())
    methods = [read_method(path, key, value) for key, value in spec["methods"].items()]
    check_grid(path, spec, methods)
    return Grid(path=path, workdir=workdir.resolve(), spec=spec, methods=methods)


def read_method(path: Path, key: str, value: dict) -> Method:
    if not NAME.match(key) or not isinstance(value, dict) or not value.get("candidates"):
        raise GridError(f"{path}: method {key!r} needs a plain name and some 'candidates'")
    for name, flags in value["candidates"].items():
        if not NAME.match(name):
            raise GridError(f"{path}: {key} candidate {name!r}: use letters, digits, _ . -")
        check_flags(path, f"{key} candidate {name}", flags)
    return Method(
        key=key,
        name=value.get("name", key),
        control=bool(value.get("control", False)),
        candidates=dict(value["candidates"]),
    )


def check_flags(path: Path, where: str, flags: object, budget_allowed: bool = False) -> None:
    """Flags are strings; the budget and the seed are the runner's to set."""
    if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
        raise GridError(f"{path}: {where} must be a list of strings (command-line flags)")
    reserved = RUNNER_FLAGS if budget_allowed else RUNNER_FLAGS + BUDGET_FLAGS
    clash = [flag for flag in flags if flag in reserved]
    if clash:
        raise GridError(f"{path}: {where} sets {', '.join(clash)}, which the grid runner sets")


def check_grid(path: Path, spec: dict, methods: list[Method]) -> None:
    for key in ("model", "finetune"):
        check_flags(path, key, spec[key])
    check_flags(path, "start", spec["start"], budget_allowed=True)
    if not isinstance(spec["train"], list) or any(f in BUDGET_FLAGS for f in spec["train"]):
        raise GridError(f"{path}: train must be flags without a budget (see 'budget')")
    for where, budget in (("budget", spec["budget"]), ("tune.budget", spec["tune"].get("budget"))):
        if not isinstance(budget, list) or not any(flag in BUDGET_FLAGS for flag in budget):
            raise GridError(f"{path}: {where} must hold --max-epoch or --max-update")
    if [method.control for method in methods].count(True) != 1:
        raise GridError(f'{path}: exactly one method must be the control ("control": true)')
    if not spec["seeds"] or len(set(spec["seeds"])) != len(spec["seeds"]):
        raise GridError(f"{path}: seeds must be a non-empty list of distinct integers")
    scored = SCORED.get(spec["evaluate"].get("metric", "bleu"))
    if scored is None:
        raise GridError(f"{path}: evaluate.metric must be one of {', '.join(SCORED)}")
    metric = spec["evaluate"].get("table_metric")
    if metric is not None and metric not in scored:
        raise GridError(f"{path}: evaluate.table_metric must be one of {', '.join(scored)}")
    subsets = spec["evaluate"].get("gen_subsets", ["test"])
    missing = [s for s in subsets if s not in spec["evaluate"].get("references", {})]
    if missing:
        raise GridError(f"{path}: evaluate.references lacks {missing} (needed for significance)")


# ---------------------------------------------------------------------- cells


def all_cells(grid: Grid) -> list[Cell]:
    """Every cell in running order: the start, the tuning runs, then the fine-tunings seed by
    seed (a sitting that stops early leaves whole seeds of every method)."""
    work = grid.workdir
    cells = [Cell("start", "start", work / "start")]
    for method in grid.methods:
        if len(method.candidates) > 1:
            for candidate in method.candidates:
                cells.append(
                    Cell(
                        f"tune:{method.key}:{candidate}", "tune",
                        work / "tune" / method.key / candidate, method.key, candidate,
                    )
                )  # fmt: skip
    for seed in grid.seeds:
        for method in grid.methods:
            cells.append(
                Cell(
                    f"{method.key}:seed{seed}", "final", work / "runs" / method.key / f"seed{seed}",
                    method.key, seed=seed,
                )
            )  # fmt: skip
    return cells


def select_cells(cells: Sequence[Cell], only: Sequence[str]) -> list[Cell]:
    """The cells named in ``only``: a whole name (``mixer:seed2``) or a leading part of one
    (``tune``, ``tune:dad``, ``mixer``)."""
    chosen = []
    for pattern in only:
        matches = [c for c in cells if c.name == pattern or c.name.startswith(pattern + ":")]
        if not matches:
            names = ", ".join(c.name for c in cells)
            raise GridError(f"--only {pattern}: no such cell (the cells: {names})")
        chosen += [c for c in matches if c not in chosen]
    return [c for c in cells if c in chosen]


def start_checkpoint(grid: Grid) -> Path:
    """The checkpoint of the XENT start every tuning run and fine-tuning starts from."""
    name = grid.spec.get("finetune_from", "checkpoint_best.pt")
    return grid.workdir / "start" / "checkpoints" / name


def train_command(grid: Grid, cell: Cell, flags: Sequence[str], cpu: bool) -> list[str]:
    """fairseq-train for a cell; ``flags`` are the start's or a candidate's."""
    spec = grid.spec
    command = [
        str(BIN / "fairseq-train"), str(grid.bin), "--user-dir", str(PLUGIN), "--task", "mixer",
        "--log-format", "json", "--save-dir", str(cell.checkpoints),
        *spec["train"], *spec["model"],
    ]  # fmt: skip
    if cell.kind == "start":
        command += list(flags)
    else:
        budget = spec["tune"]["budget"] if cell.kind == "tune" else spec["budget"]
        seed = spec["tune"].get("seed", 1) if cell.kind == "tune" else cell.seed
        command += [
            *spec["finetune"], *flags, *budget, "--seed", str(seed),
            "--finetune-from-model", str(start_checkpoint(grid)),
        ]  # fmt: skip
    return [*command, "--cpu"] if cpu else command


def evaluate_commands(grid: Grid, cell: Cell, cpu: bool) -> list[list[str]]:
    """scripts/evaluate.py on each test subset, greedy and beam, keeping the hypotheses."""
    settings = grid.evaluate
    name = cell.name if cell.kind != "start" else "start"
    checkpoint = cell.checkpoints / settings.get("checkpoint", "checkpoint_best.pt")
    commands = []
    for subset in settings.get("gen_subsets", ["test"]):
        command = [
            sys.executable, str(REPO / "scripts" / "evaluate.py"), "--data", str(grid.bin),
            "--checkpoint", str(checkpoint), "--name", name,
            "--beams", *(str(beam) for beam in settings.get("beams", [1, 5, 10])),
            "--gen-subset", subset, "--metric", settings.get("metric", "bleu"),
            "--batch-size", str(settings.get("batch_size", 128)),
            "--reference-text", settings["references"][subset],
            "--out-json", str(cell.folder / "results.jsonl"),
            "--out-md", str(cell.folder / "results.md"),
            "--save-hypotheses", str(cell.folder / "hyps"),
        ]  # fmt: skip
        commands.append([*command, *text_flags(settings), *(["--cpu"] if cpu else [])])
    return commands


def portable(commands: Sequence[Sequence[str]], workdir: Path) -> list[list[str]]:
    """Commands as markers keep them and as sittings compare them: without ``--cpu`` (a CPU
    sitting and a GPU one run the same settings) and with the work dir, the venv and the
    repository as ``{workdir}``, ``{bin}`` and ``{repo}`` (a record's cells are taken up on
    other machines, in other folders). Idempotent: a marker is compared as written."""
    roots = [(str(workdir), "{workdir}"), (str(BIN), "{bin}"), (str(REPO), "{repo}")]
    roots.sort(key=lambda root: -len(root[0]))
    return [
        [placeholder(part, roots) for part in command if part != "--cpu"] for command in commands
    ]


def placeholder(part: str, roots: Sequence[tuple[str, str]]) -> str:
    for root, name in roots:
        if part == root or part.startswith(root + "/"):
            return name + part[len(root) :]
    return part
