"""Plot MIXER training curves from fairseq-train logs, or metric against beam size.

Training curves (``--log``, one or more; ``--label`` names each): mean reward, baseline MSE
and validation BLEU (ROUGE-2 when the log has it) against the number of updates, with a
dotted vertical line, labelled ``s=N``, where the MIXER stage (``mixer_s``) changes. The logs
are fairseq-train's output with ``--log-format json``: lines such as
``... | INFO | train_inner | {"num_updates": "1", "reward": "0.35", ...}`` and
``... | INFO | valid | {"valid_bleu": "12.3", "valid_num_updates": "63", ...}``; bare JSON
lines (what ``--log-file`` writes) are read too. A record logged twice (a resumed run)
counts once, the last one.

Beam sizes (``--beam-json``, the JSON Lines of scripts/evaluate.py): BLEU (or the ROUGE
metric) against beam size for each method, one panel per test subset: the paper's
beam-search figure.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TRAIN_PANELS = (("reward", "mean reward"), ("baseline_mse", "baseline MSE"))
VALID_METRICS = ("rouge2", "bleu")
METRIC_LABELS = {"bleu": "BLEU", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


@dataclass
class TrainingLog:
    """The numeric records of one fairseq-train log, sorted by update, prefixes removed."""

    label: str
    train: list[dict[str, float]]
    valid: list[dict[str, float]]


# ---------------------------------------------------------------------- reading logs


def to_number(value: object) -> float | None:
    """fairseq's JSON logs hold numbers as strings; null and non-numbers give None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_log_line(line: str) -> tuple[str, dict] | None:
    """(kind, record) of a JSON progress line, kind 'train_inner' or 'valid'; else None."""
    parts = line.rstrip("\n").split(" | ")
    if len(parts) >= 4 and parts[3].lstrip().startswith("{"):
        tag, payload = parts[2].strip(), " | ".join(parts[3:])
    elif line.lstrip().startswith("{"):
        tag, payload = None, line
    else:
        return None
    try:
        record = json.loads(payload)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    kind = tag or classify_record(record)
    if kind == "train_inner":
        return kind, record
    if kind in ("valid", None) and any(key.startswith("valid_") for key in record):
        return "valid", {key.removeprefix("valid_"): value for key, value in record.items()}
    return None


def classify_record(record: dict) -> str | None:
    """The kind of a bare JSON record: train_inner records carry 'update' and 'num_updates'."""
    if any(key.startswith("valid_") for key in record):
        return "valid"
    if "num_updates" in record and "update" in record:
        return "train_inner"
    return None


def numeric(record: dict) -> dict[str, float]:
    numbers = {key: to_number(value) for key, value in record.items()}
    return {key: value for key, value in numbers.items() if value is not None}


def by_update(records: list[dict[str, float]]) -> list[dict[str, float]]:
    """One record per update count (the last logged), sorted by update."""
    latest = {r["num_updates"]: r for r in records if "num_updates" in r}
    return [latest[update] for update in sorted(latest)]


def read_training_log(path: Path, label: str) -> TrainingLog:
    train, valid = [], []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parsed = parse_log_line(line)
            if parsed is not None:
                (train if parsed[0] == "train_inner" else valid).append(numeric(parsed[1]))
    return TrainingLog(label=label, train=by_update(train), valid=by_update(valid))


def series(records: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["num_updates"], r[key]) for r in records if key in r]
    return [x for x, _ in points], [y for _, y in points]


def stage_starts(train: list[dict[str, float]]) -> list[tuple[float, float]]:
    """(update, s) where mixer_s takes a new value, its first value included."""
    starts: list[tuple[float, float]] = []
    for record in train:
        s = record.get("mixer_s")
        if s is not None and (not starts or s != starts[-1][1]):
            starts.append((record["num_updates"], s))
    return starts


def validation_metric(logs: Sequence[TrainingLog]) -> str:
    """rouge2 when any log has it, else bleu."""
    for metric in VALID_METRICS:
        if any(metric in record for log in logs for record in log.valid):
            return metric
    return "bleu"


# ---------------------------------------------------------------------- figures


