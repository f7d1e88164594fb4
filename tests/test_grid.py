"""scripts/grid.py and scripts/comparison: a tiny grid run end to end through fairseq-train and
fairseq-generate, resuming, single cells, the test-set guard, the table, and the paired
bootstrap."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from comparison import report, significance  # noqa: E402
from comparison import table as tables  # noqa: E402
from comparison.grid import (  # noqa: E402
    GridError,
    all_cells,
    evaluate_commands,
    load_grid,
    select_cells,
)
from comparison.runner import check_test_allowed, read_marker  # noqa: E402

GRID_SCRIPT = REPO / "scripts" / "grid.py"
LSTM = [
    "--arch", "lstm", "--encoder-bidirectional", "--encoder-embed-dim", "32",
    "--encoder-hidden-size", "32", "--decoder-embed-dim", "32", "--decoder-hidden-size", "32",
    "--decoder-out-embed-dim", "32", "--dropout", "0.1",
]  # fmt: skip
VALID_BLEU = [
    "--eval-bleu", "--eval-bleu-detok", "space", "--best-checkpoint-metric", "bleu",
    "--maximize-best-checkpoint-metric",
]  # fmt: skip


def tiny_grid(data: Path) -> dict:
    """The control (one candidate) and DAD (two, tuned), two seeds, a few updates: the
    machinery of every method; MIXER and E2E go through it as DAD does."""
    return {
        "data": {"bin": str(data / "bin")},
        "train": ["--optimizer", "adam", "--batch-size", "32", "--seed", "7", "--log-interval",
                  "1", "--no-epoch-checkpoints", "--num-workers", "0", "--no-progress-bar"],
        "model": LSTM,
        "start": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                  "--lr", "0.003", "--max-update", "4", *VALID_BLEU],
        "finetune": VALID_BLEU,
        "budget": ["--max-update", "3"],
        "tune": {"budget": ["--max-update", "2"], "seed": 1, "metric": "bleu"},
        "seeds": [1, 2],
        "methods": {
            "xent_more": {"name": "XENT control", "control": True, "candidates": {
                "lr1e-3": ["--criterion", "label_smoothed_cross_entropy", "--lr", "0.001"]}},
            "dad": {"name": "DAD", "candidates": {
                "linear": ["--criterion", "dad", "--dad-schedule", "linear",
                           "--dad-linear-slope", "0.2", "--lr", "0.001"],
                "isig": ["--criterion", "dad", "--dad-k", "2", "--lr", "0.002"]}},
        },
        "evaluate": {"beams": [1], "metric": "bleu", "batch_size": 64, "gen_subsets": ["test"],
                     "references": {"test": str(data / "text" / "test.tgt")}},
        "paper": {"source": "IWSLT'14", "scores": {"start": {"1": 17.74}, "dad": {"1": 20.12}}},
    }  # fmt: skip


def grid_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(GRID_SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"grid.py {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")  # fmt: skip
    return proc


def trained_cells(workdir: Path, grid_path: Path) -> set[str]:
    grid = load_grid(grid_path, workdir)
    return {c.name for c in all_cells(grid) if read_marker(c.folder, "train") is not None}


@pytest.fixture(scope="module")
def grid_run(synthetic_bin, tmp_path_factory):
    """The tiny grid run the way a user spreads it over sittings, each exporting what it ran to
    a record; what each sitting printed."""
    root = tmp_path_factory.mktemp("grid")
    grid_path, workdir = root / "tiny.json", root / "work"
    grid_path.write_text(json.dumps(tiny_grid(synthetic_bin.parent)), encoding="utf-8")
    run = ("run", str(grid_path), "--workdir", str(workdir), "--cpu", "--record", str(root / "rec"))
    sittings = {"record": root / "rec", "start": grid_cli(*run, "--only", "start")}
    sittings["after_start"] = trained_cells(workdir, grid_path)
    sittings["untuned"] = grid_cli(*run, "--only", "dad:seed1", check=False)
    grid = load_grid(grid_path, workdir)
    with pytest.raises(GridError, match="refusing to score the test sets"):
        check_test_allowed(grid, select_cells(all_cells(grid), ["dad:seed1"])[0])
    sittings["tune"] = grid_cli(*run, "--only", "tune")
    sittings["one"] = grid_cli(*run, "--only", "dad:seed2")
    sittings["after_one"] = trained_cells(workdir, grid_path)
    sittings["all"] = grid_cli(*run)
    sittings["again"] = grid_cli(*run)
    return grid_path, workdir, sittings


@pytest.mark.slow
def test_sittings_run_each_cell_once_and_a_rerun_skips_everything(grid_run):
    grid_path, workdir, sittings = grid_run
    assert sittings["after_start"] == {"start"}
    assert sittings["after_one"] == {"start", "tune:dad:linear", "tune:dad:isig", "dad:seed2"}
    every = {c.name for c in all_cells(load_grid(grid_path, workdir))}
    assert trained_cells(workdir, grid_path) == every
    assert "dad:seed2: trained already, skipped" in sittings["all"].stdout
    again = sittings["again"].stdout
    assert "fairseq-train" not in again and "evaluate.py" not in again
    assert again.count("skipped") == 2 * 4 + 2 + 2  # finals and start: 2 phases; tuning: 1


@pytest.mark.slow
def test_a_method_is_neither_trained_nor_tested_before_its_tuning_choice(grid_run):
    grid_path, workdir, sittings = grid_run
    assert sittings["untuned"].returncode != 0
    assert "dad's tuning has not finished" in sittings["untuned"].stderr
    choice = json.loads((workdir / "tune" / "dad" / "choice.json").read_text())
    assert set(choice["scores"]) == {"linear", "isig"}
    assert choice["candidate"] == max(choice["scores"], key=choice["scores"].get)
    trained = read_marker(workdir / "runs" / "dad" / "seed1", "train")
    assert choice["flags"][-1] in trained["commands"][0]
    assert not (workdir / "tune" / "dad" / "linear" / "results.jsonl").exists()


@pytest.mark.slow
def test_table_and_plots_from_the_finished_runs_and_with_a_missing_cell(grid_run, tmp_path):
    grid_path, workdir, _ = grid_run
    out = ("--out-md", str(tmp_path / "t.md"), "--out-json", str(tmp_path / "t.json"))
    grid_cli("table", str(grid_path), "--workdir", str(workdir), *out, "--plots", str(tmp_path),
             "--bootstrap-samples", "50")  # fmt: skip
    built = json.loads((tmp_path / "t.json").read_text())
    assert [row["key"] for row in built["rows"]] == ["start", "xent_more", "dad"]
    assert built["missing"] == []
    dad = next(row for row in built["rows"] if row["key"] == "dad")
    assert dad["cells"]["test/1"]["n"] == 2 and dad["paper"] == {"1": 20.12}
    assert set(dad["cells"]["test/1"]["test"]["pairs"]) == {"1", "2"}
    text = (tmp_path / "t.md").read_text()
    assert "| DAD |" in text and "20.12" in text and "seed 2:" in text
    assert (tmp_path / "beam.png").stat().st_size > 0 and (tmp_path / "curves.png").exists()

    marker = workdir / "runs" / "dad" / "seed2" / ".done" / "test.json"
    marker.rename(marker.with_suffix(".hidden"))
    try:
        grid = load_grid(grid_path, workdir)
        rebuilt = tables.build(grid, n_samples=20)
    finally:
        marker.with_suffix(".hidden").rename(marker)
    assert rebuilt["missing"] == ["dad:seed2 (trained, test sets not scored)"]
    dad = next(row for row in rebuilt["rows"] if row["key"] == "dad")
    assert dad["cells"]["test/1"]["n"] == 1
    assert "Missing cells" in report.markdown(rebuilt)


@pytest.mark.slow
def test_two_methods_head_to_head_seed_by_seed(grid_run, tmp_path):
    """--against dad: the control is tested against DAD, with the p-values of DAD against the
    control (the bootstrap reads the absolute difference) and the difference's sign flipped."""
    grid_path, workdir, _ = grid_run
    grid_cli("table", str(grid_path), "--workdir", str(workdir), "--against", "dad",
             "--bootstrap-samples", "50")  # fmt: skip
    against = json.loads((workdir / "table.against_dad.json").read_text())
    assert against["control"] == "dad"
    assert "difference to the DAD (p) per seed" in (workdir / "table.against_dad.md").read_text()
    usual = tables.build(load_grid(grid_path, workdir), n_samples=50)
    rows = {row["key"]: row for row in against["rows"]}
    dad = next(row for row in usual["rows"] if row["key"] == "dad")
    for seed, pair in dad["cells"]["test/1"]["test"]["pairs"].items():
        head_to_head = rows["xent_more"]["cells"]["test/1"]["test"]["pairs"][str(seed)]
        assert head_to_head["p_value"] == pair["p_value"]
        assert head_to_head["difference"] == pytest.approx(-pair["difference"])
    assert rows["dad"]["cells"]["test/1"].get("test") is None
    with pytest.raises(GridError, match="no method 'mixer' to test against"):
        tables.build(load_grid(grid_path, workdir), n_samples=5, against="mixer")


