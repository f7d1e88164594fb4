"""The Markdown of a built table (comparison.table.build): the paper's shape, the paper's two
claims in figures, then the p-values, the decoding speed, the tuning and what is missing."""

from __future__ import annotations

MARK = "*"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cell_text(entry: dict | None, seeds: int) -> str:
    if entry is None:
        return "-"
    text = f"{entry['mean']:.2f}"
    if entry["std"] is not None:
        text += f" ± {entry['std']:.2f}"
    if entry.get("test") and entry["test"]["significant"]:
        text += MARK
    if entry["n"] < seeds:
        text += f" ({entry['n']} of {seeds} seeds)"
    return text


def main_table(table: dict) -> list[str]:
    beams, subsets = table["beams"], table["subsets"]
    names = table["subset_names"]
    header = ["method"]
    for subset in subsets:
        header += [f"{names.get(subset, subset)} {beam_label(b)}" for b in beams]
    with_paper = bool(table["paper_source"])
    if with_paper:
        header.append("paper " + " / ".join(beam_label(b) for b in beams))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    seeds = max((len(row["seeds"]) for row in table["rows"]), default=0)
    for row in table["rows"]:
        cells = [row["name"]]
        for subset in subsets:
            for beam in beams:
                entry = row["cells"][f"{subset}/{beam}"]
                cells.append(cell_text(entry, 1 if row["key"] == "start" else seeds))
        if with_paper:
            cells.append(" / ".join(number(row["paper"].get(str(beam))) for beam in beams))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def beam_label(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def p_value_table(table: dict) -> list[str]:
    lines = [
        f"| method | test set | beam | difference to the {control_name(table)} (p) per seed "
        "| all seeds agree |",
        "|---|---|---|---|---|",
    ]
    names = table["subset_names"]
    for row in table["rows"]:
        for key, entry in row["cells"].items():
            if not entry or not entry.get("test"):
                continue
            subset, beam = key.split("/")
            pairs = entry["test"]["pairs"]
            text = ", ".join(
                f"seed {seed}: {pair['difference']:+.2f} (p={pair['p_value']:.3f})"
                for seed, pair in pairs.items()
            )
            agree = "yes" if entry["test"]["significant"] else "no"
            lines.append(
                f"| {row['name']} | {names.get(subset, subset)} | {beam} | {text} | {agree} |"
            )
    return lines


def difference(entry: dict | None, other: dict | None) -> float | None:
    if entry is None or other is None:
        return None
    return entry["mean"] - other["mean"]


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def claims_table(table: dict) -> list[str]:
    """The paper's two claims, per method and test set: does its greedy output beat XENT's
    greedy output (the control's, with the paired test, and the start's), and does it reach
    XENT's beam search (the control's, mean against mean)."""
    greedy, beams = (
        min(table["beams"]),
        sorted(b for b in table["beams"] if b != min(table["beams"])),
    )
    rows = {row["key"]: row for row in table["rows"]}
    control, start = rows[table["control"]], rows.get("start")
    name = control_name(table)
    header = [
        "method", "test set", f"greedy - {name} greedy", "significant (every seed)",
        "greedy - start greedy", *(f"greedy - {name} {beam_label(b)}" for b in beams),
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["rows"]:
        if row["key"] in ("start", table["control"]):
            continue
        for subset in table["subsets"]:
            own = row["cells"][f"{subset}/{greedy}"]
            if own is None:
                continue
            test = own.get("test")
            cells = [
                row["name"],
                table["subset_names"].get(subset, subset),
                signed(difference(own, control["cells"][f"{subset}/{greedy}"])),
                "-" if not test else ("yes" if test["significant"] else "no"),
                signed(difference(own, start["cells"][f"{subset}/{greedy}"] if start else None)),
                *(signed(difference(own, control["cells"][f"{subset}/{b}"])) for b in beams),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def speed_table(table: dict) -> list[str]:
    low, high = min(table["beams"]), max(table["beams"])
    lines = [
        f"| method | ms per sentence, {beam_label(low)} | {beam_label(high)} |",
        "|---|---|---|",
    ]
    for row in table["rows"]:
        speeds = row["ms_per_sentence"]
        cells = [row["name"], number(speeds[str(low)]), number(speeds[str(high)])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def tuning_table(table: dict) -> list[str]:
    lines = ["| method | candidate | flags | validation | chosen |", "|---|---|---|---|---|"]
    for line in table["tuning"]:
        score = number(line["score"]) if line["tuned"] else "not tuned (one candidate)"
        flags = " ".join(line["flags"])
        chosen = "**yes**" if line["chosen"] else ""
        lines.append(f"| {line['method']} | {line['candidate']} | `{flags}` | {score} | {chosen} |")
    return lines


def machine_text(machine: dict) -> str:
    device = machine.get("gpu") or f"{machine.get('cpu')}, {machine.get('cores')} cores"
    threads = f", OMP_NUM_THREADS={machine['threads']}" if machine.get("threads") else ""
    return f"{machine.get('host')}: {device}{threads}, torch {machine.get('torch')}"


def markdown(table: dict) -> str:
    """The whole report."""
    head = (
        f"{table['label']} on the test sets: mean ± std over seeds ({MARK}: differs from the "
        f"{control_name(table)} at p < 0.05 by paired bootstrap for every seed, "
        f"{table['bootstrap_samples']} resamples)."
    )
    if table["paper_source"]:
        head += f" Paper: {table['paper_source']}."
    out = [head, ""]
    out += main_table(table)
    out += ["", "The paper's two claims in figures (differences of means over seeds):", ""]
    out += claims_table(table)
    out += ["", table["seed_pairing"].replace("\n", " "), ""]
    out += p_value_table(table)
    out += ["", "Decoding time (fairseq-generate, model loading excluded):", ""]
    out += speed_table(table)
    out += ["", "Machines: " + ("; ".join(map(machine_text, table["machines"])) or "-"), ""]
    out += ["Tuning (short runs from the start, validation only):", ""]
    out += tuning_table(table)
    if table["missing"]:
        out += ["", "Missing cells (left out of the table): " + ", ".join(table["missing"]) + "."]
    return "\n".join(out) + "\n"


def control_name(table: dict) -> str:
    return next(row["name"] for row in table["rows"] if row["key"] == table["control"])
