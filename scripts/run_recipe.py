"""Run an experiment recipe end to end: data, XENT, MIXER, the XENT control, evaluation, plots.

    python scripts/run_recipe.py scripts/recipes/multi30k.json --workdir work/multi30k \\
        [--steps data,xent,mixer,xent_more,evaluate,plot] [--cpu] [--share-xent-from WORKDIR]
        [--seed N] [--set KEY=VALUE ...] [--show]

With --share-xent-from, the data and XENT steps are those of another workdir (linked, after
checking that they ran with this recipe's settings): a recipe that only changes the MIXER
settings, like recipes/multi30k_long.json, then starts from the very same XENT model.

--set changes one setting of the recipe (repeatable): ``--set mixer.lr=0.0001 --set
xent_more.lr=0.0001`` gives MIXER and its control another learning rate; a recipe file may
likewise name a ``base`` recipe and the settings it changes (recipe_overrides.py says how).
--show prints the recipe so resolved, ``{workdir}`` filled in, and runs nothing.

A recipe is a JSON object (``{workdir}`` in any string is replaced by the absolute --workdir;
relative paths are relative to the repository root, where every command runs):

- ``data``: ``{"command": [...], "bin": "{workdir}/data/bin"}``: the arguments of the Python
  interpreter that prepare the data (``["-m", "data_prep.prepare_multi30k", ...]``) and the
  binarised folder they produce;
- ``train``: fairseq-train flags shared by the three training steps (optimizer, batch, ...);
- ``model``: the architecture flags;
- ``xent``, ``mixer``, ``xent_more``: the flags of each training step (criterion, lr, epochs,
  validation metric). MIXER and ``xent_more`` (more XENT: the control with MIXER's budget)
  both start from ``{workdir}/xent/<finetune_from>`` with ``--finetune-from-model``;
- ``finetune_from``: the XENT checkpoint they start from (``checkpoint_best.pt``);
- ``evaluate``: ``checkpoint`` (file name in each step's folder), ``beams``, ``metric``
  (bleu or rouge), ``gen_subsets``, ``references`` (subset -> reference text),
  ``batch_size``, ``names`` (step -> method name), optional ``sentencepiece_model``, or
  ``post_process``, ``detok`` and ``chrf_word_order`` (evaluate.py's flags: the text the
  text rewards score).

The runner adds ``--user-dir fairseq_mixer --task mixer --log-format json --save-dir
WORKDIR/STEP`` to fairseq-train and tees every step's output to ``WORKDIR/STEP.log``
(fairseq's own ``--log-file`` is not used: it writes the progress lines without their tags and
adds a file handler at every epoch, so later epochs are repeated). A finished step leaves
``WORKDIR/.done/STEP.json`` (its command); a step is skipped when that marker and its outputs
exist. A training step interrupted before its marker is rerun, and fairseq resumes it from its
``checkpoint_last.pt``. Evaluation and plots, which only read, are redone when their command
changed (a training step finished since, say). The evaluation writes ``WORKDIR/results.json``
and ``WORKDIR/results.md``; the plots ``WORKDIR/curves.png`` and ``WORKDIR/beam.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from recipe_overrides import Override, RecipeError, parse_override, read_recipe

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "fairseq_mixer"
BIN = Path(sys.executable).parent
STEPS = ("data", "xent", "mixer", "xent_more", "evaluate", "plot")
TRAIN_STEPS = ("xent", "mixer", "xent_more")
FINETUNE_STEPS = ("mixer", "xent_more")
DERIVED_STEPS = ("evaluate", "plot")
DEFAULT_NAMES = {"xent": "XENT", "mixer": "MIXER", "xent_more": "XENT, more epochs"}
REQUIRED_KEYS = ("data", "train", "model", "xent", "mixer", "xent_more", "evaluate")
BUDGET_FLAGS = ("--max-epoch", "--max-update")
TAIL_LINES = 20


# ---------------------------------------------------------------------- the recipe


def substitute(value: object, workdir: Path) -> object:
    """``value`` with ``{workdir}`` replaced in every string it holds."""
    if isinstance(value, str):
        return value.replace("{workdir}", str(workdir))
    if isinstance(value, list):
        return [substitute(item, workdir) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, workdir) for key, item in value.items()}
    return value


def load_recipe(path: Path, workdir: Path, overrides: Sequence[Override] = ()) -> dict:
    """The recipe of `path` (its base resolved, `overrides` applied), checked, with
    ``{workdir}`` filled in."""
    recipe = read_recipe(path, overrides)
    missing = [key for key in REQUIRED_KEYS if key not in recipe]
    if missing:
        raise RecipeError(f"{path}: missing {', '.join(missing)}")
    for key in ("train", "model", *TRAIN_STEPS):
        if not all(isinstance(flag, str) for flag in recipe[key]):
            raise RecipeError(f"{path}: '{key}' must be a list of strings (command-line flags)")
    check_budgets(recipe)
    return substitute(recipe, workdir)


def flag_value(flags: Sequence[str], name: str) -> str | None:
    values = [flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == name]
    return values[-1] if values else None


def check_budgets(recipe: dict) -> None:
    """xent_more is the control of MIXER: it must train for the same number of epochs/updates."""
    for flag in BUDGET_FLAGS:
        mixer = flag_value(recipe["mixer"], flag)
        more = flag_value(recipe["xent_more"], flag)
        if mixer != more:
            raise RecipeError(
                f"{flag} is {mixer} for mixer but {more} for xent_more: the control must have "
                "the same budget"
            )


def parse_steps(text: str) -> list[str]:
    steps = [step.strip() for step in text.split(",") if step.strip()]
    unknown = [step for step in steps if step not in STEPS]
    if unknown:
        raise RecipeError(f"unknown steps {unknown}; choose from {','.join(STEPS)}")
    return [step for step in STEPS if step in steps]


# ---------------------------------------------------------------------- step commands


def repo_path(path: str) -> Path:
    """A recipe path: relative ones are relative to the repository root."""
    return REPO / path


def data_command(recipe: dict) -> list[str]:
    return [sys.executable, *recipe["data"]["command"]]


def train_command(recipe: dict, step: str, workdir: Path, cpu: bool) -> list[str]:
    command = [
        str(BIN / "fairseq-train"), recipe["data"]["bin"], "--user-dir", str(PLUGIN),
        "--task", "mixer", "--log-format", "json", "--save-dir", str(workdir / step),
        *recipe["train"], *recipe["model"], *recipe[step],
    ]  # fmt: skip
    if step != "xent":
        start = workdir / "xent" / recipe.get("finetune_from", "checkpoint_best.pt")
        command += ["--finetune-from-model", str(start)]
    return [*command, "--cpu"] if cpu else command


def finished_training_steps(recipe: dict, workdir: Path) -> list[str]:
    """The training steps whose marker and evaluated checkpoint exist."""
    checkpoint = recipe["evaluate"].get("checkpoint", "checkpoint_best.pt")
    return [
        step
        for step in TRAIN_STEPS
        if marker_path(workdir, step).exists() and (workdir / step / checkpoint).exists()
    ]


def evaluate_commands(recipe: dict, workdir: Path, cpu: bool) -> list[list[str]]:
    """One scripts/evaluate.py command per test subset, all finished training steps in each."""
    settings = recipe["evaluate"]
    steps = finished_training_steps(recipe, workdir)
    if not steps:
        raise RecipeError("nothing to evaluate: no training step has finished")
    names = {**DEFAULT_NAMES, **settings.get("names", {})}
    checkpoint = settings.get("checkpoint", "checkpoint_best.pt")
    commands = []
    for subset in settings.get("gen_subsets", ["test"]):
        command = [
            sys.executable, str(REPO / "scripts" / "evaluate.py"), "--data", recipe["data"]["bin"],
            "--checkpoint", *(str(workdir / step / checkpoint) for step in steps),
            "--name", *(names[step] for step in steps),
            "--beams", *(str(beam) for beam in settings.get("beams", [1, 5, 10])),
            "--gen-subset", subset, "--metric", settings.get("metric", "bleu"),
            "--batch-size", str(settings.get("batch_size", 128)),
            "--out-json", str(workdir / "results.json"), "--out-md", str(workdir / "results.md"),
        ]  # fmt: skip
        reference = settings.get("references", {}).get(subset)
        if reference:
            command += ["--reference-text", reference]
        commands.append([*command, *text_flags(settings), *(["--cpu"] if cpu else [])])
    return commands


def text_flags(settings: dict) -> list[str]:
    """evaluate.py's flags for the text it scores, from an ``evaluate`` section: a
    ``sentencepiece_model``, or ``post_process``, ``detok`` and ``chrf_word_order``."""
    flags = []
    if settings.get("sentencepiece_model"):
        flags += ["--sentencepiece-model", settings["sentencepiece_model"]]
    for key in ("post_process", "detok", "chrf_word_order"):
        if settings.get(key) is not None:
            flags += [f"--{key.replace('_', '-')}", str(settings[key])]
    return flags


def curve_logs(workdir: Path) -> list[str]:
    """The steps whose training curves are plotted: MIXER and its control, when logged."""
    return [step for step in ("mixer", "xent_more") if log_path(workdir, step).exists()]


def plot_commands(recipe: dict, workdir: Path) -> list[list[str]]:
    """Curves of MIXER and its XENT control (both start from the XENT model), and beam sizes."""
    script = [sys.executable, str(REPO / "scripts" / "plot.py")]
    names = {**DEFAULT_NAMES, **recipe["evaluate"].get("names", {})}
    logged = curve_logs(workdir)
    commands = []
    if logged:
        logs = [arg for step in logged for arg in ("--log", str(log_path(workdir, step)))]
        labels = [arg for step in logged for arg in ("--label", names[step])]
        commands.append([*script, *logs, *labels, "--out", str(workdir / "curves.png")])
    if (workdir / "results.json").exists():
        results = ["--beam-json", str(workdir / "results.json")]
        commands.append([*script, *results, "--out", str(workdir / "beam.png")])
    if not commands:
        raise RecipeError("nothing to plot: no MIXER or xent_more log and no results.json")
    return commands


def step_commands(recipe: dict, step: str, workdir: Path, cpu: bool) -> list[list[str]]:
    if step == "data":
        return [data_command(recipe)]
    if step in TRAIN_STEPS:
        return [train_command(recipe, step, workdir, cpu)]
    if step == "evaluate":
        return evaluate_commands(recipe, workdir, cpu)
    return plot_commands(recipe, workdir)


def step_outputs(recipe: dict, step: str, workdir: Path) -> list[Path]:
    if step == "data":
        return [repo_path(recipe["data"]["bin"])]
    if step in TRAIN_STEPS:
        return [workdir / step / "checkpoint_last.pt"]
    if step == "evaluate":
        return [workdir / "results.json", workdir / "results.md"]
    curves = [workdir / "curves.png"] if curve_logs(workdir) else []
    beams = [workdir / "beam.png"] if (workdir / "results.json").exists() else []
    return curves + beams


def step_inputs(recipe: dict, step: str, workdir: Path) -> list[Path]:
    """The files an evaluation or plot reads: redone when one is newer than its marker."""
    if step == "evaluate":
        checkpoint = recipe["evaluate"].get("checkpoint", "checkpoint_best.pt")
        return [workdir / s / checkpoint for s in finished_training_steps(recipe, workdir)]
    results = [workdir / "results.json"] if (workdir / "results.json").exists() else []
    return [log_path(workdir, step) for step in curve_logs(workdir)] + results


# ---------------------------------------------------------------------- markers and skipping


def marker_path(workdir: Path, step: str) -> Path:
    return workdir / ".done" / f"{step}.json"


def log_path(workdir: Path, step: str) -> Path:
    return workdir / f"{step}.log"


def recorded_commands(workdir: Path, step: str) -> list[list[str]] | None:
    """The commands of the step's last successful run, or None when it has not finished."""
    marker = marker_path(workdir, step)
    if not marker.exists():
        return None
    return json.loads(marker.read_text(encoding="utf-8"))["commands"]