@pytest.mark.slow
def test_a_fresh_machine_takes_the_grid_up_from_its_record(grid_run, tmp_path):
    """The session running dad:seed1 ended before it finished, and its machine with it: in a
    new work dir the start is trained again and reproduces the record's exactly, every other
    cell is taken from the record, dad:seed1 is run and recorded, and the table is the
    uninterrupted run's (but for the decoding times), in BLEU and in chrF."""
    grid_path, workdir, sittings = grid_run
    rec, fresh = tmp_path / "rec", tmp_path / "work"
    shutil.copytree(sittings["record"], rec)
    shutil.rmtree(rec / "runs" / "dad" / "seed1")
    out = grid_cli("run", str(grid_path), "--workdir", str(fresh), "--record", str(rec),
                   "--cpu").stdout  # fmt: skip
    assert "start: reproduces the record's test scores exactly" in out
    trainings = [line for line in out.splitlines() if line.startswith("+ ") and "-train " in line]
    assert len(trainings) == 2 and str(fresh / "runs" / "dad" / "seed1") in trainings[1]
    assert "tune:dad:isig: trained already, skipped" in out
    assert "dad:seed1: recorded in" in out

    def table(folder: Path, metric: str | None = None) -> dict:
        built = tables.build(load_grid(grid_path, folder), 50, metric)
        rows = [{**row, "ms_per_sentence": None} for row in built["rows"]]
        return {**built, "workdir": None, "rows": rows}

    for metric in ("bleu", "chrf"):
        assert table(fresh, metric) == table(workdir, metric)
        assert table(rec, metric) == table(workdir, metric)
    dad = next(row for row in table(rec, "chrf")["rows"] if row["key"] == "dad")
    assert set(dad["cells"]["test/1"]["test"]["pairs"]) == {1, 2}


