"""The grid's figures: the metric against beam size for every method (error bars: std over
seeds), and the training curves of one seed of each method on one figure."""

from __future__ import annotations

from pathlib import Path

from plot import draw_panel, plt, read_training_log, save, validation_metric

from comparison.grid import Grid, all_cells
from comparison.runner import read_marker
from comparison.table import LABELS

CURVE_PANELS = (
    ("nll_loss", "training NLL of the reference (base 2)"),
    ("reward", "MIXER mean reward"),
)


def plot_beams(table: dict, out: Path) -> bool:
    """One panel per test set; False when nothing is finished."""
    subsets, beams = table["subsets"], table["beams"]
    if not any(entry for row in table["rows"] for entry in row["cells"].values()):
        return False
    fig, axes = plt.subplots(1, len(subsets), figsize=(5 * len(subsets), 4), squeeze=False)
    for ax, subset in zip(axes[0], subsets, strict=True):
        for index, row in enumerate(table["rows"]):
            points = [(b, row["cells"][f"{subset}/{b}"]) for b in beams]
            points = [(b, entry) for b, entry in points if entry]
            if not points:
                continue
            ax.errorbar(
                [b for b, _ in points], [entry["mean"] for _, entry in points],
                yerr=[entry["std"] or 0.0 for _, entry in points], marker="o", capsize=3,
                label=row["name"], color=f"C{index}",
            )  # fmt: skip
        ax.set_xticks(beams)
        ax.set_title(table["subset_names"].get(subset, subset))
        ax.set_xlabel("beam size")
        ax.set_ylabel(table["label"])
        ax.legend(fontsize=8)
    save(fig, out)
    return True


def plot_curves(grid: Grid, out: Path) -> bool:
    """The first finished seed of every method; False when none has finished."""
    logs = []
    for method in grid.methods:
        cells = [c for c in all_cells(grid) if c.kind == "final" and c.method == method.key]
        done = [c for c in cells if read_marker(c.folder, "train") is not None]
        if done:
            label = f"{method.name} (seed {done[0].seed})"
            logs.append(read_training_log(done[0].folder / "train.log", label))
    if not logs:
        return False
    metric = validation_metric(logs)
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(8, 9))
    for ax, (key, title) in zip(axes, CURVE_PANELS, strict=False):
        draw_panel(ax, logs, "train", key, title)
    draw_panel(axes[2], logs, "valid", metric, f"validation {LABELS[metric]}")
    axes[2].set_xlabel("updates since the start")
    save(fig, out)
    return True
