"""scripts/grid.py export: a grid's record (comparison.record) gives the same tables (BLEU's,
chrF's) and states as its work dir, holds no checkpoint, hypothesis or reference text, and its
BLEU significance from per-sentence statistics is sacreBLEU's PairedTest. Fake cells, no
training."""

import gzip
import importlib.util
import json
import sys

import numpy as np
import pytest
from conftest import REPO
from test_grid import sentences, tiny_grid

sys.path.insert(0, str(REPO / "scripts"))

from comparison import plots, record, report, significance  # noqa: E402
from comparison import sentences as sentence_stats  # noqa: E402
from comparison import table as tables  # noqa: E402
from comparison.grid import GridError, all_cells, load_grid  # noqa: E402
from comparison.runner import cell_state  # noqa: E402
from plot import read_training_log  # noqa: E402

MACHINE = {"host": "h", "cpu": "c", "cores": 2, "threads": "1", "gpu": None, "torch": "2"}
NOISE = [
    "/venv/lib/python3.11/site-packages/hydra/initialize.py:43: UserWarning: no longer\n",
    "2026-12-03 19:44:52 | INFO | fairseq_cli.train | {'_name': None, 'common': {'seed': 1}}\n",
    "2026-12-03 19:44:53 | INFO | fairseq_cli.train | MixerModel(\n",
    "2026-12-03 19:44:54 | INFO | fairseq_cli.train | end of epoch 1\n",
]
CHRF_SIGNATURE = "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0"  # chrF++