def flag_groups(command: list[str]) -> list[tuple[str, ...]]:
    """The command's words before its first flag, then each flag with its values, the flags
    sorted by name (stably: a repeated flag keeps its order, so the last value still wins)."""
    starts = [i for i, word in enumerate(command) if word.startswith("--")] + [len(command)]
    groups = [tuple(command[a:b]) for a, b in itertools.pairwise(starts)]
    return [tuple(command[: starts[0]]), *sorted(groups, key=lambda group: group[0])]


def same_commands(first: list[list[str]], second: list[list[str]]) -> bool:
    """Whether two lists of commands run alike: the same flags and values, in any order (a
    recipe that changes a base lists a new flag last, where the old whole file had it
    elsewhere)."""
    return len(first) == len(second) and all(
        flag_groups(a) == flag_groups(b) for a, b in zip(first, second, strict=True)
    )


def should_skip(recipe: dict, step: str, commands: list[list[str]], workdir: Path) -> bool:
    """Whether a step is done already: its marker and outputs exist and, for evaluation and
    plots, neither their command nor their inputs changed since. A finished training step whose
    flags changed is kept, with a warning."""
    recorded = recorded_commands(workdir, step)
    if recorded is None or not all(p.exists() for p in step_outputs(recipe, step, workdir)):
        return False
    if step in DERIVED_STEPS:
        finished = marker_path(workdir, step).stat().st_mtime
        inputs = step_inputs(recipe, step, workdir)
        return same_commands(recorded, commands) and all(
            p.stat().st_mtime <= finished for p in inputs
        )
    if not same_commands(recorded, commands):
        print(
            f"run_recipe: {step}: the recipe changed since this step ran; keeping its results "
            f"(remove {workdir / step} and {marker_path(workdir, step)} to redo it)",
            flush=True,
        )
    return True