def format_s(s: float) -> str:
    return f"s={int(s)}" if s == int(s) else f"s={s:g}"


def draw_panel(ax, logs: Sequence[TrainingLog], kind: str, key: str, title: str) -> None:
    drawn = False
    for index, log in enumerate(logs):
        records = log.train if kind == "train" else log.valid
        xs, ys = series(records, key)
        if xs:
            ax.plot(
                xs, ys, color=f"C{index}", label=log.label, marker="o" if kind == "valid" else ""
            )
            drawn = True
    ax.set_ylabel(title)
    if drawn:
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no '{key}' in these logs", transform=ax.transAxes, ha="center")


def draw_stage_lines(axes, logs: Sequence[TrainingLog]) -> None:
    for index, log in enumerate(logs):
        for update, s in stage_starts(log.train):
            for ax in axes:
                ax.axvline(update, color=f"C{index}", linestyle=":", linewidth=1)
            axes[0].text(
                update, 1.0, format_s(s), transform=axes[0].get_xaxis_transform(),
                rotation=90, va="bottom", ha="center", fontsize=7, color=f"C{index}",
            )  # fmt: skip


def plot_training(logs: Sequence[TrainingLog], out: Path) -> None:
    metric = validation_metric(logs)
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(8, 9))
    for ax, (key, title) in zip(axes, TRAIN_PANELS, strict=False):
        draw_panel(ax, logs, "train", key, title)
    draw_panel(axes[2], logs, "valid", metric, f"validation {METRIC_LABELS[metric]}")
    draw_stage_lines(axes, logs)
    axes[2].set_xlabel("updates")
    save(fig, out)


def beam_metric(rows: Sequence[dict], requested: str | None) -> str:
    if requested:
        return requested
    return "bleu" if any("bleu" in row for row in rows) else "rouge2"


def plot_beams(rows: Sequence[dict], metric: str, out: Path) -> None:
    rows = [row for row in rows if metric in row]
    if not rows:
        raise SystemExit(f"plot.py: no '{metric}' in the --beam-json rows")
    subsets = list(dict.fromkeys(row["gen_subset"] for row in rows))
    fig, axes = plt.subplots(1, len(subsets), figsize=(5 * len(subsets), 4), squeeze=False)
    for ax, subset in zip(axes[0], subsets, strict=True):
        subset_rows = [row for row in rows if row["gen_subset"] == subset]
        for name in dict.fromkeys(row["name"] for row in subset_rows):
            points = sorted((r["beam"], r[metric]) for r in subset_rows if r["name"] == name)
            ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=name)
        ax.set_xticks(sorted({row["beam"] for row in subset_rows}))
        ax.set_title(subset)
        ax.set_xlabel("beam size")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.legend(fontsize=8)
    save(fig, out)


def save(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"plot.py: wrote {out}")


# ---------------------------------------------------------------------- command line


def load_rows(path: Path) -> list[dict]:
    """evaluate.py's JSON Lines (a JSON list is read as well)."""
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", type=Path, action="append", help="fairseq-train log (json)")
    parser.add_argument("--label", action="append", help="one per --log (default: file name)")
    parser.add_argument("--beam-json", type=Path, help="rows of scripts/evaluate.py")
    parser.add_argument("--metric", choices=list(METRIC_LABELS), help="for --beam-json")
    parser.add_argument("--out", type=Path, required=True, help="PNG file")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.log) == bool(args.beam_json):
        parser.error("give either --log (training curves) or --beam-json (beam sizes)")
    inputs = args.log or [args.beam_json]
    for path in inputs:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    if args.beam_json:
        rows = load_rows(args.beam_json)
        plot_beams(rows, beam_metric(rows, args.metric), args.out)
        return
    labels = args.label or [path.stem for path in args.log]
    if len(labels) != len(args.log):
        parser.error(f"{len(labels)} --label for {len(args.log)} --log: give one per log")
    logs = [read_training_log(path, label) for path, label in zip(args.log, labels, strict=True)]
    if not any(log.train or log.valid for log in logs):
        raise SystemExit("plot.py: no JSON progress lines in these logs (--log-format json?)")
    plot_training(logs, args.out)


if __name__ == "__main__":
    main()