def load_grid_script():
    spec = importlib.util.spec_from_file_location("grid_script", REPO / "scripts" / "grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_marker(folder, phase):
    command = ["/venv/bin/python", str(folder / "checkpoints"), "--save-dir", str(folder)]
    marker = {"commands": [command], "seconds": 1.0, "finished": "now", "machine": MACHINE}
    (folder / ".done").mkdir(parents=True, exist_ok=True)
    (folder / ".done" / f"{phase}.json").write_text(json.dumps(marker))


def write_log(folder, metric, best):
    lines = [f"=== run_recipe now: /venv/bin/fairseq-train {folder}\n", *NOISE]
    for update in range(1, 4):
        inner = {"epoch": 1, "update": update / 3, "loss": f"{5 - update}", "nll_loss": "2.5",
                 "reward": "0.3", "num_updates": str(update)}  # fmt: skip
        lines.append(f"2026-12-03 | INFO | train_inner | {json.dumps(inner)}\n")
    epoch = {"epoch": 1, "train_loss": "3.1", "train_num_updates": "3"}
    valid = {"epoch": 1, "valid_loss": "3.2", f"valid_{metric}": str(best), "valid_num_updates": 3}
    lines += [
        f"2026-12-03 | INFO | train | {json.dumps(epoch)}\n",
        f"2026-12-03 | INFO | valid | {json.dumps(valid)}\n",
        "2026-12-03 | INFO | fairseq_cli.train | done training in 3.0 seconds\n",
    ]
    (folder / "train.log").write_text("".join(lines))


def write_results(work, folder, name, kind, references, beams, rng):
    """Hypotheses (a noisy copy of the references), rows as evaluate.py writes them."""
    rows = []
    for beam in beams:
        keep = rng.uniform(0.3, 0.9)
        hyps = [" ".join(w if rng.random() < keep else "x" for w in r.split()) for r in references]
        path = folder / "hyps" / f"test.beam{beam}.{name.replace(':', '_')}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(h + "\n" for h in hyps))
        scores = {"bleu": 100 * keep, "chrf": 90 * keep, "chrf_signature": CHRF_SIGNATURE}
        if kind != "bleu":
            scores = {"rouge1": 100 * keep, "rouge2": 90 * keep, "rougeL": 95 * keep}
        rows.append(
            {"name": name, "checkpoint": str(folder / "checkpoints" / "checkpoint_best.pt"),
             "data": str(work / "data" / "bin"), "gen_subset": "test", "beam": beam,
             "metric": kind, "references": str(work / "data" / "text" / "test.tgt"),
             "text": None, **scores, "sentences": len(hyps), "sentences_per_s": 100.0 / beam,
             "hypotheses": str(path)}
        )  # fmt: skip
    (folder / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def fake_work(root, kind):
    """A grid's work dir as the runner leaves it: every cell finished but dad:seed3 (trained,
    not scored) and xent_more:seed3 (not trained)."""
    spec = tiny_grid(root / "unused")
    spec["seeds"] = [1, 2, 3]
    spec["evaluate"]["beams"] = [1, 5]
    spec["evaluate"]["references"] = {"test": "{workdir}/data/text/test.tgt"}
    metric = "bleu" if kind == "bleu" else "rouge2"
    spec["evaluate"].update(metric=kind, table_metric=metric)
    spec["tune"]["metric"] = metric
    grid_path, work = root / f"{kind}.json", root / "work"
    grid_path.write_text(json.dumps(spec))
    grid = load_grid(grid_path, work)
    references, _, _ = sentences(5, count=30)
    (work / "data" / "text").mkdir(parents=True)
    (work / "data" / "text" / "test.tgt").write_text("".join(r + "\n" for r in references))
    rng = np.random.default_rng(0)
    for cell in all_cells(grid):
        if cell.name == "xent_more:seed3":
            continue
        (cell.checkpoints).mkdir(parents=True)
        (cell.checkpoints / "checkpoint_best.pt").write_bytes(b"weights")
        write_marker(cell.folder, "train")
        write_log(cell.folder, metric, round(rng.uniform(10, 20), 2))
        if cell.evaluated and cell.name != "dad:seed3":
            write_results(work, cell.folder, cell.name, kind, references, [1, 5], rng)
            write_marker(cell.folder, "test")
    for method in grid.methods:
        choice = {"method": method.key, "candidate": next(iter(method.candidates)),
                  "candidates": method.candidates}  # fmt: skip
        (work / "tune" / method.key).mkdir(parents=True, exist_ok=True)
        (work / "tune" / method.key / "choice.json").write_text(json.dumps(choice))
    return grid_path, work, references


@pytest.mark.parametrize("kind", ["bleu", "rouge"])
def test_the_record_gives_the_work_dirs_table_without_text_or_checkpoints(kind, tmp_path, capsys):
    grid_path, work, references = fake_work(tmp_path, kind)
    rec = tmp_path / "record"
    load_grid_script().main(["export", str(grid_path), "--workdir", str(work), "--to", str(rec)])
    printed = capsys.readouterr().out
    assert "xent_more:seed3: not trained" in printed
    assert "dad:seed3: .done/train.json, train.log (6 lines), test sets not scored" in printed

    on_work = tables.build(load_grid(grid_path, work), n_samples=50)
    on_record = tables.build(load_grid(grid_path, rec), n_samples=50)
    assert on_record["workdir"] != on_work["workdir"]
    assert {**on_record, "workdir": None} == {**on_work, "workdir": None}
    dad = next(row for row in on_record["rows"] if row["key"] == "dad")
    assert set(dad["cells"]["test/5"]["test"]["pairs"]) == {1, 2}
    assert [line["score"] is not None for line in on_record["tuning"]] == [False, True, True]
    assert on_record["missing"] == [
        "xent_more:seed3 (not trained)", "dad:seed3 (trained, test sets not scored)"
    ]  # fmt: skip
    grids = [load_grid(grid_path, folder) for folder in (work, rec)]
    states = [[cell_state(g, cell) for cell in all_cells(g)] for g in grids]
    assert states[0] == states[1]
    assert plots.plot_curves(grids[1], tmp_path / "curves.png")

    files = [path for path in rec.rglob("*") if path.is_file()]
    parts = {part for path in files for part in path.relative_to(rec).parts}
    assert not {"checkpoints", "hyps", "data"} & parts and not any(p.suffix == ".pt" for p in files)
    texts = [
        gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes() for p in files
    ]
    assert not any(r.encode() in text for r in references for text in texts)
    rows = [json.loads(line) for line in (rec / "start" / "results.jsonl").read_text().splitlines()]
    assert all("hypotheses" not in row and not row["references"].startswith("/") for row in rows)
    assert rows[0]["statistics"] == "start/stats/test.beam1.json.gz"

    full, trimmed = work / "start" / "train.log", rec / "start" / "train.log"
    assert read_training_log(trimmed, "s") == read_training_log(full, "s")
    assert not any(line in trimmed.read_text() for line in NOISE)


def test_a_bleu_grid_gives_a_chrf_table_from_its_record_as_from_its_work_dir(tmp_path):
    grid_path, work, references = fake_work(tmp_path, "bleu")
    rec = tmp_path / "record"
    record.export(load_grid(grid_path, work), rec)
    rows = [json.loads(line) for line in (rec / "start" / "results.jsonl").read_text().splitlines()]
    assert rows[0]["statistics"] == "start/stats/test.beam1.json.gz"
    assert rows[0]["chrf_statistics"] == "start/stats/test.beam1.chrf.json.gz"

    on_work, on_record = (
        tables.build(load_grid(grid_path, folder), n_samples=50, metric="chrf")
        for folder in (work, rec)
    )
    assert {**on_record, "workdir": None} == {**on_work, "workdir": None}
    assert on_record["metric"] == "chrf" and on_record["label"] == "chrF++"
    dad = next(row for row in on_record["rows"] if row["key"] == "dad")
    assert dad["paper"] == {} and on_record["paper_source"] is None  # the paper's are BLEU
    assert dad["cells"]["test/5"]["mean"] == pytest.approx(
        np.mean([json.loads(line)["chrf"] for seed in (1, 2) for line in
                 (work / f"runs/dad/seed{seed}/results.jsonl").read_text().splitlines()[1:]])
    )  # fmt: skip
    hyps = [
        sentence_stats.read_lines(work / f"runs/{key}/seed1/hyps/test.beam5.{key}_seed1.txt")
        for key in ("xent_more", "dad")
    ]
    by_text = significance.text_paired_bootstrap(*hyps, references, significance.chrf_metric(2), 50)
    assert dad["cells"]["test/5"]["test"]["pairs"][1]["p_value"] == by_text.p_value

    load_grid_script().main(["table", str(grid_path), "--workdir", str(rec), "--metric", "chrf",
                 "--bootstrap-samples", "50", "--plots", str(tmp_path)])  # fmt: skip
    assert (rec / "table.chrf.md").read_text().startswith("chrF++ on the test sets")
    assert json.loads((rec / "table.chrf.json").read_text())["metric"] == "chrf"
    assert not (rec / "table.md").exists()
    assert (tmp_path / "beam.chrf.png").stat().st_size > 0


def test_a_chrf_table_of_two_word_orders_is_refused():
    rows = [{"name": "a", "chrf_signature": CHRF_SIGNATURE},
            {"name": "b", "chrf_signature": CHRF_SIGNATURE.replace("nw:2", "nw:0")}]  # fmt: skip
    assert tables.chrf_word_order(rows[:1]) == 2 and tables.chrf_word_order([]) == 0
    with pytest.raises(GridError, match=r"word orders in one table \(a nw:2, b nw:0\)"):
        tables.chrf_word_order(rows)


def test_chrf_statistics_are_read_as_they_were_written(tmp_path):
    refs, base, _ = sentences(6, count=10)
    written = sentence_stats.from_text(base, refs, "chrf", word_order=2)
    assert written["columns"][:3] == ["char1_hyp", "char1_ref", "char1_match"]
    assert len(written["columns"]) == 24 and written["columns"][-1] == "word2_match"
    path = tmp_path / sentence_stats.file_name("test", 5, "chrf")
    sentence_stats.write(path, written)
    read = sentence_stats.read(path)
    assert read["rows"].dtype == np.int64 and np.array_equal(read["rows"], written["rows"])
    assert {**read, "rows": None} == {**written, "rows": None}
    assert significance.chrf_word_order(read["signature"]) == 2
    assert path.name == "test.beam5.chrf.json.gz"


def test_a_record_is_updated_cell_by_cell_and_never_run(tmp_path):
    grid_path, work, _ = fake_work(tmp_path, "bleu")
    rec = tmp_path / "record"
    grid = load_grid(grid_path, work)
    record.export(grid, rec)
    for name in ("runs/dad/seed1", "runs/dad/seed2/.done/test.json"):
        target = work / name
        target.rename(target.with_name(target.name + ".gone"))
    done = record.export(grid, rec)
    assert "dad:seed1: not trained" in done.skipped
    assert any(line.startswith("dad:seed2: the record holds train+test") for line in done.skipped)
    assert (rec / "runs" / "dad" / "seed1" / "results.jsonl").exists()
    assert (rec / "runs" / "dad" / "seed2" / ".done" / "test.json").exists()
    record.export(grid, rec, [next(c for c in all_cells(grid) if c.name == "xent_more:seed1")])
    holds = json.loads((rec / "record.json").read_text())["holds"]
    assert holds["dad:seed1"] == holds["dad:seed2"] == "train+test" and "start" in holds

    script = load_grid_script()
    with pytest.raises(SystemExit, match="is a record"):
        script.main(["run", str(grid_path), "--workdir", str(rec), "--dry-run"])
    with pytest.raises(SystemExit, match="holds other files"):
        script.main(["export", str(grid_path), "--workdir", str(work), "--to", str(tmp_path)])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bleu_from_statistics_is_sacrebleus_paired_test(seed, monkeypatch):
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    monkeypatch.delenv("SACREBLEU_SEED", raising=False)
    rng = np.random.default_rng(seed)
    refs, base, system = sentences(seed, count=int(rng.integers(20, 60)))
    _, scores = PairedTest(
        [("b", base), ("s", system)], {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=300
    )()
    stats = [significance.bleu_statistics(hyps, refs) for hyps in (base, system)]
    ours = significance.bleu_stats_paired_bootstrap(*stats, n_samples=300)
    assert ours.baseline == scores["BLEU"][0].score and ours.system == scores["BLEU"][1].score
    assert ours.p_value == scores["BLEU"][1].p_value


def test_the_claims_table_is_the_difference_of_the_means(tmp_path):
    grid_path, work, _ = fake_work(tmp_path, "bleu")
    table = tables.build(load_grid(grid_path, work), n_samples=20)
    rows = {row["key"]: row["cells"] for row in table["rows"]}
    lines = report.claims_table(table)
    dad = next(line for line in lines if line.startswith("| DAD |"))
    cells = [cell.strip() for cell in dad.strip("|").split("|")]
    mean = {key: {beam: rows[key][f"test/{beam}"]["mean"] for beam in (1, 5)} for key in rows}
    assert cells[2] == f"{mean['dad'][1] - mean['xent_more'][1]:+.2f}"
    significant = rows["dad"]["test/1"]["test"]["significant"]
    assert cells[3] == ("yes" if significant else "no")
    assert cells[4] == f"{mean['dad'][1] - mean['start'][1]:+.2f}"
    assert cells[5] == f"{mean['dad'][1] - mean['xent_more'][5]:+.2f}"
    assert not any(line.startswith(("| XENT control |", "| XENT (the start) |")) for line in lines)
    assert "\n".join(lines) in report.markdown(table)