def write_marker(workdir: Path, step: str, commands: list[list[str]], seconds: float) -> None:
    marker = marker_path(workdir, step)
    marker.parent.mkdir(parents=True, exist_ok=True)
    record = {"commands": commands, "seconds": round(seconds, 1), "finished": time.ctime()}
    marker.write_text(json.dumps(record, indent=1), encoding="utf-8")


# ---------------------------------------------------------------------- running


def run_streaming(command: list[str], log: Path) -> None:
    """Run a command from the repository root, streaming its output to the console and ``log``."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["PYTHONUNBUFFERED"] = "1"
    tail: list[str] = []
    with log.open("a", encoding="utf-8", buffering=1) as handle:  # line-buffered: tail -f works
        handle.write(f"\n=== run_recipe {time.ctime()}: {' '.join(command)}\n")
        print("+", " ".join(command), flush=True)
        with subprocess.Popen(
            command, cwd=REPO, env=env, text=True, errors="replace",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        ) as proc:  # fmt: skip
            for line in proc.stdout:
                sys.stdout.write(line)
                handle.write(line)
                tail = [*tail[-TAIL_LINES + 1 :], line.rstrip("\n")]
    if proc.returncode != 0:
        raise RecipeError(
            f"{program_name(command)} failed (exit {proc.returncode}); full output in {log}; "
            "its last lines:\n" + "\n".join(tail)
        )


def program_name(command: list[str]) -> str:
    """'fairseq-train', 'evaluate.py', 'data_prep.synthetic': what a user recognises."""
    if command[0] != sys.executable:
        return Path(command[0]).name
    return command[2] if command[1] == "-m" else Path(command[1]).name


def check_ready(recipe: dict, step: str, workdir: Path) -> None:
    if not repo_path(recipe["data"]["bin"]).is_dir():
        raise RecipeError(f"{step}: no data in {recipe['data']['bin']}: run the data step first")
    if step in ("mixer", "xent_more"):
        start = workdir / "xent" / recipe.get("finetune_from", "checkpoint_best.pt")
        if not start.exists() or recorded_commands(workdir, "xent") is None:
            raise RecipeError(f"{step}: starts from {start}: run the xent step to the end first")


def run_step(recipe: dict, step: str, workdir: Path, cpu: bool) -> None:
    if step in TRAIN_STEPS:
        check_ready(recipe, step, workdir)
    commands = step_commands(recipe, step, workdir, cpu)
    if should_skip(recipe, step, commands, workdir):
        print(f"run_recipe: {step}: done already, skipped", flush=True)
        return
    print(f"run_recipe: {step}: running (output also in {log_path(workdir, step)})", flush=True)
    started = time.time()
    for command in commands:
        run_streaming(command, log_path(workdir, step))
    seconds = time.time() - started
    write_marker(workdir, step, commands, seconds)
    print(f"run_recipe: {step}: finished in {seconds / 60:.1f} min", flush=True)


def share_xent(
    recipe_path: Path, workdir: Path, other: Path, cpu: bool, overrides: Sequence[Override] = ()
) -> None:
    """Link the data and the XENT model of `other`, a workdir where a recipe with the same
    data, train, model and xent settings finished them: other MIXER settings are then tried
    from the very same XENT model."""
    other = other.resolve()
    if other == workdir:
        raise RecipeError("--share-xent-from names the workdir itself")
    own = load_recipe(recipe_path, workdir, overrides)
    theirs = load_recipe(recipe_path, other, overrides)
    bin_top = Path(own["data"]["bin"]).relative_to(workdir).parts[0]
    workdir.mkdir(parents=True, exist_ok=True)
    for step, folder in (("data", bin_top), ("xent", "xent")):
        recorded = recorded_commands(other, step)
        if recorded is None:
            raise RecipeError(f"--share-xent-from {other}: its {step} step has not finished")
        if not same_commands(recorded, step_commands(theirs, step, other, cpu)):
            raise RecipeError(
                f"--share-xent-from {other}: its {step} step ran with other settings than "
                f"{recipe_path}'s"
            )
        link = workdir / folder
        if not link.exists():
            link.symlink_to(other / folder, target_is_directory=True)
        elif link.resolve() != (other / folder).resolve():
            raise RecipeError(f"{link} exists already and is not {other / folder}")
        write_marker(workdir, step, step_commands(own, step, workdir, cpu), 0.0)


def with_seed(recipe: dict, seed: int) -> dict:
    """The recipe with `--seed seed` last in the MIXER and XENT-more steps (fairseq takes the
    last value): repeats of a comparison from the same XENT model, which keeps its own seed."""
    return {**recipe, **{step: [*recipe[step], "--seed", str(seed)] for step in FINETUNE_STEPS}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", type=Path, help="recipe JSON (scripts/recipes/)")
    parser.add_argument("--workdir", type=Path, required=True, help="where everything is written")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, in order")
    parser.add_argument("--cpu", action="store_true", help="pass --cpu to fairseq")
    parser.add_argument(
        "--share-xent-from", type=Path, metavar="WORKDIR",
        help="link the data and XENT steps of another workdir of this recipe's data and XENT "
        "settings (to try other MIXER settings from the same XENT model)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int,
        help="seed of the mixer and xent_more steps, replacing the recipe's there (the xent "
        "step keeps its own, so --share-xent-from still applies): to repeat a comparison",
    )  # fmt: skip
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="change one setting of the recipe, e.g. mixer.lr=0.0001 (a STEP.FLAG of the "
        "train, model, xent, mixer or xent_more flags; null removes a flag) or "
        "evaluate.batch_size=256; repeatable, applied in order",
    )  # fmt: skip
    parser.add_argument(
        "--show", action="store_true",
        help="print the resolved recipe (base, --set and --seed applied) and run nothing",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    workdir = args.workdir.resolve()
    try:
        steps = parse_steps(args.steps)
        overrides = [parse_override(text) for text in args.overrides]
        recipe = load_recipe(args.recipe, workdir, overrides)
        if args.seed is not None:
            recipe = with_seed(recipe, args.seed)
        if args.show:
            print(json.dumps(recipe, indent=2))
            return
        workdir.mkdir(parents=True, exist_ok=True)
        if args.share_xent_from is not None:
            share_xent(args.recipe, workdir, args.share_xent_from, args.cpu, overrides)
        for step in steps:
            run_step(recipe, step, workdir, args.cpu)
    except RecipeError as error:
        raise SystemExit(f"run_recipe: {error}") from None
    results = workdir / "results.md"
    if results.exists():
        print(f"\nrun_recipe: results in {results}\n\n{results.read_text(encoding='utf-8')}")


if __name__ == "__main__":
    main()