# ---------------------------------------------------------------------- grid files


@pytest.mark.parametrize("name", ["multi30k_paper", "multi30k_lstm", "gigaword_paper"])
def test_the_grid_files_load(name, tmp_path):
    grid = load_grid(REPO / "scripts" / "grids" / f"{name}.json", tmp_path)
    assert [m.key for m in grid.methods] == ["xent_more", "dad", "e2e", "mixer"]
    assert grid.control.key == "xent_more" and len(grid.seeds) >= 3


def test_the_subword_grid_scores_the_decoded_text_and_has_nothing_to_tune(tmp_path):
    grid = load_grid(REPO / "scripts" / "grids" / "multi30k_spm.json", tmp_path)
    cells = all_cells(grid)
    assert [c.kind for c in cells].count("tune") == 0 and len(cells) == 1 + 3 * 3
    commands = evaluate_commands(grid, cells[-1], cpu=True)
    assert [c[c.index("--post-process") + 1] for c in commands] == ["sentencepiece"] * 2
    assert all(c[-1] == "--cpu" for c in commands)
    text = {m.key: "--reward-post-process" in m.candidates["lr1e-4"] for m in grid.methods}
    assert text == {"xent_more": False, "mixer_id": False, "mixer_text": True}


def test_grid_errors(tmp_path, synthetic_bin):
    spec = tiny_grid(synthetic_bin.parent)
    spec["methods"]["dad"]["candidates"]["isig"] += ["--max-update", "9"]
    path = tmp_path / "g.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(GridError, match="sets --max-update"):
        load_grid(path, tmp_path)
    spec = tiny_grid(synthetic_bin.parent)
    spec["methods"]["dad"]["control"] = True
    path.write_text(json.dumps(spec))
    with pytest.raises(GridError, match="exactly one method must be the control"):
        load_grid(path, tmp_path)
    spec = tiny_grid(synthetic_bin.parent)
    spec["evaluate"]["table_metric"] = "rouge2"
    path.write_text(json.dumps(spec))
    with pytest.raises(GridError, match="table_metric must be one of bleu, chrf"):
        load_grid(path, tmp_path)


