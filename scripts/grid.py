"""The paper's comparison on our data: one XENT start, then XENT (the control), DAD, E2E and
MIXER with the same update budget from it, each tuned on validation, over several seeds.

    python scripts/grid.py run GRID --workdir work/X --record docs/records/X --cpu  # a session
    python scripts/grid.py run scripts/grids/multi30k_paper.json --workdir work/grid_m30k_paper \\
        [--only start|tune|tune:dad|dad:seed2,...] [--cpu] [--dry-run] [--record RECORD]
    python scripts/grid.py status GRID --workdir DIR
    python scripts/grid.py table GRID --workdir DIR [--metric chrf] [--against METHOD] \
        [--out-md F] [--out-json F] [--plots DIR]
    python scripts/grid.py export GRID --workdir DIR --to docs/records/GRID_STEM

``run`` runs every cell not finished yet, in order: the data, the XENT start (``start``), the
tuning runs (``tune:METHOD:CANDIDATE``, short, from the start; a method's candidate with the
best validation score is recorded in ``WORKDIR/tune/METHOD/choice.json``), then the
fine-tunings with the chosen settings, seed by seed (``METHOD:seedS``). Each cell trains with
fairseq-train (output teed to ``CELL/train.log``) and then, for the start and the
fine-tunings, scores the test sets greedy and with beam search (scripts/evaluate.py,
``CELL/results.jsonl`` and the hypotheses in ``CELL/hyps/``). A finished phase leaves
``CELL/.done/PHASE.json`` and is skipped; an interrupted training resumes from its
``checkpoint_last.pt``. No test set is scored for a method before its tuning choice is
recorded. A cell being run by another runner is skipped (``CELL/.lock``), so two runners, one
per core, can share a grid once the start is done; ``--only`` runs the named cells alone.

``--record RECORD`` spreads a grid over sessions on fresh machines (the work dir and its
checkpoints are lost, the committed record is not; comparison.resume): the work dir is first
seeded from the record, also on a dry run (its finished cells are skipped, the tuning choices
kept; the data step runs again), and each cell is exported to the record as soon as it
finishes. While cells are left that start from the XENT start, the start is trained again and
its test scores must equal the record's to the last digit: checked, not assumed; if they
differ, the run stops naming both and the record is left as it was. A record of another grid
file is refused.

``table`` builds the paper's table from the finished cells (skipping, and naming, the
missing ones): Markdown and JSON, and with ``--plots`` the figures. ``--metric`` builds it in
another metric than the grid's ``table_metric`` (a BLEU grid's rows have chrF as well, a ROUGE
grid's ROUGE-1, -2 and -L; any other metric is refused), with its paired bootstrap (chrF's is
sacreBLEU's, as BLEU's is) and its own files (``table.chrf.md``, ``table.chrf.json``,
``beam.chrf.png``) unless named. ``--against METHOD`` tests every other row
against that method instead of the XENT control (``table.against_METHOD.md``): two methods
compared head to head, seed s against seed s.

``export`` copies the small outputs of every cell with a finished phase into a record folder
in the cells' layout, to be committed: markers, tuning choices, results with per-sentence
statistics in place of the hypotheses, training logs trimmed to their progress lines; never
checkpoints, data, references or hypotheses (comparison.record). ``table`` and ``status``
read a record as they read the work dir; ``run`` refuses one as its work dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comparison import significance  # noqa: E402
from comparison.grid import (  # noqa: E402
    TABLE_METRICS,
    GridError,
    all_cells,
    load_grid,
    select_cells,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser("run", help="run the cells not finished yet")
    status = commands.add_parser("status", help="list every cell and its state")
    table = commands.add_parser("table", help="tables and plots from the finished cells")
    export = commands.add_parser("export", help="copy the small outputs to a record folder")
    for sub in (run, status, table, export):
        sub.add_argument("grid", type=Path, help="grid JSON (scripts/grids/)")
        sub.add_argument("--workdir", type=Path, required=True, help="where the grid is run")
    run.add_argument("--only", help="comma-separated cells or leading parts of their names")
    run.add_argument("--cpu", action="store_true", help="pass --cpu to fairseq")
    run.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    run.add_argument(
        "--record",
        type=Path,
        metavar="RECORD",
        help="take the finished cells from this record first, export each cell run to it",
    )
    table.add_argument(
        "--metric", choices=TABLE_METRICS, help="default: the grid's evaluate.table_metric"
    )
    table.add_argument(
        "--against",
        metavar="METHOD",
        help="test every other row against this method (default: the XENT control)",
    )
    other = " (.METRIC / .against_METHOD before the extension for another --metric / --against)"
    table.add_argument("--out-md", type=Path, help="default: WORKDIR/table.md" + other)
    table.add_argument("--out-json", type=Path, help="default: WORKDIR/table.json" + other)
    table.add_argument(
        "--plots", type=Path, metavar="DIR", help="write beam.png" + other + " and curves.png"
    )
    table.add_argument("--bootstrap-samples", type=int, default=significance.DEFAULT_SAMPLES)
    export.add_argument(
        "--to", type=Path, required=True, metavar="RECORD", help="e.g. docs/records/GRID_STEM"
    )
    return parser


def run(args: argparse.Namespace) -> None:
    from comparison.record import RECORD_FILE, is_record
    from comparison.resume import take_up
    from comparison.runner import run_grid, say

    if is_record(args.workdir):
        raise GridError(f"{args.workdir} is a record ({RECORD_FILE}), not a work dir to run in")
    grid = load_grid(args.grid, args.workdir)
    cells = all_cells(grid)
    only = [part.strip() for part in (args.only or "").split(",") if part.strip()]
    if only:
        cells = select_cells(cells, only)
    after = take_up(grid, args.record) if args.record is not None else None
    left = run_grid(grid, cells, args.cpu, bool(only), args.dry_run, after)
    if left:
        say("not done in this sitting:\n  " + "\n  ".join(left))
    else:
        say("every cell asked for is done")


def status(args: argparse.Namespace) -> None:
    from comparison.runner import cell_state

    grid = load_grid(args.grid, args.workdir)
    for cell in all_cells(grid):
        print(f"{cell.name:32} {cell_state(grid, cell)}")


def table(args: argparse.Namespace) -> None:
    from comparison import plots, report
    from comparison import table as tables

    grid = load_grid(args.grid, args.workdir)
    built = tables.build(grid, args.bootstrap_samples, args.metric, args.against)
    text = report.markdown(built)
    suffix = "" if built["metric"] == grid.table_metric else f".{built['metric']}"
    if built["control"] != grid.control.key:
        suffix += f".against_{built['control']}"
    out_md = args.out_md or grid.workdir / f"table{suffix}.md"
    out_json = args.out_json or grid.workdir / f"table{suffix}.json"
    for path, content in ((out_md, text), (out_json, json.dumps(built, indent=1) + "\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    if args.plots is not None:
        plots.plot_beams(built, args.plots / f"beam{suffix}.png")
        plots.plot_curves(grid, args.plots / "curves.png")
    print(text)
    if built["missing"]:
        print(f"grid: {len(built['missing'])} cells missing: " + ", ".join(built["missing"]))


def export(args: argparse.Namespace) -> None:
    from comparison import record

    grid = load_grid(args.grid, args.workdir)
    done = record.export(grid, args.to)
    print(f"exported to {args.to} ({record.size(args.to) / 1024:.0f} KiB in all):")
    print("  " + "\n  ".join(done.exported or ["nothing"]))
    if done.skipped:
        print("skipped:\n  " + "\n  ".join(done.skipped))
    print(f"never exported: {record.LEFT_OUT}")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        actions = {"run": run, "status": status, "table": table, "export": export}
        actions[args.action](args)
    except GridError as error:
        raise SystemExit(f"grid: {error}") from None


if __name__ == "__main__":
    main()