def test_a_table_in_a_metric_the_runs_were_not_scored_in_is_refused(tmp_path):
    """A ROUGE grid's rows have no chrF: asking for its chrF table names the metrics it has
    instead of printing an empty table."""
    grid = load_grid(REPO / "scripts" / "grids" / "gigaword_paper.json", tmp_path)
    with pytest.raises(GridError, match="scored in rouge1, rouge2, rougeL"):
        tables.build(grid, n_samples=5, metric="chrf")


def test_only_selects_whole_names_and_leading_parts(tmp_path, synthetic_bin):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(tiny_grid(synthetic_bin.parent)))
    cells = all_cells(load_grid(path, tmp_path))
    assert [c.name for c in select_cells(cells, ["dad:seed2"])] == ["dad:seed2"]
    assert [c.name for c in select_cells(cells, ["tune"])] == ["tune:dad:linear", "tune:dad:isig"]
    assert [c.name for c in select_cells(cells, ["dad"])] == ["dad:seed1", "dad:seed2"]
    with pytest.raises(GridError, match="no such cell"):
        select_cells(cells, ["dad:seed9"])


# ---------------------------------------------------------------------- significance


def test_paired_bootstrap_of_means_by_hand():
    """Resamples: all sentence 0, all 1, all 2, then one of each. Baseline means 0, 1, .5, .5;
    system means 1, 1, .5, 5/6; |differences| 1, 0, 0, 1/3, centred by their mean 1/3: 2/3,
    -1/3, -1/3, 0; the observed difference is 1/3, exceeded once: p = (1 + 1) / (4 + 1)."""
    indices = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [0, 1, 2]])
    result = significance.paired_bootstrap(
        np.array([0.0, 1.0, 0.5]), np.array([1.0, 1.0, 0.5]), significance.mean_score, indices
    )
    assert result.baseline == pytest.approx(0.5) and result.system == pytest.approx(5 / 6)
    assert result.p_value == pytest.approx(0.4) and not result.significant


def sentences(seed: int, count: int = 40) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(12)]
    refs = [" ".join(rng.choice(words, 8)) for _ in range(count)]

    def noisy(p):
        return [" ".join(w if rng.random() > p else "x" for w in r.split()) for r in refs]

    return refs, noisy(0.5), noisy(0.3)


def test_bleu_bootstrap_is_sacrebleus_and_the_mean_bootstrap_resamples_as_it_does():
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    refs, base, system = sentences(1)
    ours = significance.bleu_paired_bootstrap(base, system, refs, n_samples=200)
    _, scores = PairedTest(
        [("b", base), ("s", system)], {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=200
    )()
    assert ours.p_value == scores["BLEU"][1].p_value and ours.system == scores["BLEU"][1].score
    assert ours.baseline == scores["BLEU"][0].score and ours.significant

    metric = BLEU()
    stats = [
        np.array(metric._extract_corpus_statistics(hyps, [refs]), "float32")
        for hyps in (base, system)
    ]

    def bleu(rows):
        return metric._compute_score_from_stats(rows.sum(0)).score

    indices = significance.bootstrap_indices(len(refs), 200, 12345)
    generic = significance.paired_bootstrap(stats[0], stats[1], bleu, indices)
    assert generic.p_value == ours.p_value


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_bootstrap_is_sacrebleus(word_order):
    from sacrebleu.metrics import CHRF
    from sacrebleu.significance import PairedTest

    refs, base, system = sentences(1)
    metric = CHRF(word_order=word_order)
    _, scores = PairedTest(
        [("b", base), ("s", system)], {"chrF": metric}, [refs], test_type="bs", n_samples=200
    )()
    theirs_base, theirs = scores[f"chrF2{'+' * word_order}"]
    chrf = significance.chrf_metric(word_order)
    ours = significance.text_paired_bootstrap(base, system, refs, chrf, 200)
    assert ours.p_value == theirs.p_value and ours.significant
    assert ours.baseline == theirs_base.score and ours.system == theirs.score
    stats = [significance.sacrebleu_statistics(hyps, refs, chrf) for hyps in (base, system)]
    assert stats[0].dtype == np.int64 and stats[0].shape == (len(refs), 3 * (6 + word_order))
    assert significance.stats_paired_bootstrap(*stats, chrf, 200) == ours
    assert significance.chrf_word_order(str(metric.get_signature())) == word_order
    with pytest.raises(ValueError, match="no word order"):
        significance.chrf_word_order("nrefs:1|case:mixed|tok:13a|version:2.6.0")


def test_rouge_bootstrap_resamples_per_sentence_rouge():
    sys.path.insert(0, str(REPO / "scripts"))
    import evaluate

    refs, base, system = sentences(2)
    per_sentence = significance.rouge_sentence_scores(system, refs, "rouge2")
    assert np.mean(per_sentence) == pytest.approx(evaluate.rouge_scores(system, refs)["rouge2"])
    result = significance.rouge_paired_bootstrap(base, system, refs, "rouge2", n_samples=200)
    assert result.system == pytest.approx(np.mean(per_sentence)) and result.significant
    same = significance.rouge_paired_bootstrap(system, system, refs, "rouge2", n_samples=200)
    assert same.difference == 0 and not same.significant


def test_significance_mark_needs_every_seed(tmp_path):
    refs, worse, better = sentences(3, count=60)
    files = {}
    for name, lines in (("ref", refs), ("worse", worse), ("better", better)):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("".join(line + "\n" for line in lines))

    def runs(*hyps):
        return {
            seed: {"test": {1: {"bleu": 1.0, "hypotheses": str(files[h]),
                                "references": str(files["ref"])}}}
            for seed, h in enumerate(hyps, 1)
        }  # fmt: skip

    control = tables.System("xent_more", "control", runs("worse", "worse"))
    agree = tables.tests(
        tables.System("m", "M", runs("better", "better")), control, "test", 1, "bleu", 100
    )
    split = tables.tests(
        tables.System("m", "M", runs("better", "worse")), control, "test", 1, "bleu", 100
    )
    assert agree["significant"] and not split["significant"]
    assert split["pairs"][2]["difference"] == 0 and not split["pairs"][2]["significant"]
    entry = {"mean": 30.0, "std": 1.0, "n": 2, "test": agree}
    assert report.cell_text(entry, 2) == "30.00 ± 1.00*"
    assert report.cell_text({**entry, "test": split, "n": 1, "std": None}, 2) == (
        "30.00 (1 of 2 seeds)"
    )
